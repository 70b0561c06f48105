"""The stream schemas: well-formed, documented, keyed, built from shared fragments, and complete
against Bolna's OpenAPI spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from singer_sdk import typing as th

from tap_bolna import schemas

# The spec lives beside the repo (../shared), both here and in CI.
SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "bolna-api" / "openapi.yml"

STREAM_SCHEMAS: dict[str, tuple[th.PropertiesList, list[str]]] = {
    "EXECUTION_SCHEMA": (schemas.EXECUTION_SCHEMA, ["id"]),
    "AGENT_SCHEMA": (schemas.AGENT_SCHEMA, ["id"]),
    "BATCH_SCHEMA": (schemas.BATCH_SCHEMA, ["batch_id"]),
    "PHONE_NUMBER_SCHEMA": (schemas.PHONE_NUMBER_SCHEMA, ["id"]),
    "KNOWLEDGEBASE_SCHEMA": (schemas.KNOWLEDGEBASE_SCHEMA, ["rag_id"]),
    "ACCOUNT_SCHEMA": (schemas.ACCOUNT_SCHEMA, ["id", "synced_at"]),
    "EXECUTION_LOG_SCHEMA": (schemas.EXECUTION_LOG_SCHEMA, ["execution_id", "position"]),
}

# Spec component -> the fragment that models it wherever it appears.
SPEC_FRAGMENTS: dict[str, th.ObjectType] = {
    "TelephonyData": schemas.TELEPHONY_DATA,
    "TransferCallData": schemas.TRANSFER_CALL_DATA,
    "CostBreakdown": schemas.COST_BREAKDOWN,
    "BatchRunData": schemas.BATCH_RUN_DETAILS,
    "IngestSourceConfig": schemas.INGEST_SOURCE_CONFIG,
}

# Spec component -> our model of it (the spec names are those of openapi.yml).
SPEC_MODELS: dict[str, th.ObjectType] = {
    **SPEC_FRAGMENTS,
    "AgentExecution": schemas.EXECUTION_SCHEMA,
    "AgentV2": schemas.AGENT_SCHEMA,
    "Batch": schemas.BATCH_SCHEMA,
    "PhoneNumber": schemas.PHONE_NUMBER_SCHEMA,
    "Knowledgebase": schemas.KNOWLEDGEBASE_SCHEMA,
    "User": schemas.ACCOUNT_SCHEMA,
    "AgentExecutionLog": schemas.EXECUTION_LOG_SCHEMA,
}

# Deliberate departures from the spec, each explained in schemas.py.
LEFT_OUT = {"IngestSourceConfig.source_auth_token"}  # a customer credential
TYPE_OVERRIDES = {
    "TelephonyData.duration": "integer",  # numeric string in the spec; normalised by the tap
    "TransferCallData.duration": "integer",
}


def _properties(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every property at every nesting level (objects, array items, typed maps)."""
    found = []
    for name, prop in node.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        found.append((here, prop))
        found.extend(_properties(prop, here))
    if isinstance(node.get("items"), dict):
        found.extend(_properties(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        found.extend(_properties(node["additionalProperties"], f"{path}.*"))
    return found


def _undescribed(schema: dict[str, Any]) -> list[str]:
    return [
        path for path, prop in _properties(schema) if not str(prop.get("description", "")).strip()
    ]


@pytest.mark.parametrize("name", STREAM_SCHEMAS)
def test_schema_is_a_valid_json_schema_object(name):
    schema = STREAM_SCHEMAS[name][0].to_dict()

    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["properties"]
    assert json.loads(json.dumps(schema)) == schema


@pytest.mark.parametrize("name", STREAM_SCHEMAS)
def test_every_property_at_every_level_has_a_description(name):
    assert _undescribed(STREAM_SCHEMAS[name][0].to_dict()) == []


def test_description_check_sees_nested_properties():
    schema = th.PropertiesList(
        th.Property("top", th.StringType),
        th.Property(
            "nested",
            th.ObjectType(th.Property("inner", th.IntegerType, description=" ")),
            description="has one",
        ),
        th.Property(
            "rows",
            th.ArrayType(th.ObjectType(th.Property("cell", th.StringType))),
            description="has one",
        ),
    ).to_dict()

    assert _undescribed(schema) == ["top", "nested.inner", "rows[].cell"]


@pytest.mark.parametrize("name", STREAM_SCHEMAS)
def test_only_primary_keys_are_required_and_never_null(name):
    schema_object, keys = STREAM_SCHEMAS[name]
    schema = schema_object.to_dict()

    assert schema["required"] == keys
    for key in keys:
        assert "null" not in schema["properties"][key]["type"]


@pytest.mark.parametrize("name", STREAM_SCHEMAS)
def test_every_other_column_has_one_type_and_is_nullable(name):
    schema_object, keys = STREAM_SCHEMAS[name]
    for path, prop in _properties(schema_object.to_dict()):
        if path in keys:
            continue
        assert isinstance(prop["type"], list), path
        assert len(prop["type"]) == 2, path
        assert "null" in prop["type"], path


@pytest.mark.parametrize("name", STREAM_SCHEMAS)
def test_timestamps_are_date_time(name):
    for path, prop in _properties(STREAM_SCHEMAS[name][0].to_dict()):
        leaf = path.rsplit(".", 1)[-1]
        # humanized_* and renewal_at are display text ("5 minutes ago", "17th Dec, 2024").
        if leaf.endswith("_at") and not leaf.startswith("humanized_") and leaf != "renewal_at":
            assert prop.get("format") == "date-time", path


@pytest.mark.parametrize(
    ("fragment", "field"),
    [
        (schemas.TELEPHONY_DATA, "duration"),
        (schemas.TELEPHONY_DATA, "ring_duration"),
        (schemas.TELEPHONY_DATA, "post_dial_delay"),
        (schemas.TELEPHONY_DATA, "hangup_provider_code"),
        (schemas.TRANSFER_CALL_DATA, "duration"),
        (schemas.TRANSFER_CALL_DATA, "hangup_provider_code"),
    ],
)
def test_durations_and_codes_are_integers(fragment, field):
    assert fragment.to_dict()["properties"][field]["type"] == ["integer", "null"]


def test_execution_call_durations_are_integers_as_emitted():
    properties = schemas.EXECUTION_SCHEMA.to_dict()["properties"]

    assert properties["telephony_data"]["properties"]["duration"]["type"] == ["integer", "null"]
    assert properties["transfer_call_data"]["properties"]["duration"]["type"] == [
        "integer",
        "null",
    ]


@pytest.mark.parametrize(
    ("schema_object", "field", "fragment"),
    [
        (schemas.EXECUTION_SCHEMA, "telephony_data", schemas.TELEPHONY_DATA),
        (schemas.EXECUTION_SCHEMA, "transfer_call_data", schemas.TRANSFER_CALL_DATA),
        (schemas.EXECUTION_SCHEMA, "cost_breakdown", schemas.COST_BREAKDOWN),
        (schemas.EXECUTION_SCHEMA, "batch_run_details", schemas.BATCH_RUN_DETAILS),
        (schemas.BATCH_SCHEMA, "execution_status", schemas.BATCH_EXECUTION_STATUS_COUNTS),
        (schemas.AGENT_SCHEMA, "ingest_source_config", schemas.INGEST_SOURCE_CONFIG),
        (schemas.ACCOUNT_SCHEMA, "concurrency", schemas.ACCOUNT_CONCURRENCY),
    ],
)
def test_fragments_are_reused_not_copied(schema_object, field, fragment):
    emitted = schema_object.to_dict()["properties"][field]
    definition = fragment.to_dict()

    assert schema_object.wrapped[field].wrapped is fragment
    assert emitted["type"] == ["object", "null"]
    assert {k: v for k, v in emitted.items() if k not in {"type", "description"}} == {
        k: v for k, v in definition.items() if k != "type"
    }


def test_status_descriptions_tell_pending_from_final():
    description = schemas.EXECUTION_SCHEMA.to_dict()["properties"]["status"]["description"]
    pending, final = description.split("Final:")

    for status in schemas.PENDING_EXECUTION_STATUSES:
        assert f"`{status}`" in pending
    for status in schemas.FINAL_EXECUTION_STATUSES:
        assert f"`{status}`" in final
    assert set(schemas.PENDING_EXECUTION_STATUSES).isdisjoint(schemas.FINAL_EXECUTION_STATUSES)


def test_batch_status_counts_name_every_status_and_accept_new_ones():
    counts = schemas.BATCH_SCHEMA.to_dict()["properties"]["execution_status"]

    assert set(counts["properties"]) == set(schemas.EXECUTION_STATUSES)
    assert counts["additionalProperties"] == {"type": ["integer"]}


def test_ingest_source_config_never_carries_the_auth_token():
    config = schemas.AGENT_SCHEMA.to_dict()["properties"]["ingest_source_config"]

    assert "source_auth_token" not in config["properties"]
    assert config["additionalProperties"] is False  # so the SDK drops it from records


def test_schemas_emit_no_enums():
    for name, (schema_object, _) in STREAM_SCHEMAS.items():
        for path, prop in _properties(schema_object.to_dict()):
            assert "enum" not in prop, f"{name}: {path}"


# --- Against Bolna's OpenAPI spec -------------------------------------------------------------


@pytest.fixture(scope="module")
def spec_components() -> dict[str, Any]:
    if not SPEC_PATH.is_file():
        pytest.skip(f"Bolna OpenAPI spec not found at {SPEC_PATH} (expected ../shared beside repo)")
    with SPEC_PATH.open(encoding="utf-8") as spec_file:
        return yaml.safe_load(spec_file)["components"]["schemas"]


def _spec_type(spec_property: dict[str, Any]) -> str:
    """The single JSON type our column should have for a spec property."""
    if "$ref" in spec_property or spec_property.get("type") == "object":
        return "object"
    if spec_property.get("format") == "integer":  # spec writes some counters as number+integer
        return "integer"
    return spec_property["type"]


def _spec_mismatches(components: dict[str, Any], spec_name: str, ours: th.ObjectType) -> list[str]:
    """Spec properties missing from `ours`, mistyped, or not modelled by the shared fragment."""
    problems = []
    emitted = ours.to_dict()["properties"]
    for name, spec_property in components[spec_name]["properties"].items():
        path = f"{spec_name}.{name}"
        if path in LEFT_OUT:
            continue
        if name not in emitted:
            problems.append(f"{path}: missing")
            continue
        expected = TYPE_OVERRIDES.get(path, _spec_type(spec_property))
        if [t for t in emitted[name]["type"] if t != "null"] != [expected]:
            problems.append(f"{path}: {emitted[name]['type']} is not {expected}")
        wants_date_time = spec_property.get("format") == "date-time"
        if wants_date_time and emitted[name].get("format") != "date-time":
            problems.append(f"{path}: not date-time")
        referenced = spec_property.get("$ref", "").rsplit("/", 1)[-1]
        if (
            referenced in SPEC_FRAGMENTS
            and ours.wrapped[name].wrapped is not SPEC_FRAGMENTS[referenced]
        ):
            problems.append(f"{path}: does not reuse the {referenced} fragment")
    return problems


@pytest.mark.parametrize("spec_name", SPEC_MODELS)
def test_every_spec_property_is_modelled(spec_components, spec_name):
    assert _spec_mismatches(spec_components, spec_name, SPEC_MODELS[spec_name]) == []


def test_account_concurrency_matches_spec(spec_components):
    spec_concurrency = spec_components["User"]["properties"]["concurrency"]["properties"]
    emitted = schemas.ACCOUNT_CONCURRENCY.to_dict()["properties"]

    assert {name: emitted[name]["type"] for name in spec_concurrency} == {
        name: ["integer", "null"] for name in spec_concurrency
    }


def test_spec_check_reports_a_missing_property(spec_components):
    without_duration = th.ObjectType(
        *(prop for name, prop in schemas.TELEPHONY_DATA.wrapped.items() if name != "duration")
    )

    assert _spec_mismatches(spec_components, "TelephonyData", without_duration) == [
        "TelephonyData.duration: missing"
    ]


def test_the_documented_statuses_agree_with_the_follow_rules():
    from tap_bolna.statuses import (  # noqa: PLC0415 - only this test couples the two
        RETRYABLE_EXECUTION_STATUSES,
        Follow,
        follow_rule,
    )

    for status in schemas.PENDING_EXECUTION_STATUSES:
        assert follow_rule(status) is Follow.UNTIL_FINAL, status
    for status in schemas.FINAL_EXECUTION_STATUSES:
        expected = Follow.RETRY_HORIZON if status in RETRYABLE_EXECUTION_STATUSES else Follow.NOT
        assert follow_rule(status) is expected, status
