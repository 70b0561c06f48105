"""README "PII-safe loads": the extractor tap-bolna--pii-safe (stream maps in meltano.yml) and the
jobs `bolna-to-postgres-pii-safe` and `bolna-elt-pii-safe` (the same load, then dbt).

End to end, the job `bolna-elt-pii-safe` loads schema bolna_pii_safe next to the plain load in
schema bolna: no phone number, transcript, recording URL or injected call variable the fake API
served reaches any column of any table there, nor of the dbt models it builds on them
(bolna_pii_safe_analytics), and every number is replaced by the same salted SHA-256 hash wherever
it appears. In-process, the same maps drop call logs and refuse to run without a salt.
"""

from __future__ import annotations

import hashlib
import json
import typing as t

import pytest
import yaml
from psycopg import sql

from tests.conftest import API_KEY, FAST_PACE, run_tap
from tests.e2e_support import (
    DBT_MODELS,
    PHONE_HASH_SALT,
    PII_SAFE_ANALYTICS_SCHEMA,
    PII_SAFE_SCHEMA,
    PROJECT_ROOT,
    SCHEMA,
    STATE_ID,
    Pipeline,
)
from tests.fake_api import FakeBolnaServer, World

# Meltano and PostgreSQL: run once, on one Python (`make test`; `make e2e` runs only these).
pytestmark = pytest.mark.e2e

if t.TYPE_CHECKING:
    from collections.abc import Iterator

NUMBER_KEYS = ("to_number", "from_number")
PII_SAFE_STATE_ID = "dev:tap-bolna--pii-safe-to-target-postgres"  # README


def hashed(number: str) -> str:
    """What the maps store for a phone number: sha256(salt + number), hex."""
    return hashlib.sha256((PHONE_HASH_SALT + number).encode()).hexdigest()


def pii_safe_config() -> dict[str, t.Any]:
    """The `config:` of tap-bolna--pii-safe in meltano.yml (stream_maps, stream_map_config)."""
    project = yaml.safe_load((PROJECT_ROOT / "meltano.yml").read_text())
    (plugin,) = [p for p in project["plugins"]["extractors"] if p["name"] == "tap-bolna--pii-safe"]
    assert plugin["inherit_from"] == "tap-bolna"
    assert plugin["load_schema"] == PII_SAFE_SCHEMA
    assert plugin["config"]["stream_map_config"] == {"phone_hash_salt": "${BOLNA_PHONE_HASH_SALT}"}
    return t.cast("dict[str, t.Any]", plugin["config"])


def served_personal_data(world: World) -> dict[str, set[str]]:
    """Every phone number (without its +), recording URL and transcript line the fake serves."""
    numbers: set[str] = set()
    recordings: set[str] = set()
    transcripts: set[str] = set()
    for call in world.executions.values():
        for part in (call["telephony_data"], call.get("transfer_call_data")):
            if part:
                numbers.update(part[key] for key in NUMBER_KEYS if part[key])
                if part.get("recording_url"):
                    recordings.add(part["recording_url"])
        numbers.add(call["context_details"]["recipient_phone_number"])
        if call["transcript"]:
            transcripts.update(line for line in call["transcript"].splitlines() if len(line) > 20)
    numbers.update(number["phone_number"] for number in world.phone_numbers)
    for batch in world.batches.values():
        numbers.update([batch["from_phone_number"], *batch["from_phone_numbers"]])
    return {
        "phone number": {number.lstrip("+") for number in numbers},
        "recording URL": recordings,
        "transcript line": transcripts,
        "account email": {world.user["email"]},
    }


LOADED_TABLES = {"executions", "agents", "batches", "phone_numbers", "account"}


def schema_text(warehouse: Pipeline, schema: str, expected: set[str] = LOADED_TABLES) -> str:
    """Every row of every table and view of a schema as text: all columns, whatever their type."""
    with warehouse.connect() as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        ]
        assert expected <= set(tables)
        query = sql.SQL("SELECT t::text FROM {}.{} AS t")
        return "\n".join(
            row[0]
            for table in tables
            for row in conn.execute(query.format(sql.Identifier(schema), sql.Identifier(table)))
        )


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def warehouse(pii_safe_warehouse: Pipeline) -> Pipeline:
    """Schema bolna (tap-bolna) and schema bolna_pii_safe (the job), from one fake account."""
    return pii_safe_warehouse


def test_no_personal_data_reaches_any_column_of_any_table(warehouse: Pipeline) -> None:
    raw, safe = schema_text(warehouse, SCHEMA), schema_text(warehouse, PII_SAFE_SCHEMA)
    for kind, values in served_personal_data(warehouse.world).items():
        assert values, kind
        # The search finds them where they were loaded as served, so it can find a leak.
        assert [value for value in values if value not in raw] == [], kind
        assert sorted(value for value in values if value in safe) == [], f"{kind} leaked"


def test_the_models_built_on_it_hold_no_personal_data(warehouse: Pipeline) -> None:
    """The job also builds the dbt models on the PII-safe load (bolna_pii_safe_analytics)."""
    models = schema_text(warehouse, PII_SAFE_ANALYTICS_SCHEMA, DBT_MODELS)
    for kind, values in served_personal_data(warehouse.world).items():
        assert sorted(value for value in values if value in models) == [], f"{kind} leaked"
    world = warehouse.world
    with warehouse.connect() as conn:
        calls = conn.execute(
            f"SELECT call_id, to_number FROM {PII_SAFE_ANALYTICS_SCHEMA}.bolna__calls"  # noqa: S608
        ).fetchall()
    assert sorted(call_id for call_id, _ in calls) == sorted(world.executions)
    for call_id, to_number in calls:
        assert to_number == hashed(world.executions[call_id]["telephony_data"]["to_number"])


def test_every_number_is_its_salted_hash_in_every_table(warehouse: Pipeline) -> None:
    world = warehouse.world
    with warehouse.connect() as conn:
        executions = conn.execute(
            "SELECT id, telephony_data, transfer_call_data, context_details "
            "FROM bolna_pii_safe.executions"
        ).fetchall()
        batches = conn.execute(
            "SELECT batch_id, from_phone_number, from_phone_numbers FROM bolna_pii_safe.batches"
        ).fetchall()
        numbers = conn.execute("SELECT id, phone_number FROM bolna_pii_safe.phone_numbers")
        numbers = numbers.fetchall()
    assert sorted(row[0] for row in executions) == sorted(world.executions)
    transfers = 0
    for call_id, telephony, transfer, context in executions:
        served = world.executions[call_id]
        pairs = ((telephony, served["telephony_data"]), (transfer, served["transfer_call_data"]))
        for loaded, sent in pairs:
            if sent is None:
                assert loaded is None
                continue
            assert {key: loaded[key] for key in NUMBER_KEYS} == {
                key: hashed(sent[key]) for key in NUMBER_KEYS
            }
            assert "recording_url" not in loaded
            assert loaded["provider_call_id"] == sent["provider_call_id"]  # the rest is kept
        transfers += transfer is not None
        assert context == {
            "recipient_phone_number": hashed(served["context_details"]["recipient_phone_number"])
        }
    assert transfers > 5
    assert sorted(batches) == sorted(
        (
            batch_id,
            hashed(batch["from_phone_number"]),
            list(map(hashed, batch["from_phone_numbers"])),
        )
        for batch_id, batch in world.batches.items()
    )
    assert sorted(numbers) == sorted(
        (number["id"], hashed(number["phone_number"])) for number in world.phone_numbers
    )


def test_hashed_numbers_still_join_calls_to_the_accounts_numbers(warehouse: Pipeline) -> None:
    """Every call has one of the account's numbers at one end: the same join, raw or hashed."""
    join = (
        "SELECT count(*) FROM {schema}.executions AS e JOIN {schema}.phone_numbers AS p ON "
        "p.phone_number IN (e.telephony_data ->> 'to_number', e.telephony_data ->> 'from_number')"
    )
    with warehouse.connect() as conn:
        counts = {
            schema: conn.execute(sql.SQL(join).format(schema=sql.Identifier(schema))).fetchone()
            for schema in (SCHEMA, PII_SAFE_SCHEMA)
        }
    assert counts == {schema: (len(warehouse.world.executions),) for schema in counts}


def test_dropped_columns_are_not_in_the_pii_safe_tables(warehouse: Pipeline) -> None:
    columns_query = (
        "SELECT table_name || '.' || column_name FROM information_schema.columns "
        "WHERE table_schema = %s"
    )
    with warehouse.connect() as conn:
        raw, safe = (
            {row[0] for row in conn.execute(columns_query, (schema,))}
            for schema in (SCHEMA, PII_SAFE_SCHEMA)
        )
    assert raw - safe == {"executions.transcript", "account.email"}


def test_the_pii_safe_load_keeps_its_own_state(warehouse: Pipeline) -> None:
    listed = warehouse.run("state", "list").stdout.split()
    assert {STATE_ID, PII_SAFE_STATE_ID} <= set(listed)
    state = json.loads(warehouse.run("state", "get", PII_SAFE_STATE_ID).stdout)
    partitions = state["singer_state"]["bookmarks"]["executions"]["partitions"]
    assert sorted(p["context"]["agent_id"] for p in partitions) == sorted(warehouse.world.agent_ids)


# --------------------------------------------------------------------------- in process


@pytest.fixture
def api() -> Iterator[FakeBolnaServer]:
    world = World.generate(seed=13, agents=2, calls=40, days=3)
    with FakeBolnaServer(world, api_key=API_KEY) as served:
        yield served


def every_stream_selected(config: dict[str, t.Any]) -> dict[str, t.Any]:
    from tap_bolna.tap import TapBolna  # noqa: PLC0415 - only these tests need the class

    catalog = TapBolna(config=config).catalog_dict
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            metadata["metadata"]["selected"] = True
    return catalog


def test_the_maps_drop_call_logs_even_when_they_are_selected(api: FakeBolnaServer) -> None:
    maps = pii_safe_config()
    config = {
        **FAST_PACE,
        "api_key": API_KEY,
        "api_url": api.url,
        "stream_maps": maps["stream_maps"],
        "stream_map_config": {"phone_hash_salt": PHONE_HASH_SALT},
    }
    result = run_tap(config, catalog=every_stream_selected(config))
    streams = {message.get("stream") for message in result.messages}
    assert "execution_logs" not in streams
    assert {"agents", "executions", "batches", "phone_numbers", "account"} <= streams
    calls = result.records("executions")
    assert sorted(call["id"] for call in calls) == sorted(api.world.executions)
    assert all("transcript" not in call for call in calls)
    assert {call["telephony_data"]["to_number"] for call in calls} == {
        hashed(call["telephony_data"]["to_number"]) for call in api.world.executions.values()
    }


def test_the_maps_refuse_to_run_without_a_salt(api: FakeBolnaServer) -> None:
    """Meltano passes null for an unset ${BOLNA_PHONE_HASH_SALT}: no record leaves unhashed."""
    config = {
        **FAST_PACE,
        "api_key": API_KEY,
        "api_url": api.url,
        "stream_maps": pii_safe_config()["stream_maps"],
        "stream_map_config": {"phone_hash_salt": None},
    }
    with pytest.raises(
        ValueError, match=r"'set BOLNA_PHONE_HASH_SALT \(see README, PII-safe loads\)'"
    ):
        run_tap(config)
