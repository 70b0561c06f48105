{# Number the calls of bolna__executions oldest first, in (created_at, call_id) order, in
   `column`: within each `scope` (agent_id: agent_call_number, batch_id: batch_call_number, null
   outside a batch), or over all calls (none: call_number). 1 is the oldest, so a new call does
   not move the others. Post-hooks of the model, in the transaction of its merge: readers never
   see calls unnumbered.

   A merge leaves the new and the changed calls unnumbered. Calls before the oldest of them keep
   their numbers; from it on, each scope (all calls, an agent, a batch) is numbered again,
   continuing from the call before, and only rows whose number changes are written: the new
   calls, and the calls after one that was listed late. #}
{% macro number_calls(column, scope) -%}
    {%- set same_scope = 'numbered.' ~ scope ~ ' = first_gap.' ~ scope if scope else 'true' %}
    with first_gap as (

        -- The oldest unnumbered call of each scope.
        select {{ 'distinct on (' ~ scope ~ ') ' ~ scope ~ ',' if scope }}
            created_at,
            call_id
        from {{ this }}
        where {{ column }} is null
            {{- ' and ' ~ scope ~ ' is not null' if scope }}
        order by {{ scope ~ ',' if scope }} created_at, call_id
        {{- ' limit 1' if not scope }}

    ),

    before_gap as (

        -- The number of the call just before it (0 when it is the scope's oldest).
        select
            first_gap.*,
            coalesce((
                select numbered.{{ column }}
                from {{ this }} as numbered
                where {{ same_scope }}
                    and (numbered.created_at, numbered.call_id)
                    < (first_gap.created_at, first_gap.call_id)
                order by numbered.created_at desc, numbered.call_id desc
                limit 1
            ), 0) as last_number
        from first_gap

    ),

    renumbered as (

        select
            numbered.call_id,
            before_gap.last_number + row_number() over (
                {{ 'partition by numbered.' ~ scope if scope }}
                order by numbered.created_at, numbered.call_id
            ) as new_number
        from {{ this }} as numbered
        inner join before_gap
            on {{ same_scope | replace('first_gap.', 'before_gap.') }}
            and (numbered.created_at, numbered.call_id)
            >= (before_gap.created_at, before_gap.call_id)

    )

    update {{ this }} as call
    set {{ column }} = renumbered.new_number
    from renumbered
    where renumbered.call_id = call.call_id
        and call.{{ column }} is distinct from renumbered.new_number
{%- endmacro %}
