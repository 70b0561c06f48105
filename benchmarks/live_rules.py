"""Sections for the live API's rules: the pace under Bolna's limits, a first sync's reach,
and what following calls that can still change costs.

pacing     a backfill against the fake with Bolna's per-minute limits, scaled SCALE times
           (window 60/SCALE s, the tap's paces x SCALE), to itself and with half used by
           other apps, sliding and fixed windows: requests, refusals, wall time against the
           time the allowed pace needs.
history    unscaled request counts of a first sync of one agent created two years ago (and
           of one Bolna gives no created_at), and what they cost at the default pace.
following  request counts of an incremental sync with nothing new, per agent, with 0, 50
           and many followed calls spread thinly over a busy history or close together.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.bare_loop import windows as first_sync_windows
from benchmarks.harness import (
    PAGE_SIZE,
    BenchmarkError,
    Measurement,
    TapFiles,
    TimedFakeBolnaServer,
    WorldSize,
    fake_api,
    last_state,
    measure,
    serve,
)
from benchmarks.report import Row, heading, yes_no
from tests.fake_api import World
from tests.fake_api.server import parse_query_time
from tests.fake_api.world import format_timestamp

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from tests.fake_api import LoggedRequest
    from tests.fake_api.rate_limits import WindowMode

# ---------------------------------------------------------------------------------- pacing

SCALE = 20  # by default the limit's window is 60/SCALE s, the tap's paces SCALE times theirs
BOLNA_LIMITS = {"agent": 500, "default": 1000}  # requests a minute per organisation
REFUSED_GOAL_ALONE = 1 / 20  # refused share with the limit to itself
REFUSED_GOAL_SHARED = 1 / 10  # refused share with half of it used by other apps
SHARED_TIME_GOAL = 1.6  # wall time / time at the pace the limit leaves, half used by others
# Small pages of small calls: many requests from a small world, so neither side is short of
# CPU at SCALE times Bolna's pace and the figures are about pacing.
PACING_PAGE_SIZE = 5
PACING_TRANSCRIPTS = (200, 400)


@dataclass(frozen=True)
class PacingCase:
    """One limit the backfill runs against: a share used by other apps, a kind of window."""

    used_by_others: float  # share of each group's limit
    mode: WindowMode

    def describe(self) -> str:
        """E.g. `half used by others, fixed window`."""
        who = (
            "to itself" if not self.used_by_others else f"{self.used_by_others:.0%} used by others"
        )
        return f"{who}, {self.mode} window"

    def capacity(self, group: str) -> int:
        """Requests per window left to the tap in `group`."""
        limit = BOLNA_LIMITS[group]
        return limit - round(limit * self.used_by_others)


PACING_CASES = (
    PacingCase(0.0, "sliding"),
    PacingCase(0.0, "fixed"),
    PacingCase(0.5, "sliding"),
    PacingCase(0.5, "fixed"),
)


@dataclass(frozen=True)
class PacedRun:
    """One backfill against a limit, and what the fake's limiter counted."""

    measurement: Measurement
    admitted: dict[str, int]  # per route group
    refused: int
    span_seconds: float  # first request answered to last
    allowed_seconds: float  # the admitted requests at the pace the limit leaves the tap
    slowdowns: int  # WARNING lines saying the tap slowed down

    @property
    def refused_share(self) -> float:
        """Refused requests / requests sent."""
        return self.refused / max(1, self.measurement.requests)

    @property
    def wall_ratio(self) -> float:
        """Wall time of the sync / the time the allowed pace needs."""
        return self.measurement.run.wall_seconds / self.allowed_seconds

    @property
    def span_ratio(self) -> float:
        """First-to-last request / the time the allowed pace needs (start-up left out)."""
        return self.span_seconds / self.allowed_seconds


def pacing_section(
    size: WorldSize,
    runs: int,
    files: TapFiles,
    settings: Mapping[str, Mapping[str, object]],
    *,
    scale: float = SCALE,
) -> list[Row]:
    """A backfill against Bolna's limits, `scale` times faster, in each of PACING_CASES."""
    window = 60 / scale
    paces = {
        "agent": setting_default(settings, "max_requests_per_minute"),
        "default": setting_default(settings, "max_other_requests_per_minute"),
    }
    heading(
        f"Pacing: a backfill against Bolna's limits ({BOLNA_LIMITS['agent']} and "
        f"{BOLNA_LIMITS['default']:,} a minute), scaled {scale:g}x, {size.describe()}, "
        f"page_size {PACING_PAGE_SIZE}"
    )
    print(
        f"  The fake's window is {window:g} s instead of 60, the tap's paces {scale:g}x its "
        f"defaults ({paces['agent']:g} and {paces['default']:g} a minute):\n"
        f"  Bolna's rules, {scale:g} times faster. Not scaled: the tap's pause after a 429 "
        "(1 s, doubled while refused),\n"
        f"  so each refusal costs {scale:g} times more of the window here than on the live API;"
        "\n  nor the tap's start-up, so times are judged on the span from its first request"
        " answered to its last.\n  Allowed time = admitted requests / the requests a window"
        " leaves the tap x the window."
    )
    results: dict[PacingCase, list[PacedRun]] = {case: [] for case in PACING_CASES}
    with fake_api(size) as api:
        config = files.config(
            api,
            page_size=PACING_PAGE_SIZE,
            max_requests_per_minute=int(paces["agent"] * scale),
            max_other_requests_per_minute=int(paces["default"] * scale),
        )
        argv = files.tap_argv(config)
        for run in range(1, runs + 1):
            for case in PACING_CASES:
                paced = paced_backfill(api, argv, case, window)
                results[case].append(paced)
                print(f"  run {run}/{runs}, {case.describe():32} {brief_paced(paced)}")
        calls = len(api.world.executions)
    print(
        f"\n  {'limit':34} {'requests':>8} {'refused':>13} {'wall':>7} {'span':>7} "
        f"{'allowed':>7} {'wall/allowed':>12} {'span/allowed':>12}  (medians)"
    )
    rows = []
    for case, side in results.items():
        requests = statistics.median(p.measurement.requests for p in side)
        refused = statistics.median(p.refused for p in side)
        share = statistics.median(p.refused_share for p in side)
        wall = statistics.median(p.measurement.run.wall_seconds for p in side)
        span = statistics.median(p.span_seconds for p in side)
        allowed = statistics.median(p.allowed_seconds for p in side)
        wall_ratio = statistics.median(p.wall_ratio for p in side)
        span_ratio = statistics.median(p.span_ratio for p in side)
        print(
            f"  {case.describe():34} {requests:>8,.0f} {refused:>5,.0f} ({share:>5.1%}) "
            f"{wall:>5.1f} s {span:>5.1f} s {allowed:>5.1f} s {wall_ratio:>11.2f}x "
            f"{span_ratio:>11.2f}x"
        )
        if case.used_by_others:
            goal = f"< {REFUSED_GOAL_SHARED:.0%} refused, <= {SHARED_TIME_GOAL}x"
            # Judged on the requests' span: the tap's start-up is not scaled down (see above).
            met = share < REFUSED_GOAL_SHARED and span_ratio <= SHARED_TIME_GOAL
        else:
            goal = f"< {REFUSED_GOAL_ALONE:.0%} refused"
            met = share < REFUSED_GOAL_ALONE
        rows.append(
            Row(
                f"pacing ({scale:g}x): {case.describe()}",
                f"{share:.1%} of {requests:,.0f} refused, {wall:.1f} s",
                f"{allowed:.1f} s allowed",
                f"{span_ratio:.2f}x ({wall_ratio:.2f}x with start-up)",
                goal,
                yes_no(met),
            )
        )
    print(
        f"  With the limit to itself the tap keeps to its own pace, {paces['agent']:g} of "
        f"{BOLNA_LIMITS['agent']} a minute:\n  wall/allowed is then at least "
        f"{BOLNA_LIMITS['agent'] / paces['agent']:.2f}x by design (the rest is left to the "
        "customer's apps)."
    )
    check_calls(calls, [p.measurement for side in results.values() for p in side])
    return rows


def paced_backfill(
    api: TimedFakeBolnaServer, argv: list[str], case: PacingCase, window: float
) -> PacedRun:
    """One first sync with `case`'s limits in place, their windows starting empty."""
    for group, requests in BOLNA_LIMITS.items():
        api.set_rate_limit(
            group,
            requests,
            per_seconds=window,
            used_by_others=requests - case.capacity(group),
            mode=case.mode,
        )
    measurement = measure(api, argv, stream="executions", allow_throttled=True)
    counts = api.rate_limit_counts
    admitted = {group: counts[group]["admitted"] for group in BOLNA_LIMITS}
    allowed = max(admitted[group] / case.capacity(group) * window for group in BOLNA_LIMITS)
    return PacedRun(
        measurement=measurement,
        admitted=admitted,
        refused=sum(counts[group]["refused"] for group in BOLNA_LIMITS),
        span_seconds=api.request_span_seconds(),
        allowed_seconds=allowed,
        slowdowns=measurement.run.stderr.count("slowing from"),
    )


def brief_paced(paced: PacedRun) -> str:
    """One paced run in a few words."""
    run = paced.measurement.run
    return (
        f"{run.wall_seconds:5.1f} s, {paced.measurement.requests:,} req, {paced.refused} "
        f"refused ({paced.refused_share:.1%}), allowed {paced.allowed_seconds:.1f} s, "
        f"slowed down {paced.slowdowns}x, {paced.measurement.records:,} rec"
    )


def setting_default(settings: Mapping[str, Mapping[str, object]], name: str) -> float:
    """A numeric setting's default, as the installed tap's `--about` gives it."""
    default = (settings.get(name) or {}).get("default")
    if not isinstance(default, (int, float)):
        msg = f"the tap has no numeric default for {name!r}: is it the tap of issue 15?"
        raise BenchmarkError(msg)
    return float(default)


def check_calls(calls: int, measurements: Iterable[Measurement]) -> None:
    """Warn when a run did not emit every call of the world."""
    wrong = [m.records for m in measurements if m.records != calls]
    if wrong:
        print(f"  WARNING: runs emitted {wrong} records, the world has {calls:,}")
    else:
        print(f"  every run emitted all {calls:,} calls")


# ---------------------------------------------------------------------------------- history

HISTORY_DAYS = 730  # an agent created two years ago; also the tap's horizon without created_at
HISTORY_CALLS = 40  # few calls, in its last 30 days: one page per window


def history_section(files: TapFiles, settings: Mapping[str, Mapping[str, object]]) -> list[Row]:
    """Requests of a first sync of one agent created two years ago, and of one without a date."""
    pace = setting_default(settings, "max_requests_per_minute")
    heading(
        f"History: the first sync of one agent created {HISTORY_DAYS} days ago with "
        f"{HISTORY_CALLS} calls (requests, not time)"
    )
    print(
        "  Every executions request needs from/to at most 7 days apart, so a first sync walks\n"
        "  the agent's whole life in 7-day windows. Paces lifted and the fake's limits off:\n"
        f"  the minutes are requests / {pace:g} (the default max_requests_per_minute)."
    )
    world = World.generate(
        seed=7, agents=1, calls=HISTORY_CALLS, days=30, transcript_bytes=PACING_TRANSCRIPTS
    )
    agent = next(iter(world.agents.values()))
    two_years_ago = world.now - dt.timedelta(days=HISTORY_DAYS)
    rows = []
    with serve(world) as api:
        config = files.config(api)
        for label, created_at in (
            (f"created {HISTORY_DAYS} days ago", format_timestamp(two_years_ago)),
            ("no created_at", None),
        ):
            if created_at is None:
                agent.pop("created_at", None)
            else:
                agent["created_at"] = created_at
            synced = measure(api, files.tap_argv(config), stream="executions")
            routes = requests_by_route(synced.answered)
            executions = routes.get("executions", 0)
            minutes = synced.requests / pace
            assumed = "no created_at" in synced.run.stderr
            print(
                f"  {label:24} {synced.requests:,} requests ({executions:,} executions "
                f"windows/pages, {routes.get('agent list', 0)} agent list): {minutes:.2f} "
                f"min at {pace:g} a minute; {synced.records} of {HISTORY_CALLS} calls"
                + ("; the tap warned it assumed the horizon" if assumed else "")
            )
            if synced.records != HISTORY_CALLS:
                print(f"  WARNING: {synced.records} records, the world has {HISTORY_CALLS}")
            rows.append(
                Row(
                    f"first sync, 1 agent {label}, {HISTORY_CALLS} calls",
                    f"{synced.requests:,} requests",
                    "",
                    f"{minutes:.2f} min at {pace:g}/min",
                )
            )
    return rows


# ---------------------------------------------------------------------------------- following

FOLLOWING_HISTORY_DAYS = 40
# The world's history ends this long before the syncs: no call of it is in a retry horizon
# (6 h by default) or pending, so the only followed calls are those placed below.
FOLLOWING_HISTORY_ENDS_BEFORE = dt.timedelta(hours=7)
# Followed calls are created this far back: outside the look-back (and the 7 days an idle
# agent is read again), inside pending_lookback_days (35 by default).
FOLLOWED_OLDEST = dt.timedelta(days=33)
FOLLOWED_NEWEST = dt.timedelta(days=8)
FOLLOWED_CLOSE_SPAN = dt.timedelta(hours=1)
FOLLOWED_CLOSE_AGO = dt.timedelta(days=20)
RECENT_CALLS = 3  # completed calls a moment before the syncs: every agent is active


@dataclass(frozen=True)
class FollowedCase:
    """One agent's followed calls: how many, and how they are spread."""

    calls: int
    close: bool  # all within FOLLOWED_CLOSE_SPAN, else evenly over FOLLOWED_OLDEST..NEWEST

    def describe(self) -> str:
        """E.g. `50 followed, within 1 h`."""
        if not self.calls:
            return "0 followed"
        days = (FOLLOWED_OLDEST - FOLLOWED_NEWEST).days
        where = "within 1 h" if self.close else f"spread over {days} days"
        return f"{self.calls:,} followed, {where}"

    def moments(self, now: dt.datetime) -> list[dt.datetime]:
        """When each followed call was created."""
        if self.close:
            start, span = now - FOLLOWED_CLOSE_AGO, FOLLOWED_CLOSE_SPAN
        else:
            start, span = now - FOLLOWED_OLDEST, FOLLOWED_OLDEST - FOLLOWED_NEWEST
        return [start + span * (number + 0.5) / self.calls for number in range(self.calls)]


@dataclass(frozen=True)
class FollowedCost:
    """What one agent's incremental sync with nothing new sent, and the alternatives."""

    case: FollowedCase
    followed: int  # in the state the first sync wrote
    executions: int  # requests to the agent's executions route
    by_id: int  # GET /executions/{id}
    window_pages: int  # re-reading the 7-day windows that hold its followed calls, in pages

    @property
    def requests(self) -> int:
        """Requests of this agent's sync."""
        return self.executions + self.by_id


def following_section(calls_per_agent: int, many: int, files: TapFiles) -> list[Row]:
    """Request counts of an incremental sync with nothing new, one agent per FollowedCase."""
    cases = (
        FollowedCase(0, close=False),
        FollowedCase(50, close=False),
        FollowedCase(50, close=True),
        FollowedCase(many, close=False),
        FollowedCase(many, close=True),
    )
    per_day = calls_per_agent / FOLLOWING_HISTORY_DAYS
    heading(
        f"Following: an incremental sync with nothing new, {len(cases)} agents with "
        f"{calls_per_agent:,} calls in {FOLLOWING_HISTORY_DAYS} days each ({per_day:g} a day), "
        "page_size 50 (requests, not time)"
    )
    print(
        "  Followed calls: every other one `scheduled` (pending), the others `no-answer` a\n"
        "  moment before the first sync (in the retry horizon); created "
        f"{FOLLOWED_NEWEST.days}-{FOLLOWED_OLDEST.days} days back, outside the look-back.\n"
        f"  Each agent also has {RECENT_CALLS} completed calls a moment old (active). Paces "
        "lifted, the fake's limits off.\n  A first sync writes the state; the second, "
        "with nothing new, is counted per agent."
    )
    now = dt.datetime.now(dt.timezone.utc)
    world = World.generate(
        seed=11,
        agents=len(cases),
        calls=calls_per_agent * len(cases),
        days=FOLLOWING_HISTORY_DAYS,
        now=now - FOLLOWING_HISTORY_ENDS_BEFORE,
        pending_fraction=0,
        transcript_bytes=PACING_TRANSCRIPTS,
    )
    agents = dict(zip(world.agent_ids, cases, strict=True))
    moments = {agent_id: case.moments(now) for agent_id, case in agents.items()}
    place_followed_calls(world, moments)
    costs = []
    with serve(world) as api:
        config = files.config(api)
        output = files.directory / "following-first-sync.singer"
        first = measure(api, files.tap_argv(config), stream="executions", stdout=output)
        state = files.directory / "following-state.json"
        state.write_text(json.dumps(last_state_checked(output)), encoding="utf-8")
        followed = followed_per_agent(json.loads(state.read_text(encoding="utf-8")))
        print(
            f"  first sync: {first.requests:,} requests, {first.records:,} of "
            f"{len(world.executions):,} calls"
        )
        again = measure(api, files.tap_argv(config, state), stream="executions")
        by_agent = requests_by_agent(again.answered, world)
        for agent_id, case in agents.items():
            executions, by_id = by_agent.get(agent_id, (0, 0))
            costs.append(
                FollowedCost(
                    case,
                    followed.get(agent_id, 0),
                    executions,
                    by_id,
                    window_pages(world, world.agents[agent_id], moments[agent_id]),
                )
            )
        routes = requests_by_route(again.answered)
    print(
        f"  second sync: {again.requests:,} requests ({routes.get('agent list', 0)} agent "
        f"list), {again.records} records emitted"
    )
    if again.records:
        print("  WARNING: a sync with nothing new emitted records")
    base = costs[0].requests
    print(
        f"\n  {'agent':32} {'in state':>8} {'executions':>10} {'by id':>6} {'total':>6} "
        f"{'7-day windows':>13} {'bound':>6}"
    )
    rows = []
    for cost in costs:
        bound = base + min(cost.followed, cost.window_pages)
        print(
            f"  {cost.case.describe():32} {cost.followed:>8,} {cost.executions:>10,} "
            f"{cost.by_id:>6,} {cost.requests:>6,} {cost.window_pages:>7,} pages {bound:>6,}"
        )
        if cost.followed != cost.case.calls:
            print(f"  WARNING: the state follows {cost.followed} calls, {cost.case.calls} placed")
        rows.append(
            Row(
                f"no-change sync, 1 agent, {cost.case.describe()}",
                f"{cost.executions:,} + {cost.by_id:,} by id",
                f"{cost.window_pages:,} pages" if cost.case.calls else "",
                "",
                f"<= {bound:,}",
                yes_no(cost.requests <= bound),
            )
        )
    print(
        f"  bound: what the agent without followed calls costs ({base}) + min(followed, pages "
        "of their 7-day windows)\n  7-day windows: the pages of the first sync's windows "
        "that hold a followed call, read again"
    )
    return rows


def place_followed_calls(world: World, moments: Mapping[str, list[dt.datetime]]) -> None:
    """Add each agent's followed calls, then RECENT_CALLS completed ones a moment old."""
    retried = []
    for agent_id, created in moments.items():
        for number, moment in enumerate(created):
            (call_id,) = world.add_calls(
                1, agent_id=agent_id, created_at=moment, status="scheduled"
            )
            if number % 2:
                retried.append(call_id)
        world.add_calls(RECENT_CALLS, agent_id=agent_id)
    # An attempt that ended unanswered just now: followed for the retry horizon.
    world.complete_pending(ids=retried, status="no-answer")
    # The others stay pending, as calls of a campaign scheduled ahead are.
    if len(world.pending_ids()) + len(retried) != sum(map(len, moments.values())):
        msg = "the fake's world has pending calls the benchmark did not place"
        raise BenchmarkError(msg)


def last_state_checked(output: Path) -> dict[str, object]:
    """The state the first sync ended with; a sync that wrote none fails the section."""
    state = last_state(output)
    if not state:
        msg = "the first sync wrote no STATE"
        raise BenchmarkError(msg)
    return state


def followed_per_agent(state: Mapping[str, object]) -> dict[str, int]:
    """Followed (pending) calls per agent id in the executions stream's state."""
    bookmarks = state.get("bookmarks") or {}
    stream = bookmarks.get("executions") if isinstance(bookmarks, dict) else None
    counts: dict[str, int] = {}
    for partition in (stream or {}).get("partitions") or ():
        counts[partition["context"]["agent_id"]] = len(partition.get("pending_calls") or {})
    return counts


def requests_by_route(answered: Iterable[LoggedRequest]) -> dict[str, int]:
    """Requests per kind: agent list, executions (windows and pages), by id, other."""
    counts: dict[str, int] = {}
    for request in answered:
        kind = route_kind(request.path)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def route_kind(path: str) -> str:
    """`agent list`, `executions`, `by id` or `other`."""
    if path == "/v2/agent/all":
        return "agent list"
    if path.startswith("/v2/agent/") and path.endswith("/executions"):
        return "executions"
    if path.startswith("/executions/") and path.count("/") == 2:
        return "by id"
    return "other"


def requests_by_agent(
    answered: Iterable[LoggedRequest], world: World
) -> dict[str, tuple[int, int]]:
    """Per agent id: (executions-route requests, by-id requests)."""
    executions: dict[str, int] = {}
    by_id: dict[str, int] = {}
    for request in answered:
        kind = route_kind(request.path)
        if kind == "executions":
            agent_id = request.path.split("/")[3]
            executions[agent_id] = executions.get(agent_id, 0) + 1
        elif kind == "by id":
            call = world.executions.get(request.path.split("/")[2]) or {}
            agent_id = str(call.get("agent_id"))
            by_id[agent_id] = by_id.get(agent_id, 0) + 1
    return {
        agent_id: (executions.get(agent_id, 0), by_id.get(agent_id, 0))
        for agent_id in executions.keys() | by_id.keys()
    }


def window_pages(world: World, agent: Mapping[str, object], created: list[dt.datetime]) -> int:
    """Pages of 50 to read again the first sync's 7-day windows that hold a followed call."""
    now = dt.datetime.now(dt.timezone.utc)
    pages = 0
    with world.lock:
        for created_from, created_to in first_sync_windows(str(agent["created_at"]), now):
            start = dt.datetime.fromisoformat(created_from)
            end = dt.datetime.fromisoformat(created_to)
            if not any(start <= moment <= end for moment in created):
                continue
            total, _ = world.list_executions(
                str(agent["id"]),
                created_from=parse_query_time(created_from, name="from", round_up=True),
                created_to=parse_query_time(created_to, name="to", round_up=False),
                page_size=1,
            )
            pages += max(1, math.ceil(total / PAGE_SIZE))
    return pages
