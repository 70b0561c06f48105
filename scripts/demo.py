"""Offline demo: the project's fake Bolna API -> `meltano run tap-bolna target-csv` -> a summary.

Run it with `make demo` (or `uv run python scripts/demo.py`). Nothing leaves this machine: the
fake API serves a generated account on 127.0.0.1, and the CSV files land in output/demo/.
The summary is computed from those CSV files, i.e. from what the pipeline really loaded.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))  # `tests.fake_api` lives in the repository, not the wheel

from tests.fake_api import PENDING_STATUSES, FakeBolnaServer, World  # noqa: E402

DEMO_API_KEY = "demo-key"
SOURCE_LINE = "Data source: the project's FAKE Bolna API (offline demo) — not your account"
FAILED_STATUSES = ("failed", "error")
ERROR_WORDS = ("error", "exception", "traceback")
NOT_CONNECTED_STATUSES = ("busy", "no-answer")
# Settings a user may have exported for real runs; the demo must not pick them up.
ISOLATED_PREFIXES = ("TAP_BOLNA_", "TARGET_CSV_")
ISOLATED_VARIABLES = (
    "MELTANO_DATABASE_URI",
    "MELTANO_ENVIRONMENT",
    "MELTANO_STATE_BACKEND_URI",
    "MELTANO_RUN_FULL_REFRESH",
    "MELTANO_RUN_STATE_ID_SUFFIX",
)


@dataclass
class AgentFigures:
    """Per-agent counters."""

    name: str
    calls: int = 0
    completed: int = 0
    completed_seconds: float = 0.0


@dataclass
class Summary:
    """What landed in the CSV files, in the figures the old hand-made reports used."""

    calls: int
    ids: set[str]
    by_status: Counter[str]
    completed_seconds: list[float]
    total_cost: float
    agents: dict[str, AgentFigures] = field(default_factory=dict)
    batches: int = 0

    @property
    def distinct_ids(self) -> int:
        """Number of different call ids (equals `calls` when nothing is duplicated)."""
        return len(self.ids)

    @property
    def completed(self) -> int:
        """Calls with status `completed`."""
        return self.by_status["completed"]

    @property
    def completion_rate(self) -> float:
        """Completed calls as a share of all calls."""
        return self.completed / self.calls if self.calls else 0.0

    @property
    def average_duration(self) -> float | None:
        """Mean conversation duration (seconds) of completed calls."""
        if not self.completed_seconds:
            return None
        return sum(self.completed_seconds) / len(self.completed_seconds)

    @property
    def failed(self) -> int:
        """Calls that ended in `failed` or `error`."""
        return sum(self.by_status[status] for status in FAILED_STATUSES)

    @property
    def pending(self) -> int:
        """Calls still in a status that can change."""
        return sum(self.by_status[status] for status in PENDING_STATUSES)


def say(text: str = "", *, error: bool = False) -> None:
    """Write one line to stdout (or stderr) at once, so it interleaves well with make's output."""
    stream = sys.stderr if error else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def read_csv(path: Path) -> list[dict[str, str]]:
    """Read the rows of one CSV file written by target-csv (none if the file is missing)."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def as_float(text: str | None) -> float | None:
    """Read a CSV cell as a number (None when empty or not numeric)."""
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def summarize(output_dir: Path) -> Summary:
    """Compute the summary from executions.csv, agents.csv and batches.csv."""
    executions = read_csv(output_dir / "executions.csv")
    agent_names = {
        row["id"]: row.get("agent_name") or row["id"] for row in read_csv(output_dir / "agents.csv")
    }
    summary = Summary(
        calls=len(executions),
        ids={row["id"] for row in executions},
        by_status=Counter(row.get("status") or "(none)" for row in executions),
        completed_seconds=[],
        total_cost=0.0,
        batches=len(read_csv(output_dir / "batches.csv")),
    )
    per_agent: dict[str, AgentFigures] = defaultdict(lambda: AgentFigures(name=""))
    for row in executions:
        agent = per_agent[row.get("agent_id", "")]
        agent.calls += 1
        summary.total_cost += as_float(row.get("total_cost")) or 0.0
        if row.get("status") != "completed":
            continue
        agent.completed += 1
        seconds = as_float(row.get("conversation_duration"))
        if seconds is None:
            seconds = as_float(row.get("telephony_data__duration"))
        if seconds is not None:
            summary.completed_seconds.append(seconds)
            agent.completed_seconds += seconds
    for agent_id, figures in per_agent.items():
        figures.name = agent_names.get(agent_id, agent_id)
    summary.agents = dict(sorted(per_agent.items(), key=lambda item: item[1].name))
    return summary


def minutes(seconds: float | None) -> str:
    """Format seconds as `2m 31s`."""
    if seconds is None:
        return "n/a"
    whole = round(seconds)
    return f"{whole // 60}m {whole % 60:02d}s"


def is_complete(summary: Summary, expected_ids: set[str]) -> bool:
    """Tell whether exactly the expected calls landed, one row each."""
    return summary.ids == expected_ids and summary.calls == len(expected_ids)


def render(summary: Summary, *, output_dir: Path, expected_ids: set[str] | None = None) -> str:
    """Format the printed report."""
    rule = "=" * 78
    lines = [
        rule,
        SOURCE_LINE,
        rule,
        f"Loaded by `meltano run tap-bolna target-csv` into {output_dir}/",
        (
            f"  agents: {len(summary.agents)}   calls (executions): {summary.calls}   "
            f"batches: {summary.batches}"
        ),
    ]
    if expected_ids is not None:
        verdict = (
            f"all {len(expected_ids)} calls the fake API holds landed, one row each"
            if is_complete(summary, expected_ids)
            else f"MISMATCH: the fake API holds {len(expected_ids)} calls; {summary.calls} rows, "
            f"{summary.distinct_ids} distinct ids, {len(expected_ids - summary.ids)} missing"
        )
        lines.append(f"  check: {verdict}")
    lines += ["", "Calls by status:"]
    for status, count in summary.by_status.most_common():
        share = count / summary.calls if summary.calls else 0.0
        lines.append(f"  {status:<18} {count:>6}  {share:6.1%}")
    failed_detail = ", ".join(f"{status} {summary.by_status[status]}" for status in FAILED_STATUSES)
    not_connected = sum(summary.by_status[status] for status in NOT_CONNECTED_STATUSES)
    lines += [
        "",
        (
            f"Completion rate:   {summary.completion_rate:.1%} "
            f"({summary.completed} of {summary.calls} calls completed)"
        ),
        (
            f"Average duration:  {minutes(summary.average_duration)} per completed call "
            "(conversation_duration)"
        ),
        f"Failed calls:      {summary.failed} ({failed_detail})",
        f"Not connected:     {not_connected} (busy or no-answer)",
        f"Still pending:     {summary.pending} (re-read by the next incremental run)",
        f"Total cost:        {summary.total_cost:,.2f} cents (total_cost)",
        "",
        "Per agent:                 calls  completed   rate  avg duration",
    ]
    for figures in summary.agents.values():
        rate = figures.completed / figures.calls if figures.calls else 0.0
        average = figures.completed_seconds / figures.completed if figures.completed else None
        lines.append(
            f"  {figures.name[:22]:<22} {figures.calls:>7} {figures.completed:>10} {rate:6.1%}"
            f"  {minutes(average):>12}"
        )
    lines += [rule, SOURCE_LINE, rule]
    return "\n".join(lines)


def meltano_command() -> list[str]:
    """Find `meltano` in the environment this script runs in (the project's .venv)."""
    candidate = Path(sys.executable).parent / "meltano"
    return [str(candidate)] if candidate.exists() else ["meltano"]


def isolated_environment(extra: dict[str, str]) -> dict[str, str]:
    """Copy our environment minus the user's own tap/target/Meltano overrides, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(ISOLATED_PREFIXES) and key not in ISOLATED_VARIABLES
    }
    env.setdefault("UV_COMPILE_BYTECODE", "1")
    env.update(extra)
    return env


def run_logged(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path, what: str) -> float:
    """Run a command with its output in `log`; on failure print the log's tail and exit."""
    started = time.monotonic()
    say(f"-> {what} ...")
    with log.open("w", encoding="utf-8") as handle:
        result = subprocess.run(
            argv, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False
        )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        # The tap's or target's own error lines say more than Meltano's closing traceback.
        errors = [line for line in lines if any(word in line.lower() for word in ERROR_WORDS)]
        say("\n".join(errors[:30] or lines[-40:]), error=True)
        say(f"FAILED ({result.returncode}) after {elapsed:.1f}s: {' '.join(argv)}", error=True)
        say(f"Full log: {log}", error=True)
        sys.exit(result.returncode or 1)
    shown = log.relative_to(cwd) if log.is_relative_to(cwd) else log
    say(f"   done in {elapsed:.1f}s (log: {shown})")
    return elapsed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command-line options (all optional)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project-dir", type=Path, default=PROJECT_ROOT, help="Meltano project")
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--days", type=float, default=45)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-install", action="store_true", help="skip `meltano install`")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Install the plugins, serve the fake API, run the pipeline, print the summary."""
    args = parse_args(argv)
    project_dir: Path = args.project_dir.resolve()
    output_dir = project_dir / "output" / "demo"
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob("*.csv"):
        stale.unlink()
    say(SOURCE_LINE)
    meltano = meltano_command()

    if not args.skip_install:
        run_logged(
            # Only what the demo runs; `make install` adds target-postgres and dbt.
            [*meltano, "install", "tap-bolna", "target-csv"],
            cwd=project_dir,
            env=isolated_environment({}),
            log=output_dir / "meltano-install.log",
            what="meltano install tap-bolna target-csv",
        )

    world = World.generate(seed=args.seed, agents=args.agents, calls=args.calls, days=args.days)
    with (
        tempfile.TemporaryDirectory() as scratch,
        FakeBolnaServer(world, api_key=DEMO_API_KEY) as api,
    ):
        empty_env_file = Path(scratch) / "empty.env"  # ignore the user's .env: demo settings only
        empty_env_file.write_text("")
        env = isolated_environment(
            {
                "TAP_BOLNA_API_URL": api.url,
                "TAP_BOLNA_API_KEY": DEMO_API_KEY,
                "TARGET_CSV_OUTPUT_PATH": str(output_dir),
                "TARGET_CSV_OVERWRITE_BEHAVIOR": "replace_file",
            }
        )
        say(
            f"   fake Bolna API on {api.url}: {len(world.agents)} agents, "
            f"{len(world.executions)} calls over {args.days:g} days (seed {args.seed})"
        )
        # Its own state id (suffix `demo`) and a full refresh: the demo never touches the state
        # of your real `tap-bolna target-csv` runs, and gives the same result every time.
        run_logged(
            [
                *meltano,
                f"--env-file={empty_env_file}",
                "--environment=dev",
                "run",
                "--full-refresh",
                "--state-id-suffix=demo",
                "tap-bolna",
                "target-csv",
            ],
            cwd=project_dir,
            env=env,
            log=output_dir / "meltano-run.log",
            what="meltano run tap-bolna target-csv (against the fake API)",
        )
        expected = set(world.executions)

    summary = summarize(output_dir)
    say(render(summary, output_dir=output_dir, expected_ids=expected))
    return 0 if is_complete(summary, expected) else 1


if __name__ == "__main__":
    sys.exit(main())
