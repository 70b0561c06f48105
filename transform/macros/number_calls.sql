{# Number the calls of bolna__executions oldest first, in (created_at, call_id) order:
   call_number over all calls, agent_call_number within the agent, batch_call_number within the
   batch (null outside one); 1 is the oldest, so a new call does not move the others. Its
   post-hook, in the transaction of its merge: readers never see merged calls unnumbered. Only
   rows whose numbers change are written: new calls, and the calls after one listed late. #}
{% macro number_calls() -%}
    update {{ this }} as call
    set
        call_number = numbered.call_number,
        agent_call_number = numbered.agent_call_number,
        batch_call_number = numbered.batch_call_number
    from (
        select
            call_id,
            row_number() over (order by created_at, call_id) as call_number,
            row_number() over (
                partition by agent_id order by created_at, call_id
            ) as agent_call_number,
            case when batch_id is not null then row_number() over (
                partition by batch_id order by created_at, call_id
            ) end as batch_call_number
        from {{ this }}
    ) as numbered
    where numbered.call_id = call.call_id
        and (call.call_number, call.agent_call_number, call.batch_call_number)
        is distinct from
        (numbered.call_number, numbered.agent_call_number, numbered.batch_call_number)
{%- endmacro %}
