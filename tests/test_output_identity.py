"""The speed levers (msgspec writer, no SDK type conformance on executions) change no record."""

from __future__ import annotations

import decimal
import json
from typing import TYPE_CHECKING

from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.io_base import SingerWriter

from tap_bolna.streams import ExecutionsStream
from tap_bolna.tap import TapBolna
from tests.conftest import API_KEY, FAST_PACE, days_ago, run_tap
from tests.fake_api import FakeBolnaServer, World

if TYPE_CHECKING:
    import pytest


def records_by_stream(raw_stdout: str) -> dict[str, list[dict]]:
    """RECORD payloads per stream, numbers kept exact, extraction time left out."""
    found: dict[str, list[dict]] = {}
    for line in raw_stdout.splitlines():
        message = json.loads(line, parse_float=decimal.Decimal)
        if message["type"] == "RECORD":
            found.setdefault(message["stream"], []).append(message["record"])
    return found


def test_records_are_identical_with_and_without_the_speed_levers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World.generate(seed=17, agents=2, calls=600, days=20)
    # One field the schema does not declare: the SDK drops it, so must the fast path.
    next(iter(world.executions.values()))["field_bolna_added_later"] = 1
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        config = {"api_key": API_KEY, "api_url": api.url, "start_date": days_ago(25), **FAST_PACE}
        fast = run_tap(config)
        monkeypatch.setattr(
            ExecutionsStream, "TYPE_CONFORMANCE_LEVEL", TypeConformanceLevel.RECURSIVE
        )
        monkeypatch.setattr(TapBolna, "message_writer_class", SingerWriter)
        reference = run_tap(config)

    fast_records, reference_records = (
        records_by_stream(fast.raw_stdout),
        records_by_stream(reference.raw_stdout),
    )
    # The account snapshot carries the time of each sync; everything else must match exactly.
    assert fast_records.pop("account")[0]["wallet"] == reference_records.pop("account")[0]["wallet"]
    assert len(fast_records["executions"]) == 600
    assert fast_records == reference_records
    assert all("field_bolna_added_later" not in r for r in fast_records["executions"])


def test_a_deselected_property_is_still_left_out() -> None:
    """The fast path is only for catalogs that select every property."""
    world = World.generate(seed=18, agents=1, calls=60, days=5)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        config = {"api_key": API_KEY, "api_url": api.url, "start_date": days_ago(6), **FAST_PACE}
        catalog = TapBolna(config=config).catalog_dict
        (executions,) = [s for s in catalog["streams"] if s["tap_stream_id"] == "executions"]
        for entry in executions["metadata"]:
            if entry["breadcrumb"] == ["properties", "transcript"]:
                entry["metadata"]["selected"] = False
        result = run_tap(config, catalog=catalog)
    records = result.records()
    assert len(records) == 60
    assert all("transcript" not in record for record in records)
    assert all("telephony_data" in record for record in records)
