-- One row per agent.
with agent as (

    select * from {{ source('bolna', 'agents') }}

),

final as (

    select
        id as agent_id,
        sub_account_id,
        agent_name,
        agent_type,
        agent_status,
        created_at,
        updated_at,
        -- Soft-deleted by target-postgres when a full sync no longer lists the agent.
        _sdc_deleted_at is not null as is_deleted,
        _sdc_batched_at as loaded_at

    from agent

)

select * from final
