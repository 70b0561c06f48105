"""Benchmarks of tap-bolna against the project's fake Bolna API; prints figures and ratios.

    uv run python -m benchmarks.run              # everything, 3 interleaved runs each
    uv run python -m benchmarks.run --quick      # smoke test: small sizes, 1 run each
    uv run python -m benchmarks.run --profile    # also: top 15 functions of one tap run
    uv run python -m benchmarks.run --only dense

Sections, with the tap's paces lifted and the fake's rate limits off: overhead (tap vs a bare
requests loop over the same windows), memory (peak RSS at 10x the history), dense (one agent,
10,000 calls in 6.5 days) and agents (8 agents, 2,000 calls each in 6 days): max_workers 1 vs
4 vs 8 with 0.1 s per response; throttle (a server that answers 429 beyond 2 requests in
flight, max_workers 8 vs 2); profile (cProfile). Under the live rules (live_rules.py): pacing
(a backfill against Bolna's per-minute limits, scaled), history (the requests of a first sync
of an agent created two years ago), following (the requests of a no-change sync with followed
calls).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import pstats
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.bare_loop import windows as first_sync_windows
from benchmarks.harness import (
    ROOT,
    TAP,
    BenchmarkError,
    Measurement,
    TapFiles,
    WorldSize,
    bare_loop_argv,
    fake_api,
    machine_info,
    measure,
    run_child,
    tap_settings,
)
from benchmarks.live_rules import (
    PACING_TRANSCRIPTS,
    following_section,
    history_section,
    pacing_section,
)
from benchmarks.live_rules import (
    SCALE as PACING_SCALE,
)
from benchmarks.report import Row, brief, heading, median_of, spread, yes_no
from tests.fake_api.server import parse_query_time

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from tests.fake_api import World

SECTIONS = (
    "overhead",
    "memory",
    "dense",
    "agents",
    "throttle",
    "pacing",
    "history",
    "following",
    "profile",
)
OVERHEAD_GOAL = 1.3  # tap wall time / bare loop wall time (the goal after that: 1.15)
MEMORY_TOLERANCE = 0.15  # peak RSS at 10x the calls, relative
DENSE_SPEEDUP_GOAL = 3.5  # one agent, one window: max_workers 1 wall time / max_workers 4
AGENTS_SPEEDUP_GOAL = 3.0  # 8 agents, a dense window each: the same ratio
THROTTLED_SHARE_GOAL = 0.1  # requests answered 429 / all requests, max_workers 8 vs a cap of 2
SERVER_CAP = 2  # requests in flight the throttling fake allows
PROFILE_TOP = 15


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one benchmark run."""

    runs: int
    overhead: WorldSize  # also the small side of the memory comparison
    memory_large: WorldSize
    dense: WorldSize
    agents: WorldSize
    throttle: WorldSize
    latency_seconds: float
    pacing: WorldSize
    following_calls_per_agent: int
    following_many: int  # the larger number of followed calls per agent
    parallel_workers: int = 4
    most_workers: int = 8
    memory_with_fewer_workers: bool = True  # also measure peak RSS with parallel_workers


FULL = Plan(
    runs=3,
    overhead=WorldSize(agents=4, calls=20_000, days=60),
    memory_large=WorldSize(agents=4, calls=200_000, days=60),
    dense=WorldSize(agents=1, calls=10_000, days=6.5),
    agents=WorldSize(agents=8, calls=16_000, days=6),
    throttle=WorldSize(agents=4, calls=6_000, days=6),
    latency_seconds=0.1,
    pacing=WorldSize(agents=4, calls=7_000, days=20, transcript_bytes=PACING_TRANSCRIPTS),
    following_calls_per_agent=12_000,
    following_many=2_000,
)
QUICK = Plan(
    runs=1,
    overhead=WorldSize(agents=4, calls=2_000, days=60),
    memory_large=WorldSize(agents=4, calls=20_000, days=60),
    dense=WorldSize(agents=1, calls=1_000, days=6.5),
    agents=WorldSize(agents=8, calls=1_600, days=6),
    throttle=WorldSize(agents=2, calls=1_000, days=6),
    latency_seconds=0.05,
    pacing=WorldSize(agents=4, calls=1_400, days=20, transcript_bytes=PACING_TRANSCRIPTS),
    following_calls_per_agent=4_000,
    following_many=200,
    memory_with_fewer_workers=False,  # two tap runs fewer: quick stays near a minute
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections, then print the summary table."""
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    runs = args.runs or plan.runs
    sections = list(args.only or SECTIONS[:-1])
    if args.profile and "profile" not in sections:
        sections.append("profile")
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows even when piped
    # A plain `kill` must also stop the children and the fake API: unwind like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    if not TAP.exists():
        print(f"{TAP} not found: run `uv sync` first")
        return 2

    machine = machine_info()
    started = time.perf_counter()
    mode = "quick (small sizes, goals not meaningful)" if args.quick else "full"
    print(f"tap-bolna benchmarks, {mode}, {runs} run(s) per figure, interleaved")
    for name, value in machine.items():
        print(f"  {name}: {value}")
    rows: list[Row] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="tap-bolna-bench-") as directory:
        files = TapFiles(Path(directory))
        settings = tap_settings()
        section_runs: dict[str, Callable[[], list[Row]]] = {
            "overhead": lambda: overhead_section(plan.overhead, runs, files),
            "memory": lambda: memory_section(plan, runs, files, settings),
            "dense": lambda: speedup_section(
                "dense", plan.dense, plan, runs, files, goal=DENSE_SPEEDUP_GOAL
            ),
            "agents": lambda: speedup_section(
                "agents", plan.agents, plan, runs, files, goal=AGENTS_SPEEDUP_GOAL
            ),
            "throttle": lambda: throttle_section(plan, runs, files),
            "pacing": lambda: pacing_section(
                plan.pacing, runs, files, settings, scale=args.pacing_scale
            ),
            "history": lambda: history_section(files, settings),
            "following": lambda: following_section(
                plan.following_calls_per_agent, plan.following_many, files
            ),
            "profile": lambda: profile_section(plan.overhead, files),
        }
        for section in sections:
            section_rows = run_section(section, section_runs[section])
            failed = failed or any(row.tap == "FAILED" for row in section_rows)
            rows += section_rows
    elapsed = time.perf_counter() - started
    print_summary(rows, machine, elapsed, quick=args.quick)
    return 1 if failed else 0


def run_section(name: str, section: Callable[[], list[Row]]) -> list[Row]:
    """A section's summary rows; a failure becomes a row, and the other sections still run."""
    started = time.perf_counter()
    try:
        return section()
    except BenchmarkError as exc:
        print(f"\n{name} FAILED: {exc}")
        return [Row(name, "FAILED", "", met="no")]
    finally:
        print(f"  ({name}: {time.perf_counter() - started:.0f} s)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run each (< 1 min)")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile one tap run (cProfile, top 15)"
    )
    parser.add_argument(
        "--pacing-scale",
        type=float,
        default=PACING_SCALE,
        help=f"how many times faster than Bolna the pacing limits run (default {PACING_SCALE})",
    )
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------- sections


def overhead_section(size: WorldSize, runs: int, files: TapFiles) -> list[Row]:
    """tap-bolna vs a bare requests loop reading the same calls, as alternating processes."""
    heading(f"Overhead: tap-bolna vs a bare requests loop, {size.describe()}, page_size 50")
    print(
        "  Both sides are child processes: interpreter start-up and imports are included.\n"
        "  Both walk the same 7-day windows, from each agent's created_at less a day to now\n"
        "  (the tap: no start_date). Paces lifted, the fake's rate limits off: the tap's own\n"
        "  cost. Catalog: only `executions` selected (`agents`, its parent, is still read\n"
        "  once but not emitted)."
    )
    tap_startup_argv = [str(TAP), "--about", "--format=json"]
    bare_startup_argv = [sys.executable, "-c", "import json, requests"]
    taps: list[Measurement] = []
    singles: list[Measurement] = []
    bares: list[Measurement] = []
    tap_startups: list[float] = []
    bare_startups: list[float] = []
    with fake_api(size) as api:
        tap_argv = files.tap_argv(files.config(api))  # the default settings
        single_argv = files.tap_argv(files.config(api, max_workers=1))
        for run in range(1, runs + 1):
            taps.append(measure(api, tap_argv, stream="executions"))
            bares.append(measure(api, bare_loop_argv(api)))
            singles.append(measure(api, single_argv, stream="executions"))
            tap_startups.append(startup_seconds(tap_startup_argv))
            bare_startups.append(startup_seconds(bare_startup_argv))
            print(
                f"  run {run}/{runs}: tap {brief(taps[-1])} | bare {brief(bares[-1])} "
                f"| tap, 1 worker {brief(singles[-1])}"
            )

    tap_wall, bare_wall = median_of(taps, "wall_seconds"), median_of(bares, "wall_seconds")
    tap_cpu, bare_cpu = median_of(taps, "cpu_seconds"), median_of(bares, "cpu_seconds")
    print(
        f"\n  {'':22} {'wall median':>11}  {'runs':<22} {'CPU':>7} {'peak RSS':>9} "
        f"{'requests':>8} {'records':>8}"
    )
    for label, side in (
        ("tap-bolna (defaults)", taps),
        ("bare requests loop", bares),
        ("tap-bolna, 1 worker", singles),
    ):
        print(
            f"  {label:22} {median_of(side, 'wall_seconds'):>9.2f} s  "
            f"{spread([m.run.wall_seconds for m in side]):<22} "
            f"{median_of(side, 'cpu_seconds'):>5.2f} s {median_of(side, 'peak_rss_mb'):>6.1f} MB "
            f"{side[-1].requests:>8,} {side[-1].records:>8,}"
        )
    ratio = tap_wall / bare_wall
    print(
        f"  ratio tap/bare: wall {ratio:.2f}x (goal <= {OVERHEAD_GOAL}), "
        f"CPU {tap_cpu / bare_cpu:.2f}x"
    )
    tap_start, bare_start = statistics.median(tap_startups), statistics.median(bare_startups)
    net_ratio = (tap_wall - tap_start) / max(bare_wall - bare_start, 1e-9)
    print(
        f"  start-up alone: `tap-bolna --about` {tap_start:.2f} s, `python -c 'import requests'` "
        f"{bare_start:.2f} s;\n  ratio without start-up: {net_ratio:.2f}x"
    )
    check_same_data(size, taps[-1], bares[-1])
    single_wall = median_of(singles, "wall_seconds")
    return [
        Row(
            f"overhead {size.calls:,} calls, wall",
            f"{tap_wall:.2f} s",
            f"{bare_wall:.2f} s",
            f"{ratio:.2f}x",
            f"<= {OVERHEAD_GOAL}x",
            yes_no(ratio <= OVERHEAD_GOAL),
        ),
        Row(
            "  same, CPU (user+sys)",
            f"{tap_cpu:.2f} s",
            f"{bare_cpu:.2f} s",
            f"{tap_cpu / bare_cpu:.2f}x",
        ),
        Row(
            "  same, without start-up",
            f"{tap_wall - tap_start:.2f} s",
            f"{bare_wall - bare_start:.2f} s",
            f"{net_ratio:.2f}x",
        ),
        Row(
            "  same, requests",
            f"{taps[-1].requests:,}",
            f"{bares[-1].requests:,}",
            f"{taps[-1].requests / bares[-1].requests:.2f}x",
        ),
        Row(
            "  same, tap with max_workers=1, wall",
            f"{single_wall:.2f} s",
            f"{bare_wall:.2f} s",
            f"{single_wall / bare_wall:.2f}x",
        ),
    ]


def memory_section(
    plan: Plan, runs: int, files: TapFiles, settings: Mapping[str, object]
) -> list[Row]:
    """Peak RSS of the tap for 10x the calls, alternating the two sizes."""
    small, large = plan.overhead, plan.memory_large
    heading(f"Memory: peak RSS of tap-bolna, {small.calls:,} vs {large.calls:,} calls")
    print(f"  small: {small.describe()}\n  large: {large.describe()}")
    smalls: list[Measurement] = []
    larges: list[Measurement] = []
    with contextlib.ExitStack() as stack:
        small_api = stack.enter_context(fake_api(small))
        large_api = stack.enter_context(fake_api(large))
        small_argv = files.tap_argv(files.config(small_api))
        large_argv = files.tap_argv(files.config(large_api))
        for run in range(1, runs + 1):
            smalls.append(measure(small_api, small_argv, stream="executions"))
            larges.append(measure(large_api, large_argv, stream="executions"))
            print(f"  run {run}/{runs}: small {brief(smalls[-1])} | large {brief(larges[-1])}")
        parallel: tuple[Measurement, Measurement] | None = None
        if plan.memory_with_fewer_workers and "max_workers" in settings:
            workers = plan.parallel_workers
            parallel = (
                measure(
                    small_api,
                    files.tap_argv(files.config(small_api, max_workers=workers)),
                    stream="executions",
                ),
                measure(
                    large_api,
                    files.tap_argv(files.config(large_api, max_workers=workers)),
                    stream="executions",
                ),
            )
            print(
                f"  max_workers={workers}, 1 run: small {brief(parallel[0])} "
                f"| large {brief(parallel[1])}"
            )

    small_rss, large_rss = median_of(smalls, "peak_rss_mb"), median_of(larges, "peak_rss_mb")
    ratio = large_rss / small_rss
    flat = abs(ratio - 1) <= MEMORY_TOLERANCE
    print(
        f"\n  peak RSS (median): {small_rss:.1f} MB vs {large_rss:.1f} MB, ratio {ratio:.2f}x "
        f"(goal: flat within +-{MEMORY_TOLERANCE:.0%}: {yes_no(flat)})"
    )
    for label, side in (("small", smalls), ("large", larges)):
        wall = median_of(side, "wall_seconds")
        print(f"  {label}: wall {wall:.2f} s, {side[-1].records / wall:,.0f} records/s")
    rows = [
        Row(
            f"peak RSS {small.calls:,} -> {large.calls:,} calls",
            f"{large_rss:.1f} MB",
            f"{small_rss:.1f} MB",
            f"{ratio:.2f}x",
            f"1 +-{MEMORY_TOLERANCE}",
            yes_no(flat),
        )
    ]
    if parallel is not None:
        parallel_ratio = parallel[1].run.peak_rss_mb / parallel[0].run.peak_rss_mb
        print(
            f"  max_workers={plan.parallel_workers}: {parallel[0].run.peak_rss_mb:.1f} MB vs "
            f"{parallel[1].run.peak_rss_mb:.1f} MB, ratio {parallel_ratio:.2f}x (1 run each)"
        )
        rows.append(
            Row(
                f"  same, max_workers={plan.parallel_workers} (1 run)",
                f"{parallel[1].run.peak_rss_mb:.1f} MB",
                f"{parallel[0].run.peak_rss_mb:.1f} MB",
                f"{parallel_ratio:.2f}x",
                f"1 +-{MEMORY_TOLERANCE}",
                yes_no(abs(parallel_ratio - 1) <= MEMORY_TOLERANCE),
            )
        )
    return rows


def speedup_section(  # noqa: PLR0913
    name: str, size: WorldSize, plan: Plan, runs: int, files: TapFiles, *, goal: float
) -> list[Row]:
    """Wall time with max_workers 1, 4 and 8 when every response takes `latency_seconds`."""
    counts = (1, plan.parallel_workers, plan.most_workers)
    heading(
        f"Latency-bound ({name}): max_workers {' vs '.join(map(str, counts))}, "
        f"{size.describe()}, {plan.latency_seconds} s per response"
    )
    sides: dict[int, list[Measurement]] = {workers: [] for workers in counts}
    with fake_api(size, latency=plan.latency_seconds) as api:
        print(f"  {describe_windows(api.world)}: the pages of a window in parallel.")
        argvs = {w: files.tap_argv(files.config(api, max_workers=w)) for w in counts}
        for run in range(1, runs + 1):
            for workers in counts:
                sides[workers].append(measure(api, argvs[workers], stream="executions"))
            print(
                f"  run {run}/{runs}: "
                + " | ".join(f"{w} worker(s) {brief(sides[w][-1])}" for w in counts)
            )
    walls = {w: median_of(side, "wall_seconds") for w, side in sides.items()}
    serial = walls[1]
    floor = sides[1][-1].requests * plan.latency_seconds
    print(
        "\n  wall (median): "
        + ", ".join(f"{walls[w]:.2f} s with {w}" for w in counts)
        + f"\n  requests: {sides[1][-1].requests:,}; {floor:.1f} s of waiting in series"
    )
    for workers in counts[1:]:
        print(f"  speed-up with {workers} workers: {serial / walls[workers]:.2f}x")
    check_records(size, [side[-1] for side in sides.values()])
    label = f"{name}: {size.calls:,} calls, {size.agents} agent(s), 0.1 s/request"
    parallel, most = plan.parallel_workers, plan.most_workers
    return [
        Row(
            f"{label}, workers 1 vs {parallel}",
            f"{walls[parallel]:.2f} s",
            f"{serial:.2f} s",
            f"{serial / walls[parallel]:.2f}x faster",
            f">= {goal}x",
            yes_no(serial / walls[parallel] >= goal),
        ),
        Row(
            f"  same, workers 1 vs {most}",
            f"{walls[most]:.2f} s",
            f"{serial:.2f} s",
            f"{serial / walls[most]:.2f}x faster",
        ),
    ]


def throttle_section(plan: Plan, runs: int, files: TapFiles) -> list[Row]:
    """max_workers 8 against a server that refuses (429, Retry-After: 1) beyond 2 in flight."""
    size, most = plan.throttle, plan.most_workers
    heading(
        f"Throttled: a server allowing {SERVER_CAP} requests in flight (429 + Retry-After: 1 "
        f"beyond), max_workers {most} vs {SERVER_CAP}, {size.describe()}, "
        f"{plan.latency_seconds} s per response"
    )
    eager: list[Measurement] = []
    matched: list[Measurement] = []
    with fake_api(size, latency=plan.latency_seconds, max_in_flight=SERVER_CAP) as api:
        eager_argv = files.tap_argv(files.config(api, max_workers=most))
        matched_argv = files.tap_argv(files.config(api, max_workers=SERVER_CAP))
        for run in range(1, runs + 1):
            eager.append(measure(api, eager_argv, stream="executions", allow_throttled=True))
            matched.append(measure(api, matched_argv, stream="executions", allow_throttled=True))
            print(
                f"  run {run}/{runs}: {most} workers {brief(eager[-1])}, "
                f"{eager[-1].throttled} answered 429 | {SERVER_CAP} workers {brief(matched[-1])}"
            )
    share = statistics.median(m.throttled / m.requests for m in eager)
    eager_wall, matched_wall = median_of(eager, "wall_seconds"), median_of(matched, "wall_seconds")
    print(
        f"\n  answered 429 (median share): {share:.1%} of requests with {most} workers "
        f"(goal < {THROTTLED_SHARE_GOAL:.0%}); wall {eager_wall:.2f} s vs {matched_wall:.2f} s "
        f"with max_workers {SERVER_CAP}"
    )
    check_records(size, [eager[-1], matched[-1]])
    return [
        Row(
            f"throttle: share of 429s, workers {most}, server cap {SERVER_CAP}",
            f"{share:.1%}",
            "",
            "",
            f"< {THROTTLED_SHARE_GOAL:.0%}",
            yes_no(share < THROTTLED_SHARE_GOAL),
        ),
        Row(
            f"  same, wall: workers {most} vs {SERVER_CAP}",
            f"{eager_wall:.2f} s",
            f"{matched_wall:.2f} s",
            f"{eager_wall / matched_wall:.2f}x",
        ),
    ]


def describe_windows(world: World) -> str:
    """How the first sync's windows (as bare_loop.py walks them) split each agent's calls."""
    now = dt.datetime.now(dt.timezone.utc)
    walked, holding, densest = 0, 0, 0
    with world.lock:
        for agent_id, agent in world.agents.items():
            for created_from, created_to in first_sync_windows(agent["created_at"], now):
                total, _ = world.list_executions(
                    agent_id,
                    created_from=parse_query_time(created_from, name="from", round_up=True),
                    created_to=parse_query_time(created_to, name="to", round_up=False),
                    page_size=1,
                )
                walked += 1
                holding += total > 0
                densest = max(densest, total)
    agents = len(world.agents)
    return (
        f"{walked / agents:g} 7-day windows per agent from its created_at less a day, "
        f"{holding / agents:g} of them with calls (the densest {densest:,} calls)"
    )


def check_records(size: WorldSize, measurements: list[Measurement]) -> None:
    """Warn when a run did not emit every call of the world."""
    wrong = [m.records for m in measurements if m.records != size.calls]
    if wrong:
        print(f"  WARNING: runs emitted {wrong} records, the world has {size.calls:,}")
    else:
        print(f"  every run emitted all {size.calls:,} calls")


def profile_section(size: WorldSize, files: TapFiles) -> list[Row]:
    """One tap run under cProfile; the functions with the most own time."""
    heading(f"Profile: one tap-bolna run under cProfile, {size.describe()}")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    profile_path = Path(tempfile.gettempdir()) / f"tap-bolna-{stamp}.prof"
    with fake_api(size) as api:
        config = files.config(api)
        catalog = files.executions_catalog(config)
        argv = [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(profile_path),
            "-m",
            "tap_bolna",
            "--config",
            str(config),
            "--catalog",
            str(catalog),
        ]
        profiled = measure(api, argv, stream="executions")
    print(
        f"  {brief(profiled)} (profiling slows it down; main thread only, so with the default "
        f"max_workers 1 the whole sync)\n  full profile: {profile_path} (e.g. `snakeviz` it)"
    )
    print_profile(profile_path, PROFILE_TOP)
    return [Row("profile (cProfile)", f"{profiled.run.wall_seconds:.2f} s", "", "", "", "")]


def print_profile(path: Path, top: int) -> None:
    """The `top` functions by own time (tottime), with call counts and cumulative time."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, ct, callers)}
    total = sum(values[2] for values in entries.values()) or 1.0
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    print(f"\n  {'own s':>7} {'own %':>6} {'cum s':>7} {'calls':>10}  function")
    for (filename, line, name), (_, calls, own, cumulative, _) in ranked:
        print(
            f"  {own:>7.3f} {own / total:>6.1%} {cumulative:>7.3f} {calls:>10,}  "
            f"{short_location(filename, line, name)}"
        )
    print(f"  (total own time {total:.2f} s)")


def short_location(filename: str, line: int, name: str) -> str:
    """`module/path.py:line(name)` without the site-packages or project prefix."""
    for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            if marker == "/lib/python3":
                filename = "stdlib" + filename[filename.find("/") :]
            break
    return f"{filename}:{line}({name})" if line else name


# ---------------------------------------------------------------------------------- printing


def check_same_data(size: WorldSize, tap: Measurement, bare: Measurement) -> None:
    """Warn when the two sides did not read the same number of calls."""
    if tap.records == bare.records == size.calls:
        print(f"  both read all {size.calls:,} calls")
    else:
        print(
            f"  WARNING: tap emitted {tap.records:,} records, bare loop {bare.records:,}, "
            f"world has {size.calls:,}: the comparison is not like for like"
        )


def print_summary(rows: list[Row], machine: dict[str, str], elapsed: float, *, quick: bool) -> None:
    """The plain-text table the README quotes."""
    heading("Summary")
    header = Row("measure", "tap-bolna", "baseline", "ratio", "goal", "met")
    table = [header, *rows]
    widths = [max(len(getattr(row, field)) for row in table) for field in Row.__dataclass_fields__]
    for row in table:
        cells = [getattr(row, field) for field in Row.__dataclass_fields__]
        print(
            "  "
            + "  ".join(
                cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
            ).rstrip()
        )
    print(
        "  baselines: overhead = bare requests loop; peak RSS = the smaller history; "
        "dense/agents = max_workers 1; throttle = max_workers matching the server's cap;\n"
        "  pacing = the admitted requests at the pace the limit leaves the tap; following = "
        "reading the 7-day windows of the followed calls again"
    )
    if quick:
        print("  quick run: sizes are too small for the goals to mean anything")
    for name, value in machine.items():
        print(f"  {name}: {value}")
    print(f"  benchmark took {elapsed / 60:.1f} min")


def startup_seconds(argv: list[str]) -> float:
    """Wall time of a command that only starts up (imports) and exits."""
    run = run_child(argv)
    if run.exit_code != 0:
        msg = f"{' '.join(argv)} exited with {run.exit_code}:\n{run.tail()}"
        raise BenchmarkError(msg)
    return run.wall_seconds


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: child processes and the fake API were stopped", file=sys.stderr)
        sys.exit(130)
