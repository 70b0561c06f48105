-- One row per call, for the HTTP endpoint (api/): the call as Bolna's API returns it, rendered
-- once as JSON (`execution`), next to the columns the endpoint filters, orders and pages on.
-- Rendering 50 objects at every request costs PostgreSQL about three times what reading them
-- does (docs/http-api.md, "Performance"), so they are rendered here, when a call changes.
--
-- Incremental as bolna__calls: each run merges the calls whose load marker differs from the one
-- built. call_number, agent_call_number and batch_call_number count the calls oldest first
-- (macro number_calls, in the transaction of the merge), so a total and page 2,000 of an agent
-- are index lookups instead of counts; then `analyze` gives the planner their statistics.
{{
    config(
        materialized='incremental',
        unique_key='call_id',
        incremental_strategy=var('bolna_incremental_strategy'),
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['call_id'], 'unique': True},
            {'columns': ['created_at', 'call_id']},
            {'columns': ['agent_id', 'created_at', 'call_id']},
            {'columns': ['batch_id', 'created_at', 'call_id']},
            {'columns': ['sub_account_id', 'created_at', 'call_id']},
            {'columns': ['status', 'created_at', 'call_id']},
            {'columns': ['agent_id', 'status', 'created_at', 'call_id']},
            {'columns': ['call_number']},
            {'columns': ['agent_id', 'agent_call_number']},
            {'columns': ['batch_id', 'batch_call_number']},
        ],
        post_hook=[
            "{{ number_calls('call_number', none) }}",
            "{{ number_calls('agent_call_number', 'agent_id') }}",
            "{{ number_calls('batch_call_number', 'batch_id') }}",
            "analyze {{ this }}",
        ],
    )
}}

with execution as (

    select * from {{ ref('stg_bolna__executions') }}

),

final as (

    select
        call_id,
        agent_id,
        batch_id,
        sub_account_id,
        status,
        call_type,
        created_at,
        loaded_at,
        {% if is_incremental() %}
        -- Set by number_calls() once the rows are merged.
        null::bigint as call_number,
        null::bigint as agent_call_number,
        null::bigint as batch_call_number,
        {% else %}
        -- A first build numbers every call here, so the post-hook finds nothing to rewrite.
        row_number() over (order by created_at, call_id) as call_number,
        row_number() over (partition by agent_id order by created_at, call_id) as agent_call_number,
        case when batch_id is not null then row_number() over (
            partition by batch_id order by created_at, call_id
        ) end as batch_call_number,
        {% endif %}
        execution

    from execution

    {% if is_incremental() %}
    where not exists (
        select 1
        from {{ this }} as built
        where built.call_id = execution.call_id
            and built.loaded_at = execution.loaded_at
    )
    {% endif %}

)

select * from final
