-- One row per sub-account and UTC day with usage, as Bolna sums it (costs in cents).
with sub_account_usage as (

    select * from {{ source('bolna', 'sub_account_usage') }}

),

final as (

    select
        -- The key: one row per sub-account and day.
        sub_account_id || '/' || "date" as sub_account_day,
        sub_account_id,
        "date"::date as usage_date,
        total_records as calls,
        total_duration as duration_s,
        total_cost,
        total_platform_cost as platform_cost,
        total_telephony_cost as telephony_cost,
        status_map,
        _sdc_batched_at as loaded_at

    from sub_account_usage

)

select * from final
