"""A sync killed with SIGKILL in the middle of a backfill resumes where it stopped."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import signal
import subprocess
import typing as t
from collections import Counter

from tests.conftest import API_KEY, FAST_PACE, days_ago, partitions, run_tap, tap_command
from tests.fake_api import FakeBolnaServer, World

if t.TYPE_CHECKING:
    from pathlib import Path


def moment(timestamp: str) -> dt.datetime:
    """An ISO 8601 timestamp of the API or the state ("...Z" or "+00:00"), as a datetime."""
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def run_until_states(config_path: Path, states_wanted: int) -> tuple[list[dict], int]:
    """Start the CLI, read its output until the n-th STATE, SIGKILL it; return what it wrote."""
    proc = subprocess.Popen(
        tap_command(config_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    messages: list[dict] = []
    states = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            message = json.loads(line)
            messages.append(message)
            if message["type"] == "STATE" and "executions" in message["value"].get("bookmarks", {}):
                states += 1
                if states == states_wanted:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    return messages, proc.returncode


def test_kill_mid_backfill_then_resume_loses_nothing(tmp_path: Path, max_workers: int) -> None:
    world = World.generate(seed=21, agents=2, calls=1200, days=50)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        config = {
            **FAST_PACE,
            "api_key": API_KEY,
            "api_url": api.url,
            "start_date": days_ago(55),
            "max_workers": max_workers,
        }
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps(config))

        # Baseline: what a whole uninterrupted sync costs.
        run_tap(config)
        full_requests = len(api.requests)
        api.clear_requests()

        # Kill during the first agent's backfill, after its 3rd window checkpoint.
        api.latency = 0.01
        messages, returncode = run_until_states(config_path, states_wanted=3)
        api.latency = 0.0
        assert returncode == -signal.SIGKILL
        killed_state = next(m["value"] for m in reversed(messages) if m["type"] == "STATE")
        emitted_before = [
            m["record"]["id"]
            for m in messages
            if m["type"] == "RECORD" and m["stream"] == "executions"
        ]
        first_agent = world.agent_ids[0]
        bookmark = partitions(killed_state)[first_agent]["replication_key_value"]
        assert bookmark < max(
            c["created_at"] for c in world.executions.values() if c["agent_id"] == first_agent
        )
        api.wait_until_idle()  # the killed tap's last requests are still answered
        api.clear_requests()

        resumed = run_tap(config, state=killed_state)
        resumed_requests = len(api.requests)

    # Nothing lost: everything before the kill plus everything after is the whole account.
    assert set(emitted_before) | set(resumed.ids()) == set(world.executions)
    assert len(resumed.ids()) == len(set(resumed.ids()))
    # The resumed run started at the checkpoint (less the look-back): no window before it
    # was requested again.
    assert resumed_requests < full_requests
    first_agent_requests = [
        r for r in api.requests if r.path == f"/v2/agent/{first_agent}/executions"
    ]
    first_agent_froms = [r.query["from"] for r in first_agent_requests]
    assert first_agent_froms
    lookback = dt.timedelta(minutes=60)
    assert min(map(moment, first_agent_froms)) == moment(bookmark) - lookback
    # Exactly what the fake holds from the checkpoint on (less the look-back) for the first
    # agent, and everything of the second: a resume a window early emits a window too many.
    since = moment(bookmark) - lookback
    expected = {
        call_id
        for call_id, call in world.executions.items()
        if call["agent_id"] != first_agent or moment(call["created_at"]) >= since
    }
    assert set(resumed.ids()) == expected
    # And exactly the requests that takes: windows of at most 7 days laid end to end from
    # there to now, each read page by page as the fake counts its calls (pages of 50), once.
    windows = Counter((r.query["from"], r.query["to"]) for r in first_agent_requests)
    bounds = sorted((moment(start), moment(end)) for start, end in windows)
    assert bounds[0][0] == since
    assert all(end == next_start for (_, end), (next_start, _) in itertools.pairwise(bounds))
    for (start, end), pages in windows.items():
        width = moment(end) - moment(start)
        assert dt.timedelta(0) < width <= dt.timedelta(days=7)
        calls = sum(
            call["agent_id"] == first_agent
            and moment(start) <= moment(call["created_at"]) <= moment(end)
            for call in world.executions.values()
        )
        assert pages == max(1, math.ceil(calls / 50)), (start, end)
