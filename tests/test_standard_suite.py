"""The SDK's standard tap tests, run offline against the fake Bolna API, plus what they miss.

`get_tap_test_class` needs its config when this module is imported, so the fake API starts
here at import time (a small world) and stops when the module's tests are done, or at exit if
they were all deselected.
"""

from __future__ import annotations

import atexit
import typing as t
from collections import Counter

import pytest
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_bolna.tap import TapBolna
from tests.conftest import API_KEY, days_ago, make_config, partitions, run_tap
from tests.fake_api import RETRYABLE_FINAL_STATUSES, FakeBolnaServer, World

# The SDK warns when a schema field appears in no record. Bolna's log lines carry
# `reasoning_content` only for some LLM providers, and the fake never sends it; ignore exactly
# that warning, so any other missing field still fails. (A filter cannot contain ":", hence ".")
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Fields in transformed catalog but not in records. \(\{'reasoning_content'\}\)$"
    ":UserWarning"
)

WORLD_DAYS = 10
WORLD = World.generate(seed=11, agents=2, calls=90, days=WORLD_DAYS)
# One auto-retried call, so records carry retry_count, retry_history and scheduled_at too.
WORLD.retry_calls(
    [next(i for i, c in WORLD.executions.items() if c["status"] in RETRYABLE_FINAL_STATUSES)]
)
API = FakeBolnaServer(WORLD, api_key=API_KEY).start()
atexit.register(API.stop)  # stop() is idempotent; this covers a run that deselects every test
CONFIG = make_config(API, start_date=days_ago(WORLD_DAYS + 1))


def select_everything(catalog: dict[str, t.Any]) -> dict[str, t.Any]:
    """The discovered catalog with every stream and property selected.

    The suite's dry run forces `stream.selected` on streams that are off by default
    (execution_logs) but leaves their properties deselected in the catalog, so their SCHEMA
    message comes out empty and every record "has fields not in the catalog". Selecting them
    here tests those streams the way a user who selects them runs them.
    """
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            entry["metadata"]["selected"] = True
    return catalog


CATALOG = select_everything(TapBolna(config=CONFIG, parse_env_config=False).catalog_dict)


@pytest.fixture(scope="module", autouse=True)
def _fake_api() -> t.Iterator[FakeBolnaServer]:
    yield API
    API.stop()


TestTapBolna = get_tap_test_class(
    TapBolna,
    config=CONFIG,
    # The SDK defaults to merging TAP_BOLNA_* variables (and a .env file) over this config:
    # a developer's real key or URL must not leak into, or redirect, an offline test.
    parse_env_config=False,
    catalog=CATALOG,
    # Above every stream's count here (90 calls, ~660 log lines): the record checks see them all,
    # not just the first 150 of each stream.
    # The two agency streams are empty without include_sub_accounts, which this account lacks;
    # their records are checked against the fake's sub-accounts in tests/test_sub_accounts.py.
    suite_config=SuiteConfig(
        max_records_limit=1000,
        ignore_no_records_for_streams=["sub_accounts", "sub_account_usage"],
    ),
)


# The built-in primary-key test puts generators in a set (all distinct, so it never sees a
# duplicate), and the built-in final-state test looks for progress_markers in the STATE message
# envelope, not in its partitions. These tests check what those cannot.


@pytest.fixture(scope="module", params=[1, 4], ids=["sequential", "4-workers"])
def full_sync(request: pytest.FixtureRequest) -> t.Any:
    return run_tap({**CONFIG, "max_workers": request.param})


def test_full_sync_emits_every_execution_exactly_once(full_sync: t.Any) -> None:
    counts = Counter(full_sync.ids())
    assert set(counts) == set(WORLD.executions)
    assert [call_id for call_id, seen in counts.items() if seen > 1] == []


def test_full_sync_emits_every_agent_and_batch_once(full_sync: t.Any) -> None:
    assert sorted(full_sync.ids("agents")) == sorted(WORLD.agent_ids)
    batch_ids = full_sync.ids("batches", key="batch_id")
    assert len(batch_ids) == len(set(batch_ids)) == len(WORLD.batches)


def test_final_state_is_finalized(full_sync: t.Any) -> None:
    final = full_sync.final_state
    unfinished = {"progress_markers", "replication_key_signpost", "starting_replication_value"}

    def keys_anywhere(node: t.Any) -> set[str]:
        if isinstance(node, dict):
            return set(node).union(*(keys_anywhere(value) for value in node.values()))
        if isinstance(node, list):
            return set().union(*(keys_anywhere(item) for item in node))
        return set()

    assert keys_anywhere(final) & unfinished == set()
    by_agent = partitions(final)
    assert sorted(by_agent) == sorted(WORLD.agent_ids)  # one partition per agent, no extras
    assert len(final["bookmarks"]["executions"]["partitions"]) == len(WORLD.agent_ids)
    for partition in by_agent.values():
        assert partition["replication_key"] == "created_at"
        assert (
            partition["replication_key_value"]
            >= max(call["created_at"] for call in WORLD.executions.values())[:23]
        )  # the bookmark's millisecond form is a prefix of the stored timestamp
