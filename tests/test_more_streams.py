"""The smaller streams one at a time: phone_numbers, knowledgebases, account, batches and
execution_logs, each selected alone through a catalog, against a rejected key (403), a missing
endpoint (404) and an empty answer (`[]`).

In-process syncs, except the rejected key: its exit status and its one line are what a user
sees, so it runs the `tap-bolna` command.
"""

from __future__ import annotations

import json
import typing as t

import pytest

from tap_bolna.client import BolnaAPIError
from tap_bolna.tap import TapBolna
from tests.conftest import API_KEY, FAST_PACE, run_tap, run_tap_cli
from tests.fake_api import FakeBolnaServer, World
from tests.fake_api.server import AUTH_FAILURE

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import SyncResult

WRONG_KEY = "wrong-key-0d4e-not-the-real-one"
# What identifies each stream's own requests in the fake's request log.
OWN_PATH = {
    "phone_numbers": "/phone-numbers/all",
    "knowledgebases": "/knowledgebase/all",
    "account": "/user/me",
    "batches": "/batches/",  # /batches/{agent_id}/all, one request per agent
    "execution_logs": "/log",  # /executions/{execution_id}/log, one request per call
}
STREAMS = list(OWN_PATH)


@pytest.fixture
def api() -> Iterator[FakeBolnaServer]:
    """A small account: 2 agents, 40 calls over 3 days."""
    world = World.generate(seed=5, agents=2, calls=40, days=3)
    with FakeBolnaServer(world, api_key=API_KEY) as served:
        yield served


def config(api: FakeBolnaServer, **overrides: t.Any) -> dict[str, t.Any]:
    return {"api_key": API_KEY, "api_url": api.url, **FAST_PACE, **overrides}


def catalog_selecting(stream: str) -> dict[str, t.Any]:
    """The tap's catalog with only `stream` (and every one of its fields) selected."""
    catalog = TapBolna(config={"api_key": API_KEY}).catalog_dict
    for entry in catalog["streams"]:
        chosen = entry["tap_stream_id"] == stream
        for metadata in entry["metadata"]:
            if chosen or not metadata["breadcrumb"]:
                metadata["metadata"]["selected"] = chosen
    return catalog


def sync_only(api: FakeBolnaServer, stream: str) -> SyncResult:
    return run_tap(config(api), catalog=catalog_selecting(stream))


def own_requests(api: FakeBolnaServer, stream: str) -> list[tuple[str, int]]:
    return [(r.path, r.status) for r in api.requests if OWN_PATH[stream] in r.path]


def served_keys(world: World, stream: str) -> list[t.Any]:
    """The primary key of every record the fake serves for `stream`."""
    if stream == "phone_numbers":
        return [number["id"] for number in world.phone_numbers]
    if stream == "knowledgebases":
        return [document["rag_id"] for document in world.knowledgebases]
    if stream == "account":
        return [world.user["id"]]
    if stream == "batches":
        return list(world.batches)
    return [
        (call_id, position)
        for call_id in world.executions
        for position, _line in enumerate(world.execution_log(call_id)["data"])
    ]


def emitted_keys(result: SyncResult, stream: str) -> list[t.Any]:
    records = result.records(stream)
    if stream == "execution_logs":
        return [(record["execution_id"], record["position"]) for record in records]
    key = {"knowledgebases": "rag_id", "batches": "batch_id"}.get(stream, "id")
    return [record[key] for record in records]


def emitted_streams(result: SyncResult) -> set[str]:
    return {message["stream"] for message in result.messages if message["type"] == "RECORD"}


@pytest.mark.parametrize("stream", STREAMS)
def test_selected_alone_it_emits_what_the_fake_serves(api: FakeBolnaServer, stream: str) -> None:
    result = sync_only(api, stream)
    assert emitted_streams(result) == {stream}
    keys = emitted_keys(result, stream)
    assert sorted(keys) == sorted(served_keys(api.world, stream))
    assert len(keys) > 0


@pytest.mark.parametrize("stream", STREAMS)
def test_empty_answer_emits_no_record_and_succeeds(
    api: FakeBolnaServer, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    api.json_200_next(10_000, [], path_contains=OWN_PATH[stream])
    result = sync_only(api, stream)
    assert result.records(stream) == []
    assert {status for _path, status in own_requests(api, stream)} == {200}
    assert result.messages[-1]["type"] == "STATE"  # the sync ran to its end
    if stream == "account":  # an account always exists: an empty answer is worth a warning
        assert "Bolna answered /user/me with an empty body; no account row." in caplog.text


def test_account_answered_with_a_list_stops_with_one_line(api: FakeBolnaServer) -> None:
    api.json_200_next(1, [api.world.account()], path_contains="/user/me")
    expected = "Bolna answered /user/me with list, expected an object"
    with pytest.raises(BolnaAPIError, match=f"^{expected}$"):
        sync_only(api, "account")


@pytest.mark.parametrize("stream", [s for s in STREAMS if s != "execution_logs"])
def test_404_stops_with_one_line_naming_the_path(api: FakeBolnaServer, stream: str) -> None:
    api.fail_next(1, status=404, path_contains=OWN_PATH[stream])
    with pytest.raises(BolnaAPIError) as raised:
        sync_only(api, stream)
    ((path, status),) = [entry for entry in own_requests(api, stream) if entry[1] == 404]
    message = str(raised.value)
    assert (status, raised.value.status_code) == (404, 404)
    assert "\n" not in message
    if stream == "batches":  # a per-agent path: the agent is named
        agent_id = path.split("/")[2]
        assert message == (
            f"Unknown agent {agent_id!r}: Bolna answered HTTP 404 on {path} (Not Found)"
        )
    else:
        assert message == f"Bolna answered HTTP 404 on {path}: Not Found"
    assert own_requests(api, stream).count((path, 404)) == 1  # not retried


def test_404_for_one_call_log_skips_that_call_only(
    api: FakeBolnaServer, caplog: pytest.LogCaptureFixture
) -> None:
    api.fail_next(1, status=404, path_contains=OWN_PATH["execution_logs"])
    result = sync_only(api, "execution_logs")

    ((path, _),) = [e for e in own_requests(api, "execution_logs") if e[1] == 404]
    missing = path.split("/")[2]
    keys = emitted_keys(result, "execution_logs")
    expected = [k for k in served_keys(api.world, "execution_logs") if k[0] != missing]
    assert sorted(keys) == sorted(expected)
    assert f"No log for {path} (HTTP 404); skipped." in caplog.text
    assert result.messages[-1]["type"] == "STATE"


@pytest.mark.parametrize("stream", STREAMS)
def test_403_on_the_streams_own_endpoint_is_not_retried(api: FakeBolnaServer, stream: str) -> None:
    api.fail_next(1, status=403, path_contains=OWN_PATH[stream])
    with pytest.raises(BolnaAPIError) as raised:
        sync_only(api, stream)
    assert str(raised.value) == "Bolna rejected the API key (HTTP 403): Forbidden"
    assert [status for _path, status in own_requests(api, stream)] == [403]


@pytest.mark.parametrize("stream", STREAMS)
def test_rejected_key_exits_1_with_one_clear_line(
    tmp_path: Path, api: FakeBolnaServer, stream: str
) -> None:
    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(catalog_selecting(stream)))
    result = run_tap_cli(
        tmp_path, config(api, api_key=WRONG_KEY), "--catalog", str(catalog_path), timeout=60
    )
    assert result.returncode == 1
    assert result.records(stream) == []
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.endswith(f"Bolna rejected the API key (HTTP 403): {AUTH_FAILURE['detail']}")
    assert WRONG_KEY not in result.stderr + result.raw_stdout
    # One request and no retry: the stream's own, or the parent's (agents) for batches and logs.
    first = {"batches": "/v2/agent/all", "execution_logs": "/v2/agent/all"}.get(stream)
    assert [(r.path, r.status) for r in api.requests] == [(first or OWN_PATH[stream], 403)]
