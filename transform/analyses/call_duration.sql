-- How long do completed calls last (duration_s: average and 95th percentile, in seconds)?
-- p95 is percentile_disc, as in bolna__agent_daily: the duration of a real call.
with call as (

    select * from {{ ref('bolna__calls') }}

)

select
    count(duration_s) as completed_calls,
    round(avg(duration_s), 1) as average_seconds,
    percentile_disc(0.95) within group (order by duration_s) as p95_seconds
from call
where is_completed
