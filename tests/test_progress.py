"""What a person reads during a sync: a line per window, a heartbeat, summaries (issue 11)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from typing import TYPE_CHECKING

from tap_bolna.progress import AgentProgress
from tap_bolna.windows import Window
from tests.conftest import API_KEY, make_config, run_tap
from tests.fake_api import FakeBolnaServer, World

if TYPE_CHECKING:
    import pytest

WINDOW_DONE = re.compile(
    r"Agent (?P<name>.+) \((?P<id>[0-9a-f-]+)\): window (?P<start>\S+ \S+) \.\. (?P<end>\S+ \S+) "
    r"UTC done; (?P<calls>[\d,]+) calls emitted so far, window (?P<n>\d+) of (?P<of>\d+)\."
)
AGENT_DONE = re.compile(
    r"Agent (?P<name>.+) \((?P<id>[0-9a-f-]+)\): (?P<new>[\d,]+) new calls, (?P<changed>[\d,]+) "
    r"changed since emitted \(status or data\), (?P<pending>[\d,]+) calls still followed "
    r"\(they can still change\)\."
)
SYNC_DONE = re.compile(
    r"Sync done: (?P<calls>[\d,]+) calls from (?P<agents>\d+) agent\(s\), (?P<requests>[\d,]+) "
    r"requests \((?P<retries>[\d,]+) retried\), in [\d.]+ s\."
)


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_a_backfill_says_which_agent_how_far_and_sums_up(
    caplog: pytest.LogCaptureFixture, max_workers: int
) -> None:
    world = World.generate(seed=51, agents=3, calls=900, days=30, pending_fraction=0.05)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        api.fail_next(2, 503, retry_after="0", path_contains="/executions")
        with caplog.at_level(logging.INFO):
            # No retry horizon: the calls followed are the fake's pending ones.
            result = run_tap(make_config(api, max_workers=max_workers, retry_horizon_hours=0))
        requests = len(api.requests)
    messages = [r.getMessage() for r in caplog.records]
    names = {agent["id"]: agent["agent_name"] for agent in world.agents.values()}
    emitted = Counter(record["agent_id"] for record in result.records())

    windows = [m.groupdict() for line in messages if (m := WINDOW_DONE.fullmatch(line))]
    assert {w["id"] for w in windows} == set(world.agent_ids)
    for agent_id in world.agent_ids:
        mine = [w for w in windows if w["id"] == agent_id]
        assert {w["name"] for w in mine} == {names[agent_id]}
        assert [int(w["n"]) for w in mine] == list(range(1, len(mine) + 1))
        assert {int(w["of"]) for w in mine} == {len(mine)}
        assert len(mine) >= 4, "30 days in windows of 7"
        counts = [number(w["calls"]) for w in mine]
        assert counts == sorted(counts)
        assert counts[-1] == emitted[agent_id]

    agents = {m["id"]: m.groupdict() for line in messages if (m := AGENT_DONE.fullmatch(line))}
    assert set(agents) == set(world.agent_ids)
    for agent_id, line in agents.items():
        assert number(line["new"]) == emitted[agent_id]
        assert number(line["changed"]) == 0
        pending = {i for i in world.pending_ids() if world.executions[i]["agent_id"] == agent_id}
        assert number(line["pending"]) == len(pending)

    (summary,) = [m.groupdict() for line in messages if (m := SYNC_DONE.fullmatch(line))]
    assert number(summary["calls"]) == len(world.executions)
    assert number(summary["agents"]) == 3
    assert number(summary["requests"]) == requests
    assert number(summary["retries"]) == 2
    assert messages.index(next(line for line in messages if SYNC_DONE.fullmatch(line))) > max(
        messages.index(line) for line in messages if AGENT_DONE.fullmatch(line)
    ), "the sync's summary comes last"


def test_a_second_sync_counts_changed_calls(
    caplog: pytest.LogCaptureFixture, max_workers: int
) -> None:
    world = World.generate(seed=52, agents=1, calls=200, days=10, pending_fraction=0.2)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        config = make_config(api, max_workers=max_workers, retry_horizon_hours=0)
        first = run_tap(config)
        completed = world.complete_pending()
        new = world.add_calls(3)
        with caplog.at_level(logging.INFO):
            run_tap(config, state=first.final_state)
    (line,) = [m for r in caplog.records if (m := AGENT_DONE.fullmatch(r.getMessage()))]
    assert (number(line["new"]), number(line["changed"]), number(line["pending"])) == (
        len(new),
        len(completed),
        0,
    )


def test_a_long_window_says_where_it_is_at_least_every_30_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    window = Window(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                    dt.datetime(2026, 1, 8, tzinfo=dt.timezone.utc))  # fmt: skip
    progress = AgentProgress(
        logging.getLogger("progress-test"), "Alfred (a1)", 2, clock=lambda: now[0]
    )
    with caplog.at_level(logging.INFO, logger="progress-test"):
        for second in range(95):
            now[0] = float(second)
            progress.record_emitted()
            progress.heartbeat(window, pages=second // 10)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, "95 s inside one window: a line at 30, 60 and 90 s (README)"
    assert lines[0] == (
        "Agent Alfred (a1): reading window 2026-01-01 00:00 .. 2026-01-08 00:00 UTC, "
        "3 pages so far; 31 calls emitted, window 1 of 2."
    )


HEARTBEAT = re.compile(
    r"Agent (?P<name>.+) \((?P<id>[0-9a-f-]+)\): reading window (?P<start>\S+ \S+) \.\. "
    r"(?P<end>\S+ \S+) UTC, (?P<pages>\d+) pages so far; (?P<calls>[\d,]+) calls emitted, "
    r"window (?P<n>\d+) of (?P<of>\d+)\."
)


def test_a_sync_gives_its_heartbeat_while_reading_a_window(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No waiting 30 s: with no interval, the sync loop's heartbeat speaks at every record read.
    monkeypatch.setattr("tap_bolna.progress.HEARTBEAT_SECONDS", 0.0)
    world = World.generate(seed=53, agents=1, calls=60, days=5, pending_fraction=0)
    with FakeBolnaServer(world, api_key=API_KEY) as api, caplog.at_level(logging.INFO):
        run_tap(make_config(api, page_size=10, start_date=world_start(world)))
    beats = [m.groupdict() for r in caplog.records if (m := HEARTBEAT.fullmatch(r.getMessage()))]
    assert len(beats) == len(world.executions), "one line per record read"
    assert {beat["id"] for beat in beats} == set(world.agent_ids)
    # 60 calls in pages of 10, one window: the line counts the pages read and calls emitted.
    assert [number(beat["calls"]) for beat in beats] == list(range(1, 61))
    assert {int(beat["pages"]) for beat in beats} == set(range(1, 7))


def world_start(world: World) -> str:
    """A start date before every call of the world: one window covers them all."""
    return (world.server_now() - dt.timedelta(days=5.5)).isoformat()
