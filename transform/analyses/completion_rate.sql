-- What percentage of all calls completed (status `completed`; pending calls count as not completed)?
with agent_daily as (

    select * from {{ ref('bolna__agent_daily') }}

)

select
    sum(completed_calls) as completed_calls,
    sum(calls) as calls,
    {{ percent_of('sum(completed_calls)', 'sum(calls)') }} as completion_rate_percent
from agent_daily
