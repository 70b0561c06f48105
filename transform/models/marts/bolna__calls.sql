-- One row per call, with its agent's name and the flags the daily figures count.
--
-- Incremental: each run merges, on call_id, only the calls that differ from what the model
-- holds: new calls, calls target-postgres loaded again (a pending call that completed, data
-- extracted later) and calls whose agent or sub-account was renamed. Rows are compared by their load marker,
-- not by a clock, so loads written by machines whose clocks disagree are never skipped.
{{
    config(
        materialized='incremental',
        unique_key='call_id',
        incremental_strategy=var('bolna_incremental_strategy'),
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['call_id'], 'unique': True},
            {'columns': ['agent_id', 'created_date']},
        ],
    )
}}

with execution as (

    select * from {{ ref('stg_bolna__executions') }}

),

agent as (

    select * from {{ ref('stg_bolna__agents') }}

),

sub_account as (

    select * from {{ ref('stg_bolna__sub_accounts') }}

),

call as (

    select
        execution.call_id,
        execution.agent_id,
        agent.agent_name,
        execution.sub_account_id,
        sub_account.sub_account_name,
        execution.batch_id,
        execution.status,
        execution.is_final,
        execution.status = 'completed' as is_completed,
        execution.status in (
            {%- for status in var('bolna_failed_statuses') %}
            '{{ status }}'{{ "," if not loop.last }}
            {%- endfor %}
        ) as is_failed,
        execution.answered_by_voice_mail as is_voicemail,
        execution.error_message,
        execution.duration_s,
        execution.conversation_duration_s,
        execution.call_type,
        execution.provider,
        execution.to_number,
        execution.from_number,
        execution.hangup_by,
        execution.hangup_reason,
        execution.was_transferred,
        execution.total_cost,
        execution.llm_cost,
        execution.network_cost,
        execution.platform_cost,
        execution.synthesizer_cost,
        execution.transcriber_cost,
        execution.extracted_data,
        execution.created_at,
        execution.created_at::date as created_date,
        execution.updated_at,
        execution.loaded_at

    from execution
    left join agent
        on execution.agent_id = agent.agent_id
    left join sub_account
        on execution.sub_account_id = sub_account.sub_account_id

),

final as (

    select * from call

    {% if is_incremental() %}
    where not exists (
        select 1
        from {{ this }} as built
        where built.call_id = call.call_id
            and built.loaded_at = call.loaded_at
            and built.agent_name is not distinct from call.agent_name
            and built.sub_account_name is not distinct from call.sub_account_name
    )
    {% endif %}

)

select * from final
