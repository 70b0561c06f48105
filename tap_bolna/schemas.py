"""JSON schemas of the Bolna streams, built from reusable fragments.

Bolna nests the same objects in several responses: a call's ``telephony_data``,
``cost_breakdown`` and ``batch_run_details`` come back from the agent, batch and single-call
endpoints alike. Each such object is defined once below as a ``th.ObjectType`` fragment and
reused wherever it appears (as tap-github's ``schema_objects.py`` does), so a field added or
retyped in one place is right in every stream.

Source: Bolna's OpenAPI description (``shared/bolna-api/openapi.yml``); descriptions are the
spec's, reworded only where it has none or a wrong one. Conventions, chosen for warehouses:

- One JSON type per column, always nullable; only primary keys are ``required=True``.
- The spec's enums are listed in descriptions, not emitted as ``enum``: Bolna adds values over
  time and a strict enum would make a validating target reject the row.
- ``uuid``/``uri``/``email`` formats are plain strings; timestamps are ``date-time``.
- Numbers use ``th.DecimalType`` (emits ``"number"``; the SDK deprecates ``th.NumberType``).
- Fragments keep the SDK default ``additionalProperties: true``, so a key Bolna adds inside a
  nested object is kept; unknown top-level keys are dropped by the SDK.
"""

from __future__ import annotations

from singer_sdk import typing as th

from tap_bolna.statuses import (
    EXECUTION_STATUSES,
    FINAL_EXECUTION_STATUSES,
    PENDING_EXECUTION_STATUSES,
    RETRYABLE_EXECUTION_STATUSES,
)


def _one_of(*values: str) -> str:
    """Render a spec enum as description text: One of: `a`, `b`."""
    return "One of: " + ", ".join(f"`{value}`" for value in values) + "."


_PENDING_OR_FINAL = (
    "Still changing: "
    + ", ".join(f"`{status}`" for status in PENDING_EXECUTION_STATUSES)
    + ". Final: "
    + ", ".join(f"`{status}`" for status in FINAL_EXECUTION_STATUSES)
    + " (of these, "
    + ", ".join(f"`{status}`" for status in RETRYABLE_EXECUTION_STATUSES)
    + " until Bolna's auto-retry puts the call back to `scheduled`, under the same id)."
)

# ---------------------------------------------------------------------------------------------
# Fragments
# ---------------------------------------------------------------------------------------------

COST_BREAKDOWN = th.ObjectType(
    th.Property("llm", th.DecimalType, description="Total cost incurred by the LLM in cents"),
    th.Property("network", th.DecimalType, description="Total telephony cost in cents"),
    th.Property("platform", th.DecimalType, description="Bolna platform cost in cents"),
    th.Property(
        "synthesizer",
        th.DecimalType,
        description="Total cost incurred by the Synthesizer provider in cents",
    ),
    th.Property(
        "transcriber",
        th.DecimalType,
        description="Total cost incurred by the Transcriber provider in cents",
    ),
)

TELEPHONY_DATA = th.ObjectType(
    th.Property(
        "duration",
        th.IntegerType,
        description=(
            "Total duration of the call in seconds. The API sends an integer or a numeric "
            "string; the tap normalises it to an integer."
        ),
    ),
    th.Property(
        "to_number",
        th.StringType,
        description="Phone number of the recipient, with country code (E.164 format)",
    ),
    th.Property("from_number", th.StringType, description="Phone number of the sender"),
    th.Property(
        "recording_url",
        th.StringType,
        description="Recording URL for the telephone call",
    ),
    th.Property(
        "hosted_telephony",
        th.BooleanType,
        description="Whether the call was made using Bolna telephony",
    ),
    th.Property(
        "provider_call_id",
        th.StringType,
        description=(
            "Unique ID of the call from the Telephony Provider (like Twilio, Plivo, Vonage, etc.)"
        ),
    ),
    th.Property(
        "call_type",
        th.StringType,
        description="Whether the call was incoming or outgoing. " + _one_of("outbound", "inbound"),
    ),
    th.Property(
        "provider",
        th.StringType,
        description="The telephony call provider, e.g. `twilio`, `plivo`",
    ),
    th.Property(
        "hangup_by",
        th.StringType,
        description="Who hung up the call, e.g. `Caller`",
    ),
    th.Property(
        "hangup_reason",
        th.StringType,
        description="Reason for the hangup, e.g. `Normal Hangup`",
    ),
    th.Property(
        "hangup_provider_code",
        th.IntegerType,
        description="Provider specific code for hangup",
    ),
    th.Property(
        "ring_duration",
        th.IntegerType,
        description="Duration in seconds the phone rang before it was answered or the call ended",
    ),
    th.Property(
        "post_dial_delay",
        th.IntegerType,
        description="Delay in seconds between dialing and the first ring",
    ),
    th.Property(
        "to_number_carrier",
        th.StringType,
        description="The telecom carrier of the recipient's phone number",
    ),
)

TRANSFER_CALL_DATA = th.ObjectType(
    th.Property(
        "provider_call_id",
        th.StringType,
        description=(
            "Unique ID of the transferred call from the Telephony Provider "
            "(like Twilio, Plivo, Vonage, etc.)"
        ),
    ),
    th.Property(
        "status",
        th.StringType,
        description="Status of this transferred call. "
        + _one_of(
            "completed",
            "call-disconnected",
            "no-answer",
            "busy",
            "failed",
            "in-progress",
            "canceled",
            "balance-low",
            "queued",
            "ringing",
            "initiated",
        ),
    ),
    th.Property(
        "duration",
        th.IntegerType,
        description=(
            "Total duration of this transferred call in seconds. The API sends an integer or "
            "a numeric string; the tap normalises it to an integer."
        ),
    ),
    th.Property(
        "cost",
        th.DecimalType,
        description="Total cost incurred for this transferred call",
    ),
    th.Property(
        "to_number",
        th.StringType,
        description="Phone number the call was transferred to, with country code (E.164 format)",
    ),
    th.Property(
        "from_number",
        th.StringType,
        description="Phone number which is making the transfer call",
    ),
    th.Property(
        "recording_url",
        th.StringType,
        description="Recording URL for the transferred call",
    ),
    th.Property(
        "hangup_by",
        th.StringType,
        description="Who hung up the transferred call, e.g. `Caller`",
    ),
    th.Property(
        "hangup_reason",
        th.StringType,
        description="Reason for the transferred call's hangup, e.g. `Normal Hangup`",
    ),
    th.Property(
        "hangup_provider_code",
        th.IntegerType,
        description="Provider specific code for the transferred call's hangup",
    ),
)

BATCH_RUN_DETAILS = th.ObjectType(
    th.Property(
        "status",
        th.StringType,
        description="Status of the call initiated using batch. " + _PENDING_OR_FINAL,
    ),
    th.Property(
        "created_at",
        th.DateTimeType,
        description="Timestamp of the execution created by the batch",
    ),
    th.Property(
        "updated_at",
        th.DateTimeType,
        description="Last updated timestamp for the execution",
    ),
    th.Property(
        "retried",
        th.IntegerType,
        description="Number of retries made by the batch after initial attempt",
    ),
)

# The spec types this as a map of status -> count; known statuses are named so each is
# documented, and a status Bolna adds later still passes through as an integer.
BATCH_EXECUTION_STATUS_COUNTS = th.ObjectType(
    *(
        th.Property(
            status,
            th.IntegerType,
            description=f"Number of the batch's calls whose current status is `{status}`",
        )
        for status in EXECUTION_STATUSES
    ),
    additional_properties=th.IntegerType,
)

# `source_auth_token` (spec: "Bearer token for API authentication") is left out on purpose: it
# is the customer's CRM credential. additional_properties=False makes the SDK drop it (it logs
# the dropped key once) instead of copying a secret into the warehouse.
INGEST_SOURCE_CONFIG = th.ObjectType(
    th.Property(
        "source_type",
        th.StringType,
        description="Type of CRM ingestion source. " + _one_of("api", "csv", "google_sheet"),
    ),
    th.Property("source_url", th.StringType, description="API or Google Sheet URL"),
    th.Property("source_name", th.StringType, description="File or sheet name"),
    additional_properties=False,
)

ACCOUNT_CONCURRENCY = th.ObjectType(
    th.Property(
        "max",
        th.IntegerType,
        description="Maximum concurrency limit for the user account",
    ),
    th.Property(
        "current",
        th.IntegerType,
        description="Current concurrent calls from the user account",
    ),
)

# Whose data a record is, on every per-account stream; set by the tap.
SUB_ACCOUNT_ID = th.Property(
    "sub_account_id",
    th.StringType,
    description=(
        "The Bolna sub-account the record belongs to (read with that sub-account's key); "
        "null for the parent account's own data. Set by the tap."
    ),
)

# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------

# spec: AgentExecution (items of GET /v2/agent/{agent_id}/executions `data`).
EXECUTION_SCHEMA = th.PropertiesList(
    th.Property(
        "id",
        th.StringType,
        required=True,
        description="Unique identifier for the execution (one call)",
    ),
    SUB_ACCOUNT_ID,
    th.Property("agent_id", th.StringType, description="Unique `id` of the agent"),
    th.Property(
        "batch_id",
        th.StringType,
        description="Unique `id` of the batch that placed the call, if any",
    ),
    th.Property(
        "conversation_duration",
        th.DecimalType,
        description=(
            "Total time duration for the conversation (in seconds). Older API responses "
            "called this field `conversation_time`; the tap maps it to this name."
        ),
    ),
    th.Property(
        "total_cost",
        th.DecimalType,
        description="Total cost incurred by this execution in cents",
    ),
    th.Property(
        "status",
        th.StringType,
        description="Current status of the call. " + _PENDING_OR_FINAL,
    ),
    th.Property(
        "error_message",
        th.StringType,
        description="Associated error message (if any)",
    ),
    th.Property(
        "answered_by_voice_mail",
        th.BooleanType,
        description="If the call was answered by voice mail",
    ),
    th.Property("transcript", th.StringType, description="Transcription of the execution"),
    th.Property(
        "created_at",
        th.DateTimeType,
        description="Timestamp of agent execution; does not change",
    ),
    th.Property(
        "updated_at",
        th.DateTimeType,
        description="Last updated timestamp for the execution; moves when the status changes",
    ),
    th.Property(
        "cost_breakdown",
        COST_BREAKDOWN,
        description="Breakdown of the costs in cents",
    ),
    th.Property("telephony_data", TELEPHONY_DATA, description="Telephony call data"),
    th.Property(
        "transfer_call_data",
        TRANSFER_CALL_DATA,
        description="Data of the transferred call, when the call was transferred to a number",
    ),
    th.Property(
        "batch_run_details",
        BATCH_RUN_DETAILS,
        description="Batch information, for calls placed by a batch",
    ),
    th.Property(
        "extracted_data",
        th.ObjectType(additional_properties=True),
        description=(
            "Extracted data in JSON format which was mentioned in the agent "
            "`extraction_prompt`; keys are defined by the agent"
        ),
    ),
    th.Property(
        "context_details",
        th.ObjectType(additional_properties=True),
        description="Custom variable data injected in the call",
    ),
    th.Property(
        "scheduled_at",
        th.DateTimeType,
        description="When the call is (re)scheduled to be placed, e.g. by auto-retry",
    ),
    th.Property(
        "retry_count",
        th.IntegerType,
        description="How many times auto-retry has placed this call again (same id)",
    ),
    th.Property(
        "retry_history",
        th.ArrayType(th.ObjectType(additional_properties=True)),
        description="The earlier attempts of an auto-retried call, as Bolna records them",
    ),
)

# spec: AgentV2 (items of GET /v2/agent/all).
AGENT_SCHEMA = th.PropertiesList(
    th.Property(
        "id",
        th.StringType,
        required=True,
        description="Unique identifier for the agent",
    ),
    SUB_ACCOUNT_ID,
    th.Property("agent_name", th.StringType, description="Human-readable agent name"),
    th.Property("agent_type", th.StringType, description="Type of agent, e.g. `other`"),
    th.Property(
        "agent_status",
        th.StringType,
        description="Current status of the agent. " + _one_of("seeding", "processed"),
    ),
    th.Property(
        "created_at",
        th.DateTimeType,
        description="Timestamp of agent creation",
    ),
    th.Property(
        "updated_at",
        th.DateTimeType,
        description="Timestamp of last update for the agent",
    ),
    # A task's config (LLM, synthesizer, transcriber, toolchain, ...) is deep and
    # vendor-specific, so each task is kept whole as one JSON object.
    th.Property(
        "tasks",
        th.ArrayType(th.ObjectType(additional_properties=True)),
        description=(
            "An array of tasks that the agent can perform; each is the task's full "
            "configuration (`task_type`, `tools_config`, `toolchain`, `task_config`) as JSON"
        ),
    ),
    th.Property(
        "ingest_source_config",
        INGEST_SOURCE_CONFIG,
        description=(
            "Configuration for ingestion source used for inbound agents. Fields vary by "
            "`source_type`; the source's auth token is not synced."
        ),
    ),
    th.Property(
        "agent_prompts",
        th.ObjectType(additional_properties=True),
        description=(
            "Prompts to be provided to the agent. It can have multiple tasks of the form "
            "`task_<task_id>`, each holding a `system_prompt`"
        ),
    ),
)

# spec: Batch (items of GET /batches/{agent_id}/all).
BATCH_SCHEMA = th.PropertiesList(
    th.Property(
        "batch_id",
        th.StringType,
        required=True,
        description="The ID of the batch",
    ),
    SUB_ACCOUNT_ID,
    th.Property(
        "agent_id",
        th.StringType,
        description="Agent that owns the batch; set by the tap",
    ),
    th.Property(
        "humanized_created_at",
        th.StringType,
        description=(
            "Human-readable relative time since batch creation, e.g. `5 minutes ago` "
            "(relative to when the tap read it)"
        ),
    ),
    th.Property("created_at", th.DateTimeType, description="Created timestamp of batch"),
    th.Property("updated_at", th.DateTimeType, description="Last updated timestamp of batch"),
    th.Property(
        "status",
        th.StringType,
        description="Current status of the batch. "
        + _one_of("scheduled", "created", "queued", "executed"),
    ),
    th.Property(
        "scheduled_at",
        th.DateTimeType,
        description="The scheduled batch timestamp in UTC",
    ),
    th.Property(
        "from_phone_number",
        th.StringType,
        deprecated=True,
        description=(
            "Deprecated; use `from_phone_numbers` instead. Phone number of the sender, with "
            "country code (E.164 format)"
        ),
    ),
    th.Property(
        "from_phone_numbers",
        th.ArrayType(th.StringType),
        description=(
            "List of phone numbers from which the batch calls are made, each with country "
            "code (E.164 format)"
        ),
    ),
    th.Property("file_name", th.StringType, description="Name of the CSV batch file uploaded"),
    th.Property(
        "valid_contacts",
        th.IntegerType,
        description="Count of all valid contacts found in the CSV file",
    ),
    th.Property(
        "total_contacts",
        th.IntegerType,
        description="Count of all contacts mentioned in the CSV file",
    ),
    th.Property(
        "execution_status",
        BATCH_EXECUTION_STATUS_COUNTS,
        description="Count-wise breakdown of the batch's executions by their current status",
    ),
)

# spec: PhoneNumber (items of GET /phone-numbers/all).
PHONE_NUMBER_SCHEMA = th.PropertiesList(
    th.Property(
        "id",
        th.StringType,
        required=True,
        description="The ID of the phone number",
    ),
    th.Property(
        "humanized_created_at",
        th.StringType,
        description=(
            "Human-readable relative time since the phone number creation, e.g. "
            "`5 minutes ago` (relative to when the tap read it)"
        ),
    ),
    th.Property(
        "created_at",
        th.DateTimeType,
        description="Created timestamp of phone number",
    ),
    th.Property(
        "humanized_updated_at",
        th.StringType,
        description=(
            "Human-readable relative time since the phone number last update, e.g. "
            "`5 minutes ago` (relative to when the tap read it)"
        ),
    ),
    th.Property(
        "updated_at",
        th.DateTimeType,
        description="Last updated timestamp of phone number",
    ),
    # Not a timestamp: the API sends text such as "17th Dec, 2024".
    th.Property(
        "renewal_at",
        th.StringType,
        description="Human readable renewal date for the phone number, e.g. `17th Dec, 2024`",
    ),
    th.Property(
        "phone_number",
        th.StringType,
        description="Phone number in E.164 format",
    ),
    th.Property(
        "agent_id",
        th.StringType,
        description="Agent `id` associated with the phone number",
    ),
    th.Property(
        "price",
        th.StringType,
        description="Monthly rental price of the phone number, as text with currency, e.g. `$5.0`",
    ),
    th.Property(
        "telephony_provider",
        th.StringType,
        description="Telephony provider of the phone number. "
        + _one_of("twilio", "plivo", "vonage"),
    ),
    th.Property(
        "rented",
        th.BooleanType,
        description="If the phone number was bought from Bolna",
    ),
)

# spec: Knowledgebase (items of GET /knowledgebase/all).
KNOWLEDGEBASE_SCHEMA = th.PropertiesList(
    th.Property(
        "rag_id",
        th.StringType,
        required=True,
        description="The ID of the knowledgebase",
    ),
    th.Property("file_name", th.StringType, description="File name of the document"),
    th.Property(
        "humanized_created_at",
        th.StringType,
        description=(
            "Human-readable relative time since knowledgebase creation, e.g. `5 minutes ago` "
            "(relative to when the tap read it)"
        ),
    ),
    th.Property(
        "created_at",
        th.DateTimeType,
        description="Created timestamp of knowledgebase",
    ),
    th.Property(
        "updated_at",
        th.DateTimeType,
        description="Last updated timestamp of knowledgebase",
    ),
    th.Property(
        "vector_id",
        th.StringType,
        description="Unique vector ID of the knowledgebase",
    ),
    th.Property(
        "status",
        th.StringType,
        description="Current status of the knowledgebase. " + _one_of("processing", "processed"),
    ),
    th.Property(
        "chunk_size",
        th.IntegerType,
        description="Chunk size for embedding model",
    ),
    th.Property(
        "similarity_top_k",
        th.IntegerType,
        description="Number of top similar nodes to return",
    ),
    th.Property(
        "overlapping",
        th.IntegerType,
        description="Number of characters which overlap in between neighboring nodes",
    ),
    th.Property(
        "language_support",
        th.StringType,
        description=(
            "Language support mode of the knowledgebase: `multilingual` if enabled, null otherwise"
        ),
    ),
)

# spec: User (GET /user/me), one snapshot per sync.
ACCOUNT_SCHEMA = th.PropertiesList(
    th.Property(
        "id",
        th.StringType,
        required=True,
        description="Unique `id` for your user associated with Bolna",
    ),
    th.Property(
        "synced_at",
        th.DateTimeType,
        required=True,
        description=(
            "When the tap read this snapshot (UTC); one row per sync so balance history accumulates"
        ),
    ),
    th.Property("name", th.StringType, description="Name of the user"),
    th.Property("email", th.StringType, description="Email address of the user"),
    th.Property("wallet", th.DecimalType, description="Current wallet balance of the user"),
    th.Property(
        "concurrency",
        ACCOUNT_CONCURRENCY,
        description="Concurrent call limit and usage of the user account",
    ),
)

# spec: AgentExecutionLog (items of GET /executions/{execution_id}/log `data`).
EXECUTION_LOG_SCHEMA = th.PropertiesList(
    th.Property(
        "execution_id",
        th.StringType,
        required=True,
        description="Execution (call) this log line belongs to; set by the tap",
    ),
    th.Property(
        "position",
        th.IntegerType,
        required=True,
        description="0-based index of the line in the call's log",
    ),
    SUB_ACCOUNT_ID,
    th.Property(
        "created_at",
        th.DateTimeType,
        description="Created timestamp of the log",
    ),
    th.Property(
        "type",
        th.StringType,
        description="The log direction. " + _one_of("request", "response"),
    ),
    th.Property(
        "component",
        th.StringType,
        description="Component that wrote the log line, e.g. `synthesizer`, `llm`",
    ),
    th.Property("provider", th.StringType, description="The provider name, e.g. `openai`"),
    th.Property("data", th.StringType, description="The log content or message"),
    th.Property(
        "reasoning_content",
        th.StringType,
        description=(
            "Optional model reasoning or thinking summary for this log entry. Present only "
            "when `component` is `llm`, `type` is `response`, and the provider returned "
            "traceable reasoning (e.g. OpenAI reasoning summaries or Gemini thoughts)."
        ),
    ),
)

# spec: SubAccount (items of GET /sub-accounts/all), without `api_key`: the tap never emits it.
SUB_ACCOUNT_SCHEMA = th.PropertiesList(
    th.Property("id", th.StringType, required=True, description="Unique `id` of the sub-account"),
    th.Property("name", th.StringType, description="Name of the sub-account"),
    th.Property(
        "organization_id", th.StringType, description="Organization the sub-account belongs to"
    ),
    th.Property(
        "multi_tenant",
        th.BooleanType,
        description="Whether the sub-account is stored in a separate database",
    ),
    th.Property("min_concurrency", th.IntegerType, description="Concurrent calls reserved for it"),
    th.Property(
        "max_concurrency", th.IntegerType, description="Most concurrent calls it may place"
    ),
    th.Property(
        "allow_concurrent_calls",
        th.IntegerType,
        description="Concurrent calls it may place (the older name in Bolna's spec)",
    ),
)

# spec: AllSubAccountUsage items, one UTC day each (the tap asks for one day per row).
SUB_ACCOUNT_USAGE_SCHEMA = th.PropertiesList(
    th.Property("sub_account_id", th.StringType, required=True, description="The sub-account"),
    th.Property(
        "date", th.DateType, required=True, description="The UTC day (YYYY-MM-DD) summed up"
    ),
    th.Property("sub_account_name", th.StringType, description="Name of the sub-account"),
    th.Property("total_records", th.IntegerType, description="Executions created that day"),
    th.Property("total_duration", th.DecimalType, description="Their total duration (seconds)"),
    th.Property("total_cost", th.DecimalType, description="Their total cost (cents)"),
    th.Property("total_platform_cost", th.DecimalType, description="Their platform cost (cents)"),
    th.Property("total_telephony_cost", th.DecimalType, description="Their telephony cost (cents)"),
    th.Property(
        "status_map",
        th.ObjectType(additional_properties=th.IntegerType),
        description='Executions per status, e.g. {"completed": 11, "no-answer": 1}',
    ),
    th.Property(
        "synthesizer_cost_map",
        th.ObjectType(additional_properties=True),
        description="Synthesizer cost per provider and model (characters, cost in cents)",
    ),
    th.Property(
        "transcriber_cost_map",
        th.ObjectType(additional_properties=True),
        description="Transcriber cost per provider and model (duration, cost in cents)",
    ),
    th.Property(
        "llm_cost_map",
        th.ObjectType(additional_properties=True),
        description="LLM cost (cents) and tokens per model",
    ),
)
