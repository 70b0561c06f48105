-- One row per batch campaign.
with batch as (

    select * from {{ source('bolna', 'batches') }}

),

final as (

    select
        batch_id,
        agent_id,
        status,
        file_name,
        from_phone_number,
        valid_contacts,
        total_contacts,
        execution_status,
        created_at,
        updated_at,
        scheduled_at,
        _sdc_deleted_at is not null as is_deleted,
        _sdc_batched_at as loaded_at

    from batch

)

select * from final
