"""Fixtures: a fake Bolna API on 127.0.0.1 and ways to run the tap against it."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest

from tap_bolna.tap import TapBolna

# Session fixtures of the Meltano + PostgreSQL tests, here so that every module shares one of each.
from tests.e2e_support import (  # noqa: F401
    FAST_PACE,
    distributions,
    loaded_warehouse,
    meltano_project,
    modelled_warehouse,
    pii_safe_warehouse,
    postgres,
)
from tests.fake_api import FakeBolnaServer, World

# What a test needs that makes it end to end: such a test must be marked e2e, or it would run on
# every Python of `make unit-pythons` and in the unit lane, where no PostgreSQL is wanted.
E2E_FIXTURES = frozenset(
    {"postgres", "meltano_project", "distributions", "loaded_warehouse", "modelled_warehouse",
     "pii_safe_warehouse"}
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse an end-to-end test that is not marked e2e (one line naming it)."""
    unmarked = [
        item.nodeid
        for item in items
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("e2e") is None
    ]
    if unmarked:
        msg = f"uses Meltano/PostgreSQL fixtures but is not marked e2e: {', '.join(unmarked)}"
        raise pytest.UsageError(msg)


API_KEY = "test-key-5ecret-do-not-log"
REPO_ROOT = Path(__file__).resolve().parents[1]
# The Meltano setting kind of each JSON type, when neither format, enum nor secret says otherwise:
# written here by hand (not taken from scripts/hub_definition.py) so that tests check the generator.
KIND_OF_JSON_TYPE = {
    "string": "string",
    "integer": "integer",
    "number": "decimal",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}


@dataclass
class SyncResult:
    """What one run of the tap wrote to stdout, parsed."""

    messages: list[dict[str, t.Any]]
    stderr: str = ""
    returncode: int = 0
    raw_stdout: str = ""

    secrets: tuple[str, ...] = ()

    def records(self, stream: str = "executions") -> list[dict[str, t.Any]]:
        """Every RECORD of a stream, in order."""
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    def ids(self, stream: str = "executions", key: str = "id") -> list[str]:
        """The key of every record of a stream (duplicates kept, so tests can see them)."""
        return [record[key] for record in self.records(stream)]

    @property
    def states(self) -> list[dict[str, t.Any]]:
        """Every STATE value, in order."""
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def final_state(self) -> dict[str, t.Any]:
        """The last STATE value."""
        return self.states[-1]


def config_secrets(config: dict[str, t.Any]) -> tuple[str, ...]:
    """Every API key a config holds, at any depth (sub-account keys included)."""
    found: list[str] = []

    def walk(value: t.Any, key: str = "") -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                walk(item, str(name))
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and "key" in key.lower() and value:
            found.append(value)

    walk(config)
    return tuple(found)


# The syncs of the running test, checked by `successful_syncs_are_clean` when it ends.
_syncs_of_this_test: list[SyncResult] = []


def error_lines(log: str) -> list[str]:
    """Every ERROR (or CRITICAL) line of the tap's log, as the SDK formats it or as captured."""
    return [line for line in log.splitlines() if "| ERROR" in line or "| CRITICAL" in line]


@pytest.fixture(autouse=True)
def successful_syncs_are_clean() -> t.Iterator[None]:
    """Every run of the tap in a test (`run_tap`, `run_tap_cli`) leaves no API key of its config
    in its stdout, its log or its state, and every one that succeeded logged no ERROR line."""
    _syncs_of_this_test.clear()
    yield
    syncs = list(_syncs_of_this_test)
    _syncs_of_this_test.clear()
    for result in syncs:
        for secret in result.secrets:
            assert secret not in result.raw_stdout, "an API key in the tap's stdout"
            assert secret not in result.stderr, "an API key in the tap's log"
            assert secret not in json.dumps(result.states), "an API key in the state"
        if result.returncode == 0:
            assert error_lines(result.stderr) == [], "a successful sync logged an ERROR line"


class _LogCapture(logging.Handler):
    """The log of an in-process sync, one `time | LEVEL | logger | message` line per record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.created} | {record.levelname} | {record.name} | {message}")


def partitions(state: dict[str, t.Any]) -> dict[str, dict[str, t.Any]]:
    """The executions stream's partition states by agent id."""
    parts = state["bookmarks"]["executions"]["partitions"]
    return {p["context"]["agent_id"]: p for p in parts}


def make_config(api: FakeBolnaServer, **overrides: t.Any) -> dict[str, t.Any]:
    """A tap config pointing at the fake API."""
    return {"api_key": API_KEY, "api_url": api.url, **FAST_PACE, **overrides}


def days_ago(days: float) -> str:
    """An ISO timestamp `days` before now."""
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)).isoformat()


def run_tap(
    config: dict[str, t.Any],
    state: dict[str, t.Any] | None = None,
    catalog: dict[str, t.Any] | None = None,
) -> SyncResult:
    """Run a full sync in this process and parse what it wrote to stdout."""
    buffer = io.BytesIO()
    stdout = io.TextIOWrapper(buffer, encoding="utf-8")
    real_stdout = sys.stdout
    sys.stdout = stdout
    log = _LogCapture()
    logging.getLogger().addHandler(log)
    try:
        tap = TapBolna(config=config, state=state, catalog=catalog, setup_mapper=True)
        tap.sync_all()
        stdout.flush()
    finally:
        sys.stdout = real_stdout
        logging.getLogger().removeHandler(log)
    text = buffer.getvalue().decode()
    result = SyncResult(
        [json.loads(line) for line in text.splitlines() if line],
        stderr="\n".join(log.lines),
        raw_stdout=text,
        secrets=config_secrets(config),
    )
    _syncs_of_this_test.append(result)
    return result


def tap_command(config_path: Path, *extra: str) -> list[str]:
    """The installed console script, as a user runs it."""
    return [str(Path(sys.executable).with_name("tap-bolna")), "--config", str(config_path), *extra]


def run_tap_cli(
    tmp_path: Path,
    config: dict[str, t.Any],
    *extra: str,
    state: dict[str, t.Any] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> SyncResult:
    """Run the `tap-bolna` command in a subprocess, as Meltano does."""
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    args = list(extra)
    if state is not None:
        state_path = tmp_path / "state.json"
        state_path.write_text(json.dumps(state))
        args += ["--state", str(state_path)]
    proc = subprocess.run(
        tap_command(config_path, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    messages = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    result = SyncResult(
        messages, proc.stderr, proc.returncode, proc.stdout, secrets=config_secrets(config)
    )
    _syncs_of_this_test.append(result)
    return result


@dataclass
class FakeAccount:
    """A running fake API and the world behind it."""

    world: World
    api: FakeBolnaServer
    max_workers: int = 1

    def config(self, **overrides: t.Any) -> dict[str, t.Any]:
        """A tap config pointing at this fake API, with this test's max_workers."""
        return make_config(self.api, max_workers=self.max_workers, **overrides)


@pytest.fixture(params=[1, 4], ids=["sequential", "4-workers"])
def max_workers(request: pytest.FixtureRequest) -> int:
    """Correctness must not depend on parallel fetching: tests run with 1 and 4 workers."""
    return t.cast("int", request.param)


@pytest.fixture
def account(max_workers: int) -> t.Iterator[FakeAccount]:
    """The issue's reference account: 3 agents, 1,500 calls over 45 days."""
    world = World.generate(seed=7, agents=3, calls=1500, days=45)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        yield FakeAccount(world, api, max_workers)


@pytest.fixture
def small_account(max_workers: int) -> t.Iterator[FakeAccount]:
    """A small account for error-path tests: 2 agents, 120 calls over 10 days."""
    world = World.generate(seed=3, agents=2, calls=120, days=10)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        yield FakeAccount(world, api, max_workers)
