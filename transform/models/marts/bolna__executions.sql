-- One row per call of bolna__calls: the call as Bolna's API returns it (`execution`), next to
-- the columns of bolna__calls that the HTTP endpoint (api/) filters, orders and pages on.
-- A view: the object is read from the loaded table when it is asked for, not copied. Look calls
-- up by call_id (the endpoint pages on bolna__calls, then reads these objects of its page).
{{ config(materialized='view') }}

with call as (

    select * from {{ ref('bolna__calls') }}

),

execution as (

    select * from {{ ref('stg_bolna__executions') }}

),

final as (

    select
        call.call_id,
        call.agent_id,
        call.batch_id,
        call.status,
        call.call_type,
        call.created_at,
        call.call_number,
        call.agent_call_number,
        call.batch_call_number,
        execution.execution

    from call
    -- Lateral with a limit, so PostgreSQL looks each call up by the loaded table's primary key
    -- instead of joining the whole table (the staging view is not merged into this query).
    inner join lateral (
        select execution.execution
        from execution
        where execution.call_id = call.call_id
        limit 1
    ) as execution on true

)

select * from final
