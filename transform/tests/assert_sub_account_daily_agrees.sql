-- Bolna's usage and the calls loaded must count the same calls for a sub-account and day,
-- wherever both know of that day. Returns the days that disagree; none is a pass.
with sub_account_daily as (

    select * from {{ ref('bolna__sub_account_daily') }}

),

final as (

    select *
    from sub_account_daily
    where usage_calls is not null
        and loaded_calls is not null
        and usage_calls <> loaded_calls

)

select * from final
