"""Unit tests of the request limits: the pace per route group, and requests in flight on 429.

The pacer runs on a virtual clock here, against a model of Bolna's per-minute limit (sliding
or fixed window, part of it used by the customer's own apps): minutes of traffic in
milliseconds. tests/test_rate_limit.py runs the same rules against the fake API over HTTP.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
from dataclasses import dataclass

import pytest

from tap_bolna.limits import AdaptiveConcurrency, Pacing, RequestPacer, route_group

# The documented rules (docs/incremental-sync.md, "Pace"), written out here rather than read
# from tap_bolna.limits, so that a changed constant fails these tests instead of moving them.
EXECUTIONS_ROUTES = "executions"  # /v2/agent/... and /call: Bolna's 500-a-minute group
OTHER_ROUTES = "other"  # every other route: the 1,000-a-minute group
PACE_DECREASE = 0.8  # a 429 slows the pace to 80 % of itself
FIRST_PAUSE_SECONDS = 1.0  # the first pause without Retry-After: 1 s, jittered 0.5-1.5 s
SUCCESSES_PER_PACE_STEP = 20  # successes in a row per 2 % step back up
STARTING_LIMIT = 2  # requests in flight before the first success
SUCCESSES_PER_RAISE = 16  # after a 429: one more in flight per 16 x the limit successes


class VirtualClock:
    """time.monotonic and time.sleep for a pacer, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def pacer(per_minute: float, clock: VirtualClock, seed: int = 1, **options) -> RequestPacer:
    jitter = random.Random(seed).random  # noqa: S311 - reproducible jitter, not secrets
    return RequestPacer(per_minute, clock=clock.clock, sleep=clock.sleep, jitter=jitter, **options)


@dataclass
class LimitModel:
    """Bolna's limit as modelled here: `capacity` admitted requests per `window` seconds."""

    capacity: int
    window: float
    mode: str = "sliding"

    def __post_init__(self) -> None:
        self.admitted: collections.deque[float] = collections.deque()
        self.window_start = 0.0
        self.count = 0

    def admit(self, moment: float) -> bool:
        if self.mode == "sliding":
            while self.admitted and self.admitted[0] <= moment - self.window:
                self.admitted.popleft()
            if len(self.admitted) >= self.capacity:
                return False
            self.admitted.append(moment)
            return True
        if moment - self.window_start >= self.window:
            self.window_start += self.window * ((moment - self.window_start) // self.window)
            self.count = 0
        if self.count >= self.capacity:
            return False
        self.count += 1
        return True


def backfill(pace: RequestPacer, limit: LimitModel, requests: int) -> tuple[int, int]:
    """Send until `requests` were answered; (sent, refused). The refused ones are sent again."""
    answered = sent = refused = 0
    while answered < requests:
        moment = pace.wait()
        sent += 1
        if limit.admit(moment):
            pace.succeeded(moment)
            answered += 1
        else:
            refused += 1
            pace.refused_after(moment, None)
    return sent, refused


def test_requests_are_spread_evenly_at_the_setting() -> None:
    clock = VirtualClock()
    pace = pacer(120, clock)
    moments = [pace.wait() for _ in range(5)]
    assert moments == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert clock.sleeps == pytest.approx([0.5] * 4)


@pytest.mark.parametrize("mode", ["sliding", "fixed"])
@pytest.mark.parametrize(
    ("capacity", "most_refused", "slowest"),
    [(500, 1 / 20, 1.0), (250, 1 / 10, 1.6)],
    ids=["documented-limit", "half-used-by-other-apps"],
)
def test_a_backfill_against_the_per_minute_limit(
    mode: str, capacity: int, most_refused: float, slowest: float
) -> None:
    clock = VirtualClock()
    pace = pacer(300, clock, name=EXECUTIONS_ROUTES)
    sent, refused = backfill(pace, LimitModel(capacity, 60.0, mode), requests=3000)
    allowed_pace_seconds = 3000 / min(capacity, 300) * 60
    assert refused / sent < most_refused
    assert clock.now <= slowest * allowed_pace_seconds
    if capacity >= 300:
        assert refused == 0, "the default pace stays below the documented limit"


def test_a_pace_set_above_the_limit_still_settles_below_it() -> None:
    clock = VirtualClock()
    pace = pacer(6000, clock)
    sent, refused = backfill(pace, LimitModel(50, 60.0), requests=1500)
    assert refused / sent < 1 / 10
    assert clock.now <= 1.6 * 1500 / 50 * 60


def test_a_429_slows_the_pace_once_per_run_of_refusals(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock()
    pace = pacer(300, clock, logger=logging.getLogger("pace-test"))
    in_flight = [pace.wait() for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="pace-test"):
        first_wait = pace.refused_after(in_flight[0], None)
        # Sent before the refusals began: no second slow-down, and they wait out the same pause.
        assert pace.refused_after(in_flight[1], None) <= first_wait
        assert pace.pace == pytest.approx(300 * PACE_DECREASE)
        resent = pace.wait()
        assert resent >= in_flight[0] + first_wait, "everyone waits out the pause"
        second_wait = pace.refused_after(resent, None)
        assert second_wait > first_wait, "refused again after the pause: a longer pause"
        assert pace.pace == pytest.approx(300 * PACE_DECREASE), "but the pace drops once"
        pace.succeeded(pace.wait())
        pace.refused_after(pace.wait(), None)  # a new run of refusals
    assert pace.pace == pytest.approx(300 * PACE_DECREASE**2)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, "one WARNING line each time it slows down"
    assert "slowing from 300 to 240 requests a minute" in lines[0]
    assert "slowing from 240 to 192 requests a minute" in lines[1]


def test_without_retry_after_the_first_pause_is_short_with_jitter() -> None:
    waits = set()
    for seed in range(20):
        clock = VirtualClock()
        pace = pacer(300, clock, seed=seed)
        waits.add(round(pace.refused_after(pace.wait(), None), 6))
    assert min(waits) >= 0.5 * FIRST_PAUSE_SECONDS
    assert max(waits) <= 1.5 * FIRST_PAUSE_SECONDS
    assert len(waits) > 10, "jittered, so many clients do not come back at once"


def test_retry_after_is_honoured_exactly() -> None:
    clock = VirtualClock()
    pace = pacer(300, clock)
    assert pace.refused_after(pace.wait(), 7.0) == 7.0
    assert pace.wait() == pytest.approx(7.0)


def test_retry_after_is_honoured_by_a_request_in_flight_when_the_refusals_began() -> None:
    # Seen with 4 workers: a 429 without Retry-After set a ~1 s pause, then a request sent
    # before it got 429 with `Retry-After: 7` and was retried after the 1 s pause, not 7 s.
    clock = VirtualClock()
    pace = pacer(300, clock)
    in_flight = [pace.wait() for _ in range(2)]
    short = pace.refused_after(in_flight[1], None)
    assert short < 7.0
    refused_at = clock.clock()
    assert pace.refused_after(in_flight[0], 7.0) == 7.0
    assert pace.wait() >= refused_at + 7.0, "and the others wait as long"


def test_the_pace_comes_back_up_slowly_and_never_above_the_setting() -> None:
    clock = VirtualClock()
    pace = pacer(300, clock)
    pace.refused_after(pace.wait(), None)
    lowered = pace.pace
    for _ in range(SUCCESSES_PER_PACE_STEP - 1):
        pace.succeeded(pace.wait())
    assert pace.pace == lowered
    pace.succeeded(pace.wait())
    assert lowered < pace.pace < 300
    for _ in range(SUCCESSES_PER_PACE_STEP * 100):
        pace.succeeded(pace.wait())
    assert pace.pace == 300


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/v2/agent/abc/executions", EXECUTIONS_ROUTES),
        ("/v2/agent/abc", EXECUTIONS_ROUTES),
        ("/v2/agent/all", EXECUTIONS_ROUTES),
        ("/call", EXECUTIONS_ROUTES),
        ("/executions/abc", OTHER_ROUTES),
        ("/batches/abc/all", OTHER_ROUTES),
        ("/user/me", OTHER_ROUTES),
    ],
)
def test_route_groups_are_bolnas(path: str, group: str) -> None:
    assert route_group(path) == group


def full_speed(pool: AdaptiveConcurrency) -> None:
    """Successes until the slow start has reached the maximum."""
    while pool.limit < pool.maximum:
        pool.release(pool.acquire(), throttled=False)


def test_the_pool_starts_low_and_doubles_until_the_first_429() -> None:
    pool = AdaptiveConcurrency(8)
    assert pool.limit == STARTING_LIMIT == 2
    limits = []
    while pool.limit < 8:
        pool.release(pool.acquire(), throttled=False)
        limits.append(pool.limit)
    assert sorted(set(limits)) == [2, 4, 8]
    assert len(limits) == 2 + 4, "doubled after as many successes as the limit"


def test_a_429_halves_the_requests_in_flight_once_per_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = AdaptiveConcurrency(8, logger=logging.getLogger("limits-test"))
    full_speed(pool)
    tokens = [pool.acquire() for _ in range(8)]
    with caplog.at_level(logging.WARNING, logger="limits-test"):
        for token in tokens[:6]:  # six requests sent at 8 in flight are all refused
            pool.release(token, throttled=True)
    assert pool.limit == 4, "requests already in flight lower the limit only once"
    later = pool.acquire()
    pool.release(later, throttled=True)
    assert pool.limit == 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, "one WARNING line each time the limit goes down"
    assert "lowering requests in flight from 8 to 4" in lines[0]
    assert "lowering requests in flight from 4 to 2" in lines[1]
    for token in tokens[6:]:
        pool.release(token, throttled=False)


def test_after_a_429_the_limit_rises_slowly_and_never_above_the_maximum() -> None:
    pool = AdaptiveConcurrency(3)
    full_speed(pool)
    pool.release(pool.acquire(), throttled=True)
    assert pool.limit == 2
    for _ in range(SUCCESSES_PER_RAISE * 2 - 1):
        pool.release(pool.acquire(), throttled=False)
    assert pool.limit == 2, "no more doubling once Bolna has refused"
    pool.release(pool.acquire(), throttled=False)
    assert pool.limit == 3
    for _ in range(SUCCESSES_PER_RAISE * 10):
        pool.release(pool.acquire(), throttled=False)
    assert pool.limit == 3


def test_no_more_requests_than_the_limit_are_in_flight() -> None:
    pool = AdaptiveConcurrency(2)
    first, second = pool.acquire(), pool.acquire()
    third_started = threading.Event()

    def third() -> None:
        token = pool.acquire()
        third_started.set()
        pool.release(token, throttled=False)

    waiter = threading.Thread(target=third)
    waiter.start()
    assert not third_started.wait(0.1)
    pool.release(first, throttled=False)
    assert third_started.wait(1)
    waiter.join()
    pool.release(second, throttled=False)


# The figures below are worked out by hand from the rules in the module docstrings (a 429
# lowers the pace to 80 %, 20 successes raise it by 2 %, pauses of 1 s doubled up to 60 s,
# 16 successes per request in flight before one more), not read from its constants.


def steady_jitter() -> float:
    return 0.5  # the middle of 0..1: every pause is exactly its nominal length


def test_pauses_double_while_requests_sent_after_the_pause_are_refused() -> None:
    clock = VirtualClock()
    pace = RequestPacer(60, clock=clock.clock, sleep=clock.sleep, jitter=steady_jitter)
    pauses = []
    for _ in range(8):
        sent = pace.wait()
        pauses.append(pace.refused_after(sent, None))
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert (pace.refused, pace.slowed) == (8, 1)


def test_a_request_sent_on_the_moment_the_refusals_began_counts_as_sent_after() -> None:
    clock = VirtualClock()
    pace = RequestPacer(60, clock=clock.clock, sleep=clock.sleep, jitter=steady_jitter)
    assert pace.refused_after(0.0, None) == 1.0  # the run of refusals begins at 0
    assert pace.refused_after(0.0, None) == 2.0, "refused again: the pause doubles"
    assert pace.refused == 2


def test_a_success_sent_on_the_moment_the_refusals_began_ends_them() -> None:
    clock = VirtualClock()
    pace = RequestPacer(300, clock=clock.clock, sleep=clock.sleep, jitter=steady_jitter)
    pace.refused_after(0.0, None)
    pace.succeeded(0.0)
    # A new run of refusals: the pace drops again, and the pause starts again at 1 s.
    assert pace.refused_after(pace.wait(), None) == 1.0
    assert (pace.pace, pace.slowed, pace.refused) == (pytest.approx(192.0), 2, 2)


def test_the_pace_steps_up_after_each_20_successes() -> None:
    clock = VirtualClock()
    pace = RequestPacer(300, clock=clock.clock, sleep=clock.sleep, jitter=steady_jitter)
    pace.refused_after(pace.wait(), None)
    assert pace.pace == pytest.approx(240.0)
    steps = []
    for _ in range(60):
        pace.succeeded(pace.wait())
        steps.append(pace.pace)
    assert steps[18] == pytest.approx(240.0)
    assert steps[19] == pytest.approx(244.8)
    assert steps[38] == pytest.approx(244.8)
    assert steps[39] == pytest.approx(249.696)
    assert steps[59] == pytest.approx(254.68992)


def test_an_idle_pacer_sends_at_once() -> None:
    clock = VirtualClock()
    pace = RequestPacer(60, clock=clock.clock, sleep=clock.sleep, jitter=steady_jitter)
    assert pace.wait() == 0.0
    clock.now = 10.0  # idle for 10 s: its next slot (1 s) is long past
    assert pace.wait() == 10.0
    assert pace.wait() == 11.0
    assert clock.sleeps == [1.0]


def test_the_slow_down_line_names_the_route_group_and_the_figures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    pace = RequestPacer(300, name="other", clock=clock.clock, sleep=clock.sleep)
    default = RequestPacer(100, clock=clock.clock, sleep=clock.sleep)
    assert (pace.name, default.name) == ("other", "executions")
    with caplog.at_level(logging.WARNING):
        pace.refused_after(pace.wait(), None)
        default.refused_after(default.wait(), None)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        (
            "tap_bolna.limits",
            (
                "Bolna answered HTTP 429 on the other routes: slowing from 300 to 240 requests a "
                "minute (back up slowly, at most 300, the setting)."
            ),
        ),
        (
            "tap_bolna.limits",
            (
                "Bolna answered HTTP 429 on the executions routes: slowing from 100 to 80 requests "
                "a minute (back up slowly, at most 100, the setting)."
            ),
        ),
    ]


def test_the_default_sleep_is_time_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    clock = VirtualClock()
    pace = RequestPacer(120, clock=clock.clock)
    pace.wait()
    pace.wait()
    assert slept == [0.5]


def test_each_route_group_has_its_own_pacer_with_the_options_given() -> None:
    clock = VirtualClock()
    logger = logging.getLogger("pacing-test")
    pacing = Pacing(
        {"executions": 120, "other": 240},
        logger=logger,
        clock=clock.clock,
        sleep=clock.sleep,
        jitter=steady_jitter,
    )
    executions = pacing.for_path("/v2/agent/a1/executions")
    other = pacing.for_path("/batches/b1")
    assert executions is pacing.pacers["executions"]
    assert other is pacing.pacers["other"]
    assert (executions.name, executions.maximum, other.name, other.maximum) == (
        "executions",
        120.0,
        "other",
        240.0,
    )
    assert executions._logger is logger
    # One clock: the second executions request waits 0.5 s (120 a minute), then the other
    # routes send at once and 0.25 s later (240 a minute).
    assert [executions.wait(), executions.wait(), other.wait(), other.wait()] == [0, 0.5, 0.5, 0.75]
    assert executions.refused_after(0.5, None) == 1.0, "the steady jitter was handed on"


def test_the_pool_counts_each_lowering_and_goes_down_to_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = AdaptiveConcurrency(4)
    full_speed(pool)
    assert pool.throttled == 0
    with caplog.at_level(logging.WARNING):
        for expected in (2, 1, 1):
            pool.release(pool.acquire(), throttled=True)
            assert pool.limit == expected
    assert pool.throttled == 2, "the limit of 1 cannot go lower: not counted"
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        (
            "tap_bolna.limits",
            (
                "Bolna answered HTTP 429: lowering requests in flight from 4 to 2 "
                "(raised again by one after 32 successful requests)."
            ),
        ),
        (
            "tap_bolna.limits",
            (
                "Bolna answered HTTP 429: lowering requests in flight from 2 to 1 "
                "(raised again by one after 16 successful requests)."
            ),
        ),
    ]


def test_a_request_sent_before_the_second_lowering_does_not_lower_again() -> None:
    pool = AdaptiveConcurrency(8)
    full_speed(pool)
    first = pool.acquire()
    pool.release(first, throttled=True)  # 8 -> 4
    early = pool.acquire()  # sent at 4 in flight
    pool.release(pool.acquire(), throttled=True)  # 4 -> 2
    pool.release(early, throttled=True)
    assert pool.limit == 2


def test_after_a_429_each_step_up_takes_16_successes_per_request_in_flight() -> None:
    pool = AdaptiveConcurrency(4)
    full_speed(pool)
    pool.release(pool.acquire(), throttled=True)  # 4 -> 2
    for _ in range(31):
        pool.release(pool.acquire(), throttled=False)
    assert pool.limit == 2
    pool.release(pool.acquire(), throttled=False)
    assert pool.limit == 3
    for _ in range(47):
        pool.release(pool.acquire(), throttled=False)
    assert pool.limit == 3
    pool.release(pool.acquire(), throttled=False)
    assert pool.limit == 4


def test_a_released_slot_frees_exactly_one() -> None:
    pool = AdaptiveConcurrency(2)
    first, _second = pool.acquire(), pool.acquire()
    pool.release(first, throttled=False)
    pool.acquire()
    fourth_started = threading.Event()

    def fourth() -> None:
        pool.acquire()
        fourth_started.set()

    waiter = threading.Thread(target=fourth, daemon=True)
    waiter.start()
    assert not fourth_started.wait(0.2), "two in flight already: the fourth waits"
    pool.release(0, throttled=False)
    assert fourth_started.wait(5)
    waiter.join()
