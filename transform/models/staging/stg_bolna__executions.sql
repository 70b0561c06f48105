-- One row per call: the executions table typed and renamed, nested telephony and cost data as
-- columns. Transcripts stay in the loaded table (and are absent from PII-safe loads).
--
-- `execution` is the call as Bolna's API returns it, for the HTTP endpoint (api/): every loaded
-- field in the loaded order, except target-postgres's _sdc_* columns, so a PII-safe load (no
-- transcript column) gives objects without a transcript. A view: built only for the rows read.
{%- set api_columns = [] %}
{%- if execute %}
{%- for column in adapter.get_columns_in_relation(source('bolna', 'executions')) %}
{%- if not column.name.startswith('_sdc_') %}{% do api_columns.append(column) %}{% endif %}
{%- endfor %}
{%- endif %}
with execution as (

    select * from {{ source('bolna', 'executions') }}

),

final as (

    select
        id as call_id,
        agent_id,
        sub_account_id,
        batch_id,
        status,
        status in (
            {%- for status in var('bolna_final_statuses') %}
            '{{ status }}'{{ "," if not loop.last }}
            {%- endfor %}
        ) as is_final,
        error_message,
        coalesce(answered_by_voice_mail, false) as answered_by_voice_mail,

        -- Seconds. The tap loads the API's string or integer durations as numbers.
        (telephony_data ->> 'duration')::numeric as duration_s,
        conversation_duration as conversation_duration_s,
        (telephony_data ->> 'ring_duration')::numeric as ring_duration_s,
        (telephony_data ->> 'post_dial_delay')::numeric as post_dial_delay_s,

        telephony_data ->> 'call_type' as call_type,
        telephony_data ->> 'provider' as provider,
        telephony_data ->> 'to_number' as to_number,
        telephony_data ->> 'from_number' as from_number,
        telephony_data ->> 'to_number_carrier' as to_number_carrier,
        telephony_data ->> 'hangup_by' as hangup_by,
        telephony_data ->> 'hangup_reason' as hangup_reason,
        (telephony_data ->> 'hangup_provider_code')::integer as hangup_provider_code,
        telephony_data ->> 'provider_call_id' as provider_call_id,
        telephony_data ->> 'recording_url' as recording_url,
        transfer_call_data is not null as was_transferred,

        -- Cents.
        total_cost,
        (cost_breakdown ->> 'llm')::numeric as llm_cost,
        (cost_breakdown ->> 'network')::numeric as network_cost,
        (cost_breakdown ->> 'platform')::numeric as platform_cost,
        (cost_breakdown ->> 'synthesizer')::numeric as synthesizer_cost,
        (cost_breakdown ->> 'transcriber')::numeric as transcriber_cost,

        (batch_run_details ->> 'retried')::integer as batch_retries,
        extracted_data,

        -- timestamp columns holding UTC (target-postgres drops the offset after converting).
        created_at,
        updated_at,
        _sdc_batched_at as loaded_at,

        -- The call as the API returned it; timestamps as Bolna writes them (UTC, microseconds, Z).
        json_build_object(
            {%- for column in api_columns %}
            '{{ column.name }}',
            {%- if column.data_type.startswith('timestamp') %}
            to_char({{ adapter.quote(column.name) }}, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
            {%- else %}
            {{ adapter.quote(column.name) }}
            {%- endif %}{{ "," if not loop.last }}
            {%- endfor %}
        ) as execution

    from execution

)

select * from final
