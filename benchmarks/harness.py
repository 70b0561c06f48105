"""Plumbing for the benchmarks: measured child processes, the fake API, the tap's files."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from tests.fake_api import FakeBolnaServer, World

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from tests.fake_api.rate_limits import RateLimit
    from tests.fake_api.server import LoggedRequest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the project venv that runs the benchmark also runs the tap
TAP = BIN / "tap-bolna"
BARE_LOOP = Path(__file__).with_name("bare_loop.py")
LAUNCHER = Path(__file__).with_name("launch.py")
API_KEY = "bench-key"
PAGE_SIZE = 50
CHILD_TIMEOUT_SECONDS = 1800.0
# The paces every section but "pacing" gives the tap: far above anything the fake serves, so
# those sections measure the tap's own cost and parallelism, not its default pace (300 a
# minute on the agent routes) waiting for Bolna's documented limit.
UNPACED_PER_MINUTE = 1_000_000


class BenchmarkError(RuntimeError):
    """A benchmark could not produce a figure (a child failed, or read the wrong data)."""


@dataclass(frozen=True)
class WorldSize:
    """How much call history the fake API serves."""

    agents: int
    calls: int  # in total, spread over the agents
    days: float
    transcript_bytes: tuple[int, int] = (1000, 2000)

    def describe(self) -> str:
        low, high = self.transcript_bytes
        return (
            f"{self.calls:,} executions, {self.agents} agents, {self.days:g} days, "
            f"transcripts {low}-{high} B"
        )


def generate_world(size: WorldSize, *, seed: int = 1) -> World:
    """A world of `size`, generated (and timed) as every section does."""
    started = time.perf_counter()
    world = World.generate(
        seed=seed,
        agents=size.agents,
        calls=size.calls,
        days=size.days,
        transcript_bytes=size.transcript_bytes,
    )
    print(f"  (fake API: generated {size.describe()} in {time.perf_counter() - started:.1f} s)")
    return world


@contextlib.contextmanager
def fake_api(
    size: WorldSize,
    *,
    latency: float = 0.0,
    max_in_flight: int | None = None,
    rate_limits: Mapping[str, RateLimit | None] | None = None,
) -> Iterator[TimedFakeBolnaServer]:
    """Generate a world of `size` and serve it on 127.0.0.1 until the block ends (see `serve`)."""
    world = generate_world(size)
    try:
        with serve(
            world, latency=latency, max_in_flight=max_in_flight, rate_limits=rate_limits
        ) as api:
            yield api
    finally:
        del world


@contextlib.contextmanager
def serve(
    world: World,
    *,
    latency: float = 0.0,
    max_in_flight: int | None = None,
    rate_limits: Mapping[str, RateLimit | None] | None = None,
) -> Iterator[TimedFakeBolnaServer]:
    """Serve `world` on 127.0.0.1 until the block ends.

    Without `rate_limits` the fake's per-organisation limits are off (its default is Bolna's
    500 and 1,000 a minute): only the "pacing" section sets them. With `max_in_flight`,
    requests beyond that many at once get 429 with `Retry-After: 1`.
    """
    # The server threads run in this process: keep the cycle collector off the world's objects.
    gc.freeze()
    try:
        with TimedFakeBolnaServer(world, api_key=API_KEY, rate_limits=rate_limits) as api:
            api.latency = latency
            api.max_in_flight = max_in_flight
            api.in_flight_retry_after = "1"
            yield api
    finally:
        gc.unfreeze()


class TimedFakeBolnaServer(FakeBolnaServer):
    """The fake API, also noting when it answered each request (to time a sync's requests)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        """As FakeBolnaServer."""
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._answered_at: list[float] = []
        self._times_lock = threading.Lock()

    def log(self, entry: LoggedRequest) -> None:
        """Record one answered request, and the moment it was answered."""
        with self._times_lock:
            self._answered_at.append(time.monotonic())
        super().log(entry)

    def clear_requests(self) -> None:
        """Forget the requests logged so far, and their times."""
        with self._times_lock:
            self._answered_at.clear()
        super().clear_requests()

    def request_span_seconds(self) -> float:
        """Seconds from the first answer logged to the last (0 with fewer than two)."""
        with self._times_lock:
            times = list(self._answered_at)
        return times[-1] - times[0] if len(times) > 1 else 0.0


@dataclass(frozen=True)
class ChildRun:
    """One finished child process and what it cost, from its own rusage (see launch.py)."""

    exit_code: int
    wall_seconds: float
    cpu_seconds: float  # user + system
    peak_rss_mb: float
    stderr: str

    def tail(self, lines: int = 15) -> str:
        """The end of the child's stderr, to explain a failure."""
        return "\n".join(self.stderr.splitlines()[-lines:])


def child_environment() -> dict[str, str]:
    """This environment without tap settings a developer may have exported."""
    return {name: value for name, value in os.environ.items() if not name.startswith("TAP_BOLNA_")}


def run_child(
    argv: list[str], *, timeout: float = CHILD_TIMEOUT_SECONDS, stdout: Path | None = None
) -> ChildRun:
    """Run `argv` through `launch.py`, which measures it; stdout to `stdout` or /dev/null."""
    with (
        tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as stderr,
        tempfile.NamedTemporaryFile(mode="r", encoding="utf-8", suffix=".rusage") as report,
        contextlib.ExitStack() as output,
    ):
        sink = subprocess.DEVNULL if stdout is None else output.enter_context(stdout.open("wb"))
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(LAUNCHER), report.name, *argv],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=stderr,
            cwd=ROOT,
            env=child_environment(),
            start_new_session=True,  # one process group to end, whatever happens here
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            msg = f"{Path(argv[0]).name} still running after {timeout:.0f} s"
            raise BenchmarkError(msg) from None
        finally:
            stop_process_group(process)
        fields = report.read().split()
        stderr.seek(0)
        if len(fields) != 4:
            msg = f"no measurement for {Path(argv[0]).name}:\n{stderr.read()[-2000:]}"
            raise BenchmarkError(msg)
        return ChildRun(
            exit_code=int(fields[0]),
            wall_seconds=float(fields[1]),
            cpu_seconds=float(fields[2]),
            peak_rss_mb=int(fields[3]) / 1024,  # KiB on Linux
            stderr=stderr.read(),
        )


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """End the launcher and the command it runs if they are still there (Ctrl-C, timeout)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass(frozen=True)
class Measurement:
    """A child run plus what the fake API saw during it."""

    run: ChildRun
    requests: int
    records: int
    throttled: int = 0  # requests answered 429
    peak_in_flight: int = 0
    answered: tuple[LoggedRequest, ...] = ()  # every request, as the fake API logged it


def measure(
    api: FakeBolnaServer,
    argv: list[str],
    *,
    stream: str | None = None,
    allow_throttled: bool = False,
    stdout: Path | None = None,
) -> Measurement:
    """Run one child against `api`; count the requests it sent and the records it emitted.

    With `stream`, records come from the tap's `record_count` metrics for that stream;
    without, from the `records=N` line the bare loop prints. Any answer but 200 (or 429,
    with `allow_throttled`) fails the measurement. `stdout` keeps the child's output.
    """
    api.clear_requests()
    run = run_child(argv, stdout=stdout)
    answered = api.requests
    if run.exit_code != 0:
        msg = f"{Path(argv[0]).name} exited with {run.exit_code}:\n{run.tail()}"
        raise BenchmarkError(msg)
    throttled = sum(request.status == 429 for request in answered) if allow_throttled else 0
    failed = [r for r in answered if r.status != 200 and not (allow_throttled and r.status == 429)]
    if failed:
        msg = f"{len(failed)} request(s) failed, first: {failed[0]}"
        raise BenchmarkError(msg)
    records = emitted_records(run.stderr, stream) if stream else bare_loop_records(run.stderr)
    return Measurement(run, len(answered), records, throttled, api.peak_in_flight, tuple(answered))


def emitted_records(stderr: str, stream: str) -> int:
    """Sum of the SDK's `record_count` counters for `stream` (each logs and resets)."""
    total = 0
    for line in stderr.splitlines():
        _, marker, payload = line.partition("METRIC: ")
        if marker and '"record_count"' in payload:
            metric = json.loads(payload)
            if metric.get("metric") == "record_count" and metric["tags"].get("stream") == stream:
                total += int(metric["value"])
    return total


def bare_loop_records(stderr: str) -> int:
    """The count the bare loop prints last."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("records="):
            return int(line.removeprefix("records="))
    msg = f"the bare loop printed no record count:\n{stderr[-2000:]}"
    raise BenchmarkError(msg)


class TapFiles:
    """Config and catalog files for tap runs, in one directory."""

    def __init__(self, directory: Path) -> None:
        """Write files under `directory` (a temporary one, normally)."""
        self.directory = directory
        self._written = 0
        self._catalog: Path | None = None

    def config(self, api: FakeBolnaServer, **settings: object) -> Path:
        """A config file for `api`, with `settings` over these defaults.

        No start_date: the first sync walks 7-day windows from each agent's created_at less
        a day. Both paces at UNPACED_PER_MINUTE unless `settings` give them.
        """
        self._written += 1
        path = self.directory / f"config-{self._written}.json"
        config = {
            "api_key": API_KEY,
            "api_url": api.url,
            "page_size": PAGE_SIZE,
            "max_requests_per_minute": UNPACED_PER_MINUTE,
            "max_other_requests_per_minute": UNPACED_PER_MINUTE,
            **settings,
        }
        path.write_text(json.dumps(config), encoding="utf-8")
        return path

    def executions_catalog(self, config: Path) -> Path:
        """The discovered catalog with only `executions` selected (made once, reused).

        `agents` stays deselected: the SDK still syncs a deselected parent to give its
        children their contexts (one request), but emits none of its records.
        """
        if self._catalog is None:
            discovered = subprocess.run(
                [str(TAP), "--config", str(config), "--discover"],
                capture_output=True,
                check=True,
                cwd=ROOT,
                env=child_environment(),
                timeout=120,
            )
            catalog = json.loads(discovered.stdout)
            for stream in catalog["streams"]:
                for entry in stream["metadata"]:
                    if entry["breadcrumb"] == []:
                        entry["metadata"]["selected"] = stream["tap_stream_id"] == "executions"
            self._catalog = self.directory / "catalog-executions.json"
            self._catalog.write_text(json.dumps(catalog), encoding="utf-8")
        return self._catalog

    def tap_argv(self, config: Path, state: Path | None = None) -> list[str]:
        """The command line of one sync of the executions stream (from `state`, if given)."""
        argv = [
            str(TAP),
            "--config",
            str(config),
            "--catalog",
            str(self.executions_catalog(config)),
        ]
        return argv if state is None else [*argv, "--state", str(state)]


def last_state(singer_output: Path) -> dict[str, object]:
    """The value of the last STATE message a tap wrote (its bookmark for the next sync)."""
    state: dict[str, object] = {}
    with singer_output.open(encoding="utf-8") as lines:
        for line in lines:
            if '"STATE"' in line[:40]:  # records are long; a STATE line says so at once
                state = json.loads(line)["value"]
    return state


def bare_loop_argv(api: FakeBolnaServer) -> list[str]:
    """The command line of one bare-loop run against `api`."""
    return [sys.executable, str(BARE_LOOP), api.url, API_KEY, str(PAGE_SIZE)]


def tap_settings() -> dict[str, dict[str, object]]:
    """The settings the installed tap accepts, by name, with their schema (from `--about`)."""
    about = subprocess.run(
        [str(TAP), "--about", "--format=json"],
        capture_output=True,
        check=True,
        cwd=ROOT,
        env=child_environment(),
        timeout=120,
    )
    properties: dict[str, dict[str, object]] = json.loads(about.stdout)["settings"]["properties"]
    return properties


def machine_info() -> dict[str, str]:
    """What a reader needs to judge the figures: CPU, Python, versions, date, load."""
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu_model}, nproc {usable} (os.cpu_count {os.cpu_count()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "versions": f"tap-bolna {tap_revision()}, singer-sdk {package_version('singer-sdk')}, "
        f"requests {package_version('requests')}",
        "load average (1/5/15 min)": load,
    }


def package_version(name: str) -> str:
    """Installed version of a distribution, or `?`."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def tap_revision() -> str:
    """The git commit of the tap's code, with `+changes` when tap_bolna/ has local edits."""
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, check=True, cwd=ROOT
            )
            .stdout.decode()
            .strip()
        )
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "tap_bolna"],
            capture_output=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "(no git)"
    return f"{commit}+changes" if changes else commit
