-- How many calls are in each status, and what percentage of all calls is that?
with call as (

    select * from {{ ref('bolna__calls') }}

)

select
    status,
    count(*) as calls,
    round(100.0 * count(*) / sum(count(*)) over (), 1) as percent_of_calls
from call
group by status
order by calls desc, status
