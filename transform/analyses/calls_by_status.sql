-- How many calls are in each status, and what percentage of all calls is that?
with call as (

    select * from {{ ref('bolna__calls') }}

)

select
    status,
    count(*) as calls,
    {{ percent_of('count(*)', 'sum(count(*)) over ()') }} as percent_of_calls
from call
group by status
order by calls desc, status
