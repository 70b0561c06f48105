-- What did calls cost each day (total_cost in cents, summed by the UTC date of creation)?
with agent_daily as (

    select * from {{ ref('bolna__agent_daily') }}

)

select
    created_date as day,
    sum(calls) as calls,
    sum(total_cost) as total_cost_cents
from agent_daily
group by created_date
order by created_date
