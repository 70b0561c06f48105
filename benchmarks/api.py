"""Benchmark of the HTTP endpoint (`meltano invoke bolna-api`) over a 200,000-call warehouse.

    uv run python -m benchmarks.api            # 200,000 calls, 16 clients, ~3 min on 2 cores
    uv run python -m benchmarks.api --quick    # 20,000 calls, short runs: a smoke test

A throwaway PostgreSQL gets one big agent (110,000 calls) and 40 others (2,250 each) over a year,
written straight into the loaded tables (benchmarks/api_warehouse.py, no tap), and the real dbt
build. Then the real server is started as Meltano starts it, and 16 clients (one keep-alive
connection each, asyncio, in this process) send requests back to back for a fixed time per
scenario. Every answer must be HTTP 200 with a body; errors are counted and printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import random
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from benchmarks.api_warehouse import MELTANO, ROOT, Account, build_models, generate, load
from benchmarks.api_warehouse import meltano_environment as environment
from tests.postgres import PostgresServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CLIENTS = 16
PAGE_SIZE = 50
DEEP_PAGE = 2000
P95_GOAL_MS = 50.0
LISTENING = re.compile(r"Serving schema \S+ of .* on http://127\.0\.0\.1:(\d+)/")


@dataclass
class Scenario:
    """Requests of one kind, and what they measured."""

    name: str
    next_path: Callable[[random.Random], str]
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def row(self) -> str:
        """One line of the results table."""
        ms = sorted(1000 * latency for latency in self.latencies)
        if not ms:
            return f"| {self.name} | 0 | {len(self.errors)} | | | | |"
        rate = len(ms) / self.seconds
        return (
            f"| {self.name} | {len(ms):,} | {len(self.errors)} | {rate:,.0f} | "
            f"{percentile(ms, 50):.1f} | {percentile(ms, 95):.1f} | {percentile(ms, 99):.1f} |"
        )


def iso(moment: dt.datetime) -> str:
    """UTC, with a Z, as clients send it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def percentile(sorted_values: list[float], share: int) -> float:
    """The value below which `share` percent of the values are (nearest rank)."""
    rank = max(0, min(len(sorted_values) - 1, -(-share * len(sorted_values) // 100) - 1))
    return sorted_values[rank]


async def client(port: int, scenario: Scenario, seed: int, stop_at: float) -> None:
    """One keep-alive connection sending requests back to back until `stop_at`."""
    rng = random.Random(seed)  # noqa: S311 - which page to ask for, not a secret
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            path = scenario.next_path(rng)
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
            body = await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            if status != 200 or not body.startswith(b'{"success": true'):
                scenario.errors.append(f"HTTP {status} for {path}: {body[:200]!r}")
            else:
                scenario.latencies.append(elapsed)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def run_scenario(port: int, scenario: Scenario, seconds: float, warmup: float) -> None:
    """CLIENTS clients for `warmup` (not counted), then for `seconds`."""
    warm = Scenario(scenario.name, scenario.next_path)
    end = time.perf_counter() + warmup
    await asyncio.gather(*(client(port, warm, n, end) for n in range(CLIENTS)))
    started = time.perf_counter()
    await asyncio.gather(
        *(client(port, scenario, 1000 + n, started + seconds) for n in range(CLIENTS))
    )
    scenario.seconds = time.perf_counter() - started


def scenarios(account: Account) -> list[Scenario]:
    """Random agents and pages; page 1 and 2,000 of the big agent; dates; a status; by id."""
    agents = sorted(account.calls_per_agent)
    pages = {agent: -(-count // PAGE_SIZE) for agent, count in account.calls_per_agent.items()}
    big = account.big_agent

    def listing(**query: object) -> str:
        return "/api/executions?" + urlencode({"page_size": PAGE_SIZE, **query})

    def random_page(rng: random.Random) -> str:
        agent = rng.choice(agents)
        return listing(agent_id=agent, page_number=rng.randint(1, pages[agent]))

    def random_month(rng: random.Random) -> str:
        start = account.oldest + (account.newest - account.oldest) * rng.random()
        end = start + dt.timedelta(days=30)
        return listing(agent_id=rng.choice(agents), **{"from": iso(start), "to": iso(end)})

    return [
        Scenario("random agents, random pages (page_number)", random_page),
        Scenario("big agent, page 1", lambda _rng: listing(agent_id=big, page_number=1)),
        Scenario(
            f"big agent, page {DEEP_PAGE:,} (deep)",
            lambda _rng: listing(agent_id=big, page_number=DEEP_PAGE),
        ),
        Scenario("random agents, 30 days from a random day, page 1 (from/to)", random_month),
        Scenario(
            "random agents, status=completed, pages 1-20 (counted)",
            lambda rng: listing(
                agent_id=rng.choice(agents), status="completed", page_number=rng.randint(1, 20)
            ),
        ),
        Scenario(
            "one call by id (GET /api/executions/{id})",
            lambda rng: f"/api/executions/{rng.choice(account.sample_ids)}",
        ),
    ]


@contextlib.contextmanager
def server(env: dict[str, str]) -> Iterator[int]:
    """`meltano invoke bolna-api --port 0`; yields its port."""
    process = subprocess.Popen(
        [MELTANO, "invoke", "bolna-api", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if match := LISTENING.search(line):
                yield int(match.group(1))
                break
        else:
            msg = "bolna-api did not start"
            raise RuntimeError(msg)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def single(port: int, path: str) -> tuple[float, int]:
    """One request with curl's timer: seconds and bytes."""
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total} %{size_download} %{http_code}",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if out[2] != "200":
        msg = f"HTTP {out[2]} for {path}"
        raise RuntimeError(msg)
    return float(out[0]), int(out[1])


def main(argv: list[str] | None = None) -> int:
    """Load, build, serve, measure, print."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api")
    parser.add_argument("--quick", action="store_true", help="20,000 calls, 3 s per scenario")
    parser.add_argument("--seconds", type=float, default=15.0, help="per scenario (default 15)")
    args = parser.parse_args(argv)
    big, others, seconds = (
        (110_000, 90_000, args.seconds) if not args.quick else (11_000, 9_000, 3.0)
    )
    started = time.perf_counter()
    with (
        PostgresServer() as postgres,
        tempfile.TemporaryDirectory(prefix="bolna-api-bench-") as tmp,
    ):
        database = postgres.create_database("warehouse")
        clock = time.perf_counter()
        worlds = generate(big, 40, others, days=365)
        with postgres.connect(database) as conn:
            account = load(conn, worlds)
            sample = conn.execute(
                "select id from bolna.executions tablesample system (1) limit 2000"
            )
            account.sample_ids.extend(row[0] for row in sample)
            server_version = conn.execute("show server_version").fetchone()[0]  # type: ignore[index]
        loaded = time.perf_counter() - clock
        env = environment(postgres, database, Path(tmp))
        build = build_models(env)
        print(
            f"Loaded {account.calls:,} calls ({len(account.calls_per_agent)} agents, the biggest "
            f"{account.calls_per_agent[account.big_agent]:,}) in {loaded:.1f} s; "
            f"dbt-postgres:build {build:.1f} s"
        )
        with server(env) as port:
            results = []
            for scenario in scenarios(account):
                asyncio.run(run_scenario(port, scenario, seconds, warmup=min(2.0, seconds / 3)))
                print(scenario.row(), flush=True)
                results.append(scenario)
            metrics_s, _ = single(port, "/api/metrics")
            metrics_agent_s, _ = single(port, f"/api/metrics?agent_id={account.big_agent}")
            csv_s, csv_bytes = single(port, "/api/executions.csv")
    print_report(results, account, (metrics_s, metrics_agent_s, csv_s, csv_bytes), server_version)
    print(f"\n({time.perf_counter() - started:.0f} s in all)")
    errors = sum(len(s.errors) for s in results)
    for scenario in results:
        for error in scenario.errors[:3]:
            print(f"ERROR {scenario.name}: {error}")
    return 1 if errors else 0


def print_report(
    results: list[Scenario],
    account: Account,
    singles: tuple[float, float, float, int],
    version: str,
) -> None:
    """The table, the goal, and the single requests."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"\n{account.calls:,} calls, {CLIENTS} clients, page_size {PAGE_SIZE}; "
        f"{os.cpu_count()} cores ({cpu}), PostgreSQL {version}, "
        f"CPython {platform.python_version()}"
    )
    print("\n| scenario | requests | errors | requests/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for scenario in results:
        print(scenario.row())
    first = sorted(results[0].latencies)
    p95 = 1000 * percentile(first, 95) if first else float("inf")
    verdict = "met" if p95 < P95_GOAL_MS else "NOT met"
    print(f"\nGoal, random agents: p95 < {P95_GOAL_MS:.0f} ms: {verdict} ({p95:.1f} ms)")
    metrics_s, metrics_agent_s, csv_s, csv_bytes = singles
    print(
        f"GET /api/metrics (all calls): {1000 * metrics_s:.0f} ms;"
        f" for the big agent: {1000 * metrics_agent_s:.0f} ms"
    )
    print(f"GET /api/executions.csv (every call): {csv_s:.1f} s, {csv_bytes / 1e6:.1f} MB")


if __name__ == "__main__":
    raise SystemExit(main())
