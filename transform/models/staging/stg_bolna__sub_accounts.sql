-- One row per sub-account of the agency (empty unless the tap runs with include_sub_accounts).
with sub_account as (

    select * from {{ source('bolna', 'sub_accounts') }}

),

final as (

    select
        id as sub_account_id,
        name as sub_account_name,
        organization_id,
        max_concurrency,
        _sdc_batched_at as loaded_at

    from sub_account

)

select * from final
