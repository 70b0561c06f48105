-- The HTTP endpoint turns a page number into a range of numbers of bolna__executions: in
-- all calls, in each agent's and in each batch's, they must be 1..n in (created_at, call_id) order.
-- Returns the calls whose number is not their place; none is a pass.
with call as (

    select * from {{ ref('bolna__executions') }}

),

placed as (

    select
        call_id,
        call_number,
        agent_call_number,
        batch_call_number,
        row_number() over (order by created_at, call_id) as call_place,
        row_number() over (partition by agent_id order by created_at, call_id) as agent_place,
        row_number() over (partition by batch_id order by created_at, call_id) as batch_place,
        batch_id
    from call

),

final as (

    select *
    from placed
    where call_number is distinct from call_place
        or agent_call_number is distinct from agent_place
        or (batch_id is null and batch_call_number is not null)
        or (batch_id is not null and batch_call_number is distinct from batch_place)

)

select * from final
