-- What are one agent's latest calls, newest first (the seed's /api/executions?agent_id=…&page_size=…)?
-- :'agent_id' and :'page_size' are psql variables, left as they are by dbt: run the compiled
-- file with psql -v agent_id=<agent id> -v page_size=20, or use your driver's placeholders.
with call as (

    select * from {{ ref('bolna__calls') }}

)

select *
from call
where agent_id = :'agent_id'
order by created_at desc, call_id desc
limit :'page_size'
