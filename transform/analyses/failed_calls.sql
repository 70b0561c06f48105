-- Which calls failed (is_failed: status `failed` or `error`), newest first, and what did Bolna say went wrong?
with call as (

    select * from {{ ref('bolna__calls') }}

)

select
    call_id,
    agent_id,
    agent_name,
    created_at,
    status,
    error_message
from call
where is_failed
order by created_at desc, call_id desc
