"""Bolna's per-minute limits against the fake API, over HTTP, scaled to run in seconds.

The fake refuses with 429, without Retry-After, what goes over 500 requests per window on the
agent routes and 1,000 on the others, per organisation. Here the window is 3 s instead of 60
and the tap's paces are 20 times its defaults: the same rules, 20 times faster. With the
limit to itself the tap is never refused; when the customer's own apps use half of it, the
tap slows down, loses nothing, and few of its requests are refused. tests/test_limits.py
runs the pacer against minutes of virtual traffic; benchmarks/ measures the time it takes.
"""

from __future__ import annotations

import logging
import typing as t
from collections import Counter

import pytest

from tests.conftest import API_KEY, days_ago, run_tap
from tests.fake_api import FakeBolnaServer, World

if t.TYPE_CHECKING:
    from collections.abc import Iterator

SCALE = 20
WINDOW_SECONDS = 60 / SCALE


@pytest.fixture(scope="module")
def world() -> World:
    """4 agents, 2,000 calls in 20 days: at 5 calls a page, some 420 requests a backfill."""
    return World.generate(seed=61, agents=4, calls=2000, days=20)


@pytest.fixture
def api(world: World) -> Iterator[FakeBolnaServer]:
    with FakeBolnaServer(world, api_key=API_KEY) as server:
        yield server


def limit(api: FakeBolnaServer, *, used_by_others_share: float, mode: str = "sliding") -> None:
    """Bolna's documented limits, with the window scaled down and part used by other apps."""
    for group, requests in (("agent", 500), ("default", 1000)):
        api.set_rate_limit(
            group,
            requests,
            per_seconds=WINDOW_SECONDS,
            used_by_others=round(requests * used_by_others_share),
            mode=mode,
        )


def backfill(api: FakeBolnaServer, max_workers: int) -> list[str]:
    config = {
        "api_key": API_KEY,
        "api_url": api.url,
        "start_date": days_ago(21),
        "page_size": 5,
        "max_workers": max_workers,
        # The documented defaults (300 and 600 a minute), scaled like the fake's limits.
        "max_requests_per_minute": 300 * SCALE,
        "max_other_requests_per_minute": 600 * SCALE,
    }
    return run_tap(config).ids()


def refused_share(api: FakeBolnaServer) -> float:
    statuses = Counter(request.status for request in api.requests)
    assert set(statuses) <= {200, 429}, statuses
    return statuses[429] / sum(statuses.values())


@pytest.mark.parametrize("max_workers", [1, 8])
def test_the_default_pace_stays_below_the_documented_limit(
    api: FakeBolnaServer, world: World, max_workers: int
) -> None:
    limit(api, used_by_others_share=0)
    ids = backfill(api, max_workers)
    assert Counter(ids).most_common(1)[0][1] == 1
    assert set(ids) == set(world.executions)
    agent_requests = sum(api.rate_limit_counts["agent"].values())
    assert agent_requests > 400, "enough requests to fill the window twice over"
    assert refused_share(api) < 1 / 20
    assert api.rate_limit_counts["agent"]["refused"] == 0


@pytest.mark.parametrize("mode", ["sliding", "fixed"])
def test_with_half_the_limit_used_by_other_apps_the_tap_slows_down_and_loses_nothing(
    api: FakeBolnaServer, world: World, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    limit(api, used_by_others_share=0.5, mode=mode)
    with caplog.at_level(logging.WARNING):
        ids = backfill(api, max_workers=8)
    assert Counter(ids).most_common(1)[0][1] == 1
    assert set(ids) == set(world.executions)
    refused = sum(counts["refused"] for counts in api.rate_limit_counts.values())
    assert refused_share(api) < 1 / 10
    slowed = [r.getMessage() for r in caplog.records if "slowing from" in r.getMessage()]
    # The tap's pace is above what is left, but on a loaded machine it may not reach it.
    assert bool(slowed) == (refused > 0), "it says when it slows down, and only then"
    assert all("requests a minute" in line for line in slowed)
    assert len(slowed) <= refused
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_pace_settings_are_the_paces_the_fake_sees() -> None:
    # Paces below the defaults, and different per group: a pace hard-coded, taken from the
    # defaults, or from the other group's setting goes faster than one of these. Going slower
    # than set is always allowed (a loaded machine only spreads requests further apart).
    world = World.generate(seed=62, agents=5, calls=25, days=5)
    paces = {"executions": 200, "other": 120}  # requests a minute
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        run_tap(
            {
                "api_key": API_KEY,
                "api_url": api.url,
                "start_date": days_ago(5.5),
                "max_requests_per_minute": paces["executions"],
                "max_other_requests_per_minute": paces["other"],
            }
        )
        requests = api.requests
    # Bolna's groups (README of the API): the agent routes, and every other route.
    arrivals = {
        "executions": [r.received for r in requests if r.path.startswith("/v2/agent/")],
        "other": [r.received for r in requests if not r.path.startswith("/v2/agent/")],
    }
    for group, times in arrivals.items():
        assert len(times) >= 5, group
        interval = 60 / paces[group]
        # Any n + 1 requests of a group span n intervals; one of slack, as the first may reach
        # the fake late and the last early.
        for first, earlier in enumerate(times):
            for n, later in enumerate(times[first + 1 :], start=1):
                assert later - earlier >= (n - 1) * interval, (group, first, n)
