"""What the Meltano + PostgreSQL end-to-end tests share: one PostgreSQL server and one
`meltano install` per session, a way to point Meltano at the fake API and a fresh database, and
one account loaded once (plainly and PII-safe) for the tests that only read it.

The session fixtures are registered in `tests/conftest.py`, so every module gets the same ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest

from tap_bolna.schemas import EXECUTION_SCHEMA
from tests.fake_api import FakeBolnaServer, World
from tests.postgres import PostgresServer

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    import psycopg

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MELTANO = str(Path(sys.executable).parent / "meltano")
API_KEY = "e2e-key"
# Paces far above the fake's per-minute limits (which stay on): most tests send a few dozen
# requests and need not wait for them; tests/test_rate_limit.py runs the default pace.
FAST_PACE = {"max_requests_per_minute": 60_000, "max_other_requests_per_minute": 60_000}
STATE_ID = "dev:tap-bolna-to-target-postgres"
SCHEMA = "bolna"  # tap-bolna's load_schema in meltano.yml: target-postgres's default schema
PII_SAFE_SCHEMA = "bolna_pii_safe"  # tap-bolna--pii-safe's load_schema
ANALYTICS_SCHEMA = "bolna_analytics"  # where dbt-postgres builds the models (meltano.yml)
PII_SAFE_ANALYTICS_SCHEMA = "bolna_pii_safe_analytics"  # dbt-postgres--pii-safe's
# The models of transform/models/ (staging views, then the end models).
DBT_MODELS = {
    "stg_bolna__executions",
    "stg_bolna__agents",
    "stg_bolna__batches",
    "stg_bolna__sub_accounts",
    "stg_bolna__sub_account_usage",
    "bolna__calls",
    "bolna__agent_daily",
    "bolna__sub_account_daily",
    "bolna__executions",
}
# The columns target-postgres creates for the executions stream, in order (_sdc_* aside).
EXECUTION_COLUMNS = tuple(EXECUTION_SCHEMA.to_dict()["properties"])
# Where each dbt utility compiles models and analyses (its target_path in meltano.yml).
DBT_TARGET = {
    "dbt-postgres": Path(".meltano/transformers/dbt/target"),
    "dbt-postgres--pii-safe": Path(".meltano/transformers/dbt/target-pii-safe"),
}
PHONE_HASH_SALT = "e2e-phone-hash-salt-5b9e"  # BOLNA_PHONE_HASH_SALT for the PII-safe loads
COMMAND_TIMEOUT = 300
# Not copied into the temp project: local environments, caches, output, secrets.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".venv-*", ".tools", ".meltano", "output", "dist", ".env", "__pycache__",
    "*_cache", "*.egg-info",
)  # fmt: skip


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL 15 server for the session, on 127.0.0.1, removed whatever happens."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def meltano_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp copy of this repository with `meltano install` done once for the session."""
    project = tmp_path_factory.mktemp("meltano") / "project"
    shutil.copytree(PROJECT_ROOT, project, ignore=NOT_COPIED)
    env = clean_environment()
    env["MELTANO_DATABASE_URI"] = f"sqlite:///{project / 'install.db'}"
    result = meltano(project, "install", env=env)
    # tap-bolna--pii-safe, dbt-postgres--pii-safe and bolna-api--pii-safe share their parents'
    # virtualenvs.
    assert "Installed 5/8 plugins" in result.stdout + result.stderr
    return project


@dataclass(frozen=True)
class Distributions:
    """What `uv build` made of this checkout: the source distribution and the wheel."""

    sdist: Path
    wheel: Path


@pytest.fixture(scope="session")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> Distributions:
    """`uv build` of this checkout, once per session (README "Cutting a release")."""
    out = tmp_path_factory.mktemp("dist")
    # `uv run` (how make runs the tests) names itself in $UV.
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        pytest.fail("uv not found: run the tests with `make test` or `uv run pytest`")
    built = subprocess.run(
        [uv, "build", "--out-dir", str(out), str(PROJECT_ROOT)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Distributions(sdist, wheel)


@dataclass
class Pipeline:
    """Everything one test needs to run Meltano against its own databases."""

    project: Path
    postgres: PostgresServer
    api: FakeBolnaServer
    world: World
    database: str
    env: dict[str, str]

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`meltano <args>` in the project, failing the test on a non-zero exit."""
        return meltano(self.project, *args, env=self.env, timeout=timeout)

    def connect(self) -> psycopg.Connection:
        """A connection to this test's warehouse database."""
        return self.postgres.connect(self.database)

    def execution_rows(self) -> list[tuple[str, str]]:
        """(id, status) of every row of bolna.executions, duplicates included."""
        with self.connect() as conn:
            return conn.execute("SELECT id, status FROM bolna.executions").fetchall()

    def state(self) -> dict[str, t.Any]:
        """`meltano state get` for the tap-bolna -> target-postgres pipeline, parsed."""
        return json.loads(self.run("state", "get", STATE_ID).stdout)


# dbt parses the whole project again (about 9 s of CPU, as long as the build) whenever the
# connection details change, the database's name included; with the same name, it re-reads
# only what changed. So one test at a time gets its warehouse under the name TEST_DATABASE,
# dropped when the test ends, and only the session's long-lived warehouses get names of their own.
TEST_DATABASE = "warehouse_test"
_databases_in_use: set[str] = set()


@contextlib.contextmanager
def serve_pipeline(
    project: Path,
    postgres: PostgresServer,
    tmp_path: Path,
    world: World,
    *,
    database: str = TEST_DATABASE,
    **extra_env: str,
) -> Iterator[Pipeline]:
    """Serve `world`, create the warehouse database `database`, and point Meltano at both."""
    assert database not in _databases_in_use, f"two warehouses named {database} at once"
    postgres.drop_database(database)  # left by a test that was killed
    postgres.create_database(database)
    _databases_in_use.add(database)
    try:
        with FakeBolnaServer(world, api_key=API_KEY) as api:
            env = clean_environment()
            env.update(
                {
                    "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
                    "TAP_BOLNA_API_URL": api.url,
                    "TAP_BOLNA_API_KEY": API_KEY,
                    # The fake's per-minute limits stay on; these tests need not wait for them.
                    **{f"TAP_BOLNA_{name.upper()}": str(pace) for name, pace in FAST_PACE.items()},
                    "TARGET_POSTGRES_HOST": postgres.host,
                    "TARGET_POSTGRES_PORT": str(postgres.port),
                    "TARGET_POSTGRES_USER": postgres.user,
                    "TARGET_POSTGRES_PASSWORD": postgres.password,
                    "TARGET_POSTGRES_DATABASE": database,
                    **extra_env,
                }
            )
            pipeline = Pipeline(project, postgres, api, world, database, env)
            yield pipeline
            assert_no_key_in_warehouse(pipeline)
    finally:
        _databases_in_use.discard(database)
        postgres.drop_database(database)


@pytest.fixture(scope="session")
def loaded_warehouse(
    meltano_project: Path, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """One account loaded once by `meltano run tap-bolna target-postgres`, for read-only tests.

    3 agents, 400 calls over 20 days (every status, voice mail, transfers, failures). Tests must
    change neither the world nor the tables; the fake API keeps serving until the session ends.
    """
    world = World.generate(seed=23, agents=3, calls=400, days=20, pending_fraction=0.1)
    with serve_pipeline(
        meltano_project,
        postgres,
        tmp_path_factory.mktemp("warehouse"),
        world,
        database="warehouse_session",
        BOLNA_PHONE_HASH_SALT=PHONE_HASH_SALT,
    ) as pipeline:
        pipeline.run("run", "tap-bolna", "target-postgres")
        yield pipeline


@pytest.fixture(scope="session")
def pii_safe_warehouse(loaded_warehouse: Pipeline) -> Pipeline:
    """The same account, loaded again by the job `bolna-elt-pii-safe`: the PII-safe load in
    bolna_pii_safe, and the dbt models built on it in bolna_pii_safe_analytics."""
    loaded_warehouse.run("run", "bolna-elt-pii-safe")
    return loaded_warehouse


@pytest.fixture(scope="session")
def modelled_warehouse(pii_safe_warehouse: Pipeline) -> Pipeline:
    """Both loads, with the dbt models of the plain load built too (bolna_analytics)."""
    pii_safe_warehouse.run("invoke", "dbt-postgres:build")
    return pii_safe_warehouse


def as_loaded(call: dict[str, t.Any], sub_account_id: str | None = None) -> dict[str, t.Any]:
    """A call the fake API serves, as the tap emits it and target-postgres stores it: durations
    as integers, older calls' `conversation_time` as `conversation_duration`, the account's
    `sub_account_id`, and every other column of the stream (`batch_id`, `retry_count`, …) null
    where Bolna's object lacks it."""
    loaded = dict(call)
    if "conversation_time" in loaded:
        loaded["conversation_duration"] = loaded.pop("conversation_time")
    loaded["sub_account_id"] = sub_account_id
    for column in EXECUTION_COLUMNS:
        loaded.setdefault(column, None)
    for part in ("telephony_data", "transfer_call_data"):
        if loaded.get(part) and isinstance(loaded[part].get("duration"), str):
            loaded[part] = {**loaded[part], "duration": int(loaded[part]["duration"])}
    return loaded


def clean_environment() -> dict[str, str]:
    """Our environment without any tap/target/Meltano settings a developer may have exported."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TAP_BOLNA_", "TARGET_", "MELTANO_", "BOLNA_"))
    }
    env["UV_COMPILE_BYTECODE"] = "1"  # plugin venvs start ~2x faster with .pyc files
    return env


def meltano(
    project: Path,
    *args: str,
    env: dict[str, str],
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the project's `meltano` CLI in `project`; on failure show its output."""
    result = subprocess.run(
        [MELTANO, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"meltano {' '.join(args)} exited {result.returncode}\n"
            f"--- error lines\n{error_lines(result.stderr)}\n"
            f"--- stdout (tail)\n{result.stdout[-3000:]}\n"
            f"--- stderr (tail)\n{result.stderr[-5000:]}"
        )
    if result.returncode == 0:
        # Every command that succeeded: the key is masked or absent, and a `meltano run` logged
        # no ERROR line of the tap's (or the target's): Meltano renders a plugin's SDK log line
        # as `<time> [error    ] tap-bolna    <message>`, a raw one keeps the SDK's `| ERROR |`.
        assert API_KEY not in result.stdout + result.stderr, f"the API key in meltano {args[0]}"
        if args[0] == "run":
            markers = ("[error", "[critical", "| ERROR", "| CRITICAL", '"level": "error"')
            logged_errors = [
                line for line in result.stderr.splitlines() if any(m in line for m in markers)
            ]
            assert logged_errors == [], f"meltano {' '.join(args)} logged ERROR lines"
    return result


def assert_no_key_in_warehouse(pipeline: Pipeline) -> None:
    """No row of any table of the warehouse (loads, models, Meltano's) holds the API key."""
    from psycopg import sql  # noqa: PLC0415 (psycopg is imported for types only above)

    with pipeline.connect() as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {} AS row WHERE row::text LIKE %s").format(
                sql.Identifier(schema, table)
            )
            (hits,) = conn.execute(query, (f"%{API_KEY}%",)).fetchone() or (0,)
            assert hits == 0, f"the API key in {schema}.{table}"


def error_lines(log: str, limit: int = 40) -> str:
    """The first lines of a Meltano log that name an error (the tap's or target's own)."""
    markers = ("error", "exception", "traceback", "failed")
    lines = [line for line in log.splitlines() if any(m in line.lower() for m in markers)]
    return "\n".join(lines[:limit])


def fetch_one(
    conn: psycopg.Connection, query: str, params: tuple[t.Any, ...] = ()
) -> tuple[t.Any, ...]:
    """The single row a query must return."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row
