-- What percentage of all calls completed (status `completed`; pending calls count as not completed)?
with agent_daily as (

    select * from {{ ref('bolna__agent_daily') }}

)

select
    sum(completed_calls) as completed_calls,
    sum(calls) as calls,
    round(100.0 * sum(completed_calls) / nullif(sum(calls), 0), 1) as completion_rate_percent
from agent_daily
