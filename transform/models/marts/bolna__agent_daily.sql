-- One row per agent and UTC day of call creation: how many calls, how they ended, how long
-- completed calls lasted and what all calls cost. Rebuilt from bolna__calls on every run.
with call as (

    select * from {{ ref('bolna__calls') }}

),

daily as (

    select
        agent_id,
        max(agent_name) as agent_name,
        max(sub_account_id) as sub_account_id,
        max(sub_account_name) as sub_account_name,
        created_date,
        count(*) as calls,
        count(*) filter (where is_completed) as completed_calls,
        count(*) filter (where is_failed) as failed_calls,
        count(*) filter (where is_voicemail) as voicemail_calls,
        count(*) filter (where not is_final) as pending_calls,
        avg(duration_s) filter (where is_completed) as avg_duration_s,
        percentile_disc(0.95) within group (order by duration_s)
            filter (where is_completed) as p95_duration_s,
        sum(total_cost) as total_cost

    from call
    group by agent_id, created_date

),

final as (

    select
        agent_id,
        agent_name,
        sub_account_id,
        sub_account_name,
        created_date,
        calls,
        completed_calls,
        completed_calls::numeric / calls as completion_rate,
        failed_calls,
        voicemail_calls,
        pending_calls,
        avg_duration_s,
        p95_duration_s,
        total_cost

    from daily

)

select * from final
