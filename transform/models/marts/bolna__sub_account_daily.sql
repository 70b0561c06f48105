-- One row per sub-account and UTC day: the usage Bolna sums for it next to the calls loaded
-- for it (bolna__calls), for every day on which either knows of a call. Rebuilt on every run.
with sub_account_usage as (

    select * from {{ ref('stg_bolna__sub_account_usage') }}

),

sub_account as (

    select * from {{ ref('stg_bolna__sub_accounts') }}

),

call as (

    select * from {{ ref('bolna__calls') }}

),

loaded as (

    select
        sub_account_id,
        created_date,
        count(*) as calls,
        sum(total_cost) as total_cost

    from call
    where sub_account_id is not null
    group by sub_account_id, created_date

),

daily as (

    select
        coalesce(usage.sub_account_id, loaded.sub_account_id) as sub_account_id,
        coalesce(usage.usage_date, loaded.created_date) as usage_date,
        usage.calls as usage_calls,
        loaded.calls as loaded_calls,
        usage.duration_s as usage_duration_s,
        usage.total_cost as usage_total_cost,
        usage.platform_cost as usage_platform_cost,
        usage.telephony_cost as usage_telephony_cost,
        loaded.total_cost as loaded_total_cost

    from sub_account_usage as usage
    full outer join loaded
        on usage.sub_account_id = loaded.sub_account_id
        and usage.usage_date = loaded.created_date

),

final as (

    select
        daily.sub_account_id || '/' || daily.usage_date as sub_account_day,
        daily.sub_account_id,
        sub_account.sub_account_name,
        daily.usage_date,
        daily.usage_calls,
        daily.loaded_calls,
        daily.usage_duration_s,
        daily.usage_total_cost,
        daily.usage_platform_cost,
        daily.usage_telephony_cost,
        daily.loaded_total_cost

    from daily
    left join sub_account
        on daily.sub_account_id = sub_account.sub_account_id

)

select * from final
