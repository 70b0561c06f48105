-- bolna__agent_daily must count every call of bolna__calls once: per agent and day, and in
-- all. Returns the agent-days (or the total) that do not add up; none is a pass.
with call as (

    select * from {{ ref('bolna__calls') }}

),

agent_daily as (

    select * from {{ ref('bolna__agent_daily') }}

),

calls_per_agent_day as (

    select agent_id, created_date, count(*) as calls, sum(total_cost) as total_cost
    from call
    group by agent_id, created_date

),

mismatch as (

    select
        coalesce(counted.agent_id, daily.agent_id) as agent_id,
        coalesce(counted.created_date, daily.created_date) as created_date,
        counted.calls as calls_in_bolna__calls,
        daily.calls as calls_in_bolna__agent_daily
    from calls_per_agent_day as counted
    full outer join agent_daily as daily
        on counted.agent_id = daily.agent_id
        and counted.created_date = daily.created_date
    where counted.calls is distinct from daily.calls
        or counted.total_cost is distinct from daily.total_cost

),

total as (

    select
        null as agent_id,
        null::date as created_date,
        (select count(*) from call) as calls_in_bolna__calls,
        (select sum(calls) from agent_daily) as calls_in_bolna__agent_daily

),

final as (

    select * from mismatch
    union all
    select * from total
    where calls_in_bolna__calls is distinct from calls_in_bolna__agent_daily

)

select * from final
