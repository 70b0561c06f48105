"""End to end: `meltano run tap-bolna target-postgres` against the fake API and a real PostgreSQL.

One throwaway PostgreSQL 15 server and one `meltano install` (into a temp copy of the project)
serve the whole session (see `tests/e2e_support.py`). Each test gets its own warehouse database
and its own Meltano system database, so state never leaks from one test into the next.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing as t
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.conftest import KIND_OF_JSON_TYPE
from tests.e2e_support import (
    API_KEY,
    COMMAND_TIMEOUT,
    MELTANO,
    PROJECT_ROOT,
    SCHEMA,
    STATE_ID,
    Pipeline,
    clean_environment,
    error_lines,
    fetch_one,
    meltano,
    serve_pipeline,
)
from tests.fake_api import FINAL_STATUSES, PENDING_STATUSES, FakeBolnaServer, World
from tests.postgres import PostgresServer

# Meltano and PostgreSQL: run once, on one Python (`make test`; `make e2e` runs only these).
pytestmark = pytest.mark.e2e

if t.TYPE_CHECKING:
    from collections.abc import Iterator


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def pipeline(meltano_project: Path, postgres: PostgresServer, tmp_path: Path) -> Iterator[Pipeline]:
    """A small account: 3 agents, 300 calls over 20 days, some still pending."""
    world = World.generate(seed=7, agents=3, calls=300, days=20, pending_fraction=0.2)
    with serve_pipeline(meltano_project, postgres, tmp_path, world) as served:
        yield served


# --------------------------------------------------------------------------- helpers


def agent_partitions(state: dict[str, t.Any]) -> list[str]:
    """The agent_id of every executions partition in a Singer state."""
    partitions = state["singer_state"]["bookmarks"]["executions"]["partitions"]
    return [partition["context"]["agent_id"] for partition in partitions]


def assert_exactly_one_row_per_call(pipeline: Pipeline) -> dict[str, str]:
    """The executions table holds exactly the fake's calls, once each; returns id -> status."""
    rows = pipeline.execution_rows()
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids)), "duplicate execution rows"
    assert set(ids) == set(pipeline.world.executions)
    return dict(rows)


# --------------------------------------------------------------------------- tests


def test_throwaway_postgres_is_local_and_leaves_nothing_behind() -> None:
    """The PostgreSQL helper: version 15, 127.0.0.1 only, password auth, gone after stop()."""
    with PostgresServer() as server:
        base_dir = server.base_dir
        assert base_dir is not None
        assert base_dir.exists()
        with server.connect() as conn:
            (version,) = fetch_one(conn, "SHOW server_version_num")
            (listen,) = fetch_one(conn, "SHOW listen_addresses")
        assert version.startswith("15")
        assert listen == "127.0.0.1"
        wrong = server.conninfo().replace(server.password, "wrong-password")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(wrong).close()
    assert not base_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.conninfo(), connect_timeout=2).close()


def test_meltano_yml_declares_every_tap_setting_and_capability() -> None:
    """meltano.yml and `tap-bolna --about` stay in step: same settings, right kinds."""
    about = json.loads(
        subprocess.run(
            [str(Path(sys.executable).parent / "tap-bolna"), "--about", "--format=json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    project = yaml.safe_load((PROJECT_ROOT / "meltano.yml").read_text())
    (tap,) = [p for p in project["plugins"]["extractors"] if p["name"] == "tap-bolna"]
    assert tap["namespace"] == "tap_bolna"
    assert tap["pip_url"] == "-e ${MELTANO_PROJECT_ROOT}"
    assert tap["settings_group_validation"] == [["api_key"]]
    assert sorted(tap["capabilities"]) == sorted(about["capabilities"])

    declared = {setting["name"]: setting for setting in tap["settings"]}
    properties = about["settings"]["properties"]
    assert set(declared) - set(properties) == set(), "in meltano.yml, unknown to the tap"
    assert set(properties) - set(declared) == set(), "settings of the tap missing in meltano.yml"
    for name, schema in properties.items():
        types = [kind for kind in schema.get("type", []) if kind != "null"]
        expected = (
            "date_iso8601" if schema.get("format") == "date-time" else KIND_OF_JSON_TYPE[types[0]]
        )
        assert declared[name]["kind"] == expected, name
    assert declared["api_key"]["sensitive"] is True
    assert {name for name, setting in declared.items() if setting.get("sensitive")} == {"api_key"}


def test_env_example_names_real_settings() -> None:
    """Each variable in .env.example is a setting in meltano.yml; every tap setting is listed."""
    meltano_yml = (PROJECT_ROOT / "meltano.yml").read_text()
    project = yaml.safe_load(meltano_yml)
    plugins = [plugin for plugins in project["plugins"].values() for plugin in plugins]
    settings = {
        plugin["name"].upper().replace("-", "_"): {s["name"] for s in plugin["settings"]}
        for plugin in plugins
        if "inherit_from" not in plugin  # an inheriting plugin has its parent's settings
    }
    # Meltano's own, and those meltano.yml reads itself (`${BOLNA_PHONE_HASH_SALT}`).
    meltano_variables = {"MELTANO_DATABASE_URI", "MELTANO_ENVIRONMENT"}
    meltano_variables |= set(re.findall(r"\$\{(\w+)\}", meltano_yml))
    listed = {
        line.lstrip("# ").split("=", 1)[0]
        for line in (PROJECT_ROOT / ".env.example").read_text().splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }
    assert "TAP_BOLNA_API_KEY" in listed
    for variable in listed - meltano_variables:
        prefix = next(name for name in settings if variable.startswith(name + "_"))
        assert variable.removeprefix(prefix + "_").lower() in settings[prefix], variable
    sdk_builtins = {
        name
        for name in settings["TAP_BOLNA"]
        if name.startswith(("flattening", "stream_map", "faker", "batch_config"))
    }
    assert {f"TAP_BOLNA_{name.upper()}" for name in settings["TAP_BOLNA"] - sdk_builtins} <= listed


def test_job_and_hourly_schedule(meltano_project: Path, tmp_path: Path) -> None:
    """The job `bolna-elt` runs tap-bolna -> target-postgres -> dbt every hour; one schedule."""
    env = clean_environment()
    env["MELTANO_DATABASE_URI"] = f"sqlite:///{tmp_path / 'meltano.db'}"
    # From another directory with --cwd, as a cron line or an orchestrator would call it.
    schedules = json.loads(
        meltano(
            tmp_path, f"--cwd={meltano_project}", "schedule", "list", "--format=json", env=env
        ).stdout
    )
    (schedule,) = schedules["schedules"]["job"]
    assert schedule["name"] == "bolna-elt-hourly"
    assert schedule["interval"] == "@hourly"
    assert schedule["cron_interval"] == "0 * * * *"
    assert schedule["job"] == {
        "name": "bolna-elt",
        "tasks": ["tap-bolna target-postgres dbt-postgres:build"],
    }


def tap_log(output: str) -> list[tuple[str, str]]:
    """(level, message) of every line the tap logged under Meltano (structured, JSON)."""
    records = [json.loads(line) for line in output.splitlines() if line.startswith('{"level"')]
    return [(record["level"], record["message"]) for record in records]


def test_meltano_test_command(pipeline: Pipeline) -> None:
    """`meltano test tap-bolna` answers in one line, for a good and for a bad key."""
    passed = pipeline.run("test", "tap-bolna")
    logged = tap_log(passed.stderr)
    verdicts = [message for _, message in logged if message.startswith("Connection test")]
    first = pipeline.world.agent_ids[0]
    assert len(verdicts) == 1
    assert verdicts[0].startswith(
        f"Connection test passed: {pipeline.api.url} accepted the API key"
    )
    assert f"agent {first} has" in verdicts[0]
    assert [message for level, message in logged if level in {"error", "critical"}] == []
    assert "success" in passed.stdout
    printed = pipeline.run("config", "print", "tap-bolna").stdout
    assert json.loads(printed)["api_url"] == pipeline.api.url
    assert API_KEY not in printed  # masked
    pipeline.env["TAP_BOLNA_API_KEY"] = "wrong-key"
    result = meltano(pipeline.project, "test", "tap-bolna", env=pipeline.env, check=False)
    assert result.returncode != 0
    assert [message for level, message in tap_log(result.stderr) if level == "error"] == [
        "Bolna rejected the API key (HTTP 403): Invalid or expired API key"
    ]
    assert "wrong-key" not in result.stdout + result.stderr


def test_shell_beats_dotenv_beats_meltano_yml(meltano_project: Path, tmp_path: Path) -> None:
    """README "Configure": an exported variable beats `.env`, which beats `meltano.yml`, for
    `meltano test` as for a sync; `meltano --env-file` replaces `.env` for one run.

    Each layer points at its own fake API, which accepts only that layer's key: a request
    answered 200 by one of them used both the URL and the key of that layer.
    """
    world = World.generate(seed=3, agents=1, calls=5, days=2)
    layers = ("meltano.yml", ".env", "shell", "--env-file")
    meltano_yml = meltano_project / "meltano.yml"
    original = meltano_yml.read_text()
    with contextlib.ExitStack() as stack:
        api = {
            layer: stack.enter_context(FakeBolnaServer(world, api_key=f"key-of-{layer}"))
            for layer in layers
        }

        def dotenv_text(layer: str) -> str:
            return f"TAP_BOLNA_API_URL={api[layer].url}\nTAP_BOLNA_API_KEY=key-of-{layer}\n"

        project = yaml.safe_load(original)
        (tap,) = [p for p in project["plugins"]["extractors"] if p["name"] == "tap-bolna"]
        tap["config"] = {"api_url": api["meltano.yml"].url, "api_key": "key-of-meltano.yml"}
        shell = clean_environment()
        shell["MELTANO_DATABASE_URI"] = f"sqlite:///{tmp_path / 'meltano.db'}"
        exported = {
            **shell,
            "TAP_BOLNA_API_URL": api["shell"].url,
            "TAP_BOLNA_API_KEY": "key-of-shell",
        }
        (tmp_path / "other.env").write_text(dotenv_text("--env-file"))

        def used(*args: str, env: dict[str, str]) -> list[str]:
            """The layers whose API `meltano <args>` used (and succeeded with)."""
            before = {layer: len(server.requests) for layer, server in api.items()}
            meltano(meltano_project, *args, env=env)
            return [
                layer
                for layer, server in api.items()
                if {request.status for request in server.requests[before[layer] :]} == {200}
            ]

        try:
            meltano_yml.write_text(yaml.safe_dump(project, sort_keys=False))
            assert used("test", "tap-bolna", env=shell) == ["meltano.yml"]
            (meltano_project / ".env").write_text(dotenv_text(".env"))
            assert used("test", "tap-bolna", env=shell) == [".env"]
            assert used("invoke", "tap-bolna", env=shell) == [".env"]
            # `meltano test` runs `tap-bolna --config=ENV --test`; the SDK used to load `.env`
            # over the environment the tap was given, so `.env` won there (issue 11).
            assert used("test", "tap-bolna", env=exported) == ["shell"]
            assert used("invoke", "tap-bolna", env=exported) == ["shell"]
            other = f"--env-file={tmp_path / 'other.env'}"
            assert used(other, "test", "tap-bolna", env=shell) == ["--env-file"]
            assert used(other, "invoke", "tap-bolna", env=shell) == ["--env-file"]
        finally:
            meltano_yml.write_text(original)
            (meltano_project / ".env").unlink(missing_ok=True)


def test_run_then_upsert_new_and_completed_calls(pipeline: Pipeline) -> None:
    """Two `meltano run`s: the second adds new calls and finalizes pending ones, one row each."""
    world = pipeline.world
    pending_before = world.pending_ids()
    assert pending_before, "the world should start with pending calls"

    pipeline.run("run", "tap-bolna", "target-postgres")

    statuses = assert_exactly_one_row_per_call(pipeline)
    assert {statuses[call_id] for call_id in pending_before} <= set(PENDING_STATUSES)
    with pipeline.connect() as conn:
        column_types: dict[str, str] = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'executions'",
                (SCHEMA,),
            ).fetchall()
        )
        assert column_types["created_at"] in {
            "timestamp without time zone",
            "timestamp with time zone",
        }
        assert column_types["updated_at"] in {
            "timestamp without time zone",
            "timestamp with time zone",
        }
        assert column_types["telephony_data"] == "jsonb"
        assert column_types["extracted_data"] == "jsonb"
        # The API sends telephony_data.duration as an int or a numeric string; we store ints.
        duration_types = conn.execute(
            "SELECT jsonb_typeof(telephony_data->'duration'), "
            "bool_and((telephony_data->>'duration') ~ '^[0-9]+$'), count(*) "
            "FROM bolna.executions WHERE telephony_data ? 'duration' "
            "AND telephony_data->'duration' <> 'null'::jsonb GROUP BY 1"
        ).fetchall()
        assert [(kind, integral) for kind, integral, _count in duration_types] == [("number", True)]
        assert duration_types[0][2] > len(world.executions) // 2
        # Timestamps keep their instant (stored as UTC).
        stored_created: dict[str, dt.datetime] = dict(
            conn.execute("SELECT id, created_at FROM bolna.executions")
        )
        expected_created = {
            call_id: dt.datetime.fromisoformat(call["created_at"].replace("Z", "+00:00"))
            for call_id, call in world.executions.items()
        }
        assert {
            call_id: moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment
            for call_id, moment in stored_created.items()
        } == expected_created
        agent_ids = {row[0] for row in conn.execute("SELECT id FROM bolna.agents")}
        assert agent_ids == set(world.agents)
        batch_ids = [row[0] for row in conn.execute("SELECT batch_id FROM bolna.batches")]
        assert sorted(batch_ids) == sorted(world.batches)

    state = pipeline.state()
    assert sorted(agent_partitions(state)) == sorted(world.agent_ids)

    new_ids = world.add_calls(12)
    completed_ids = world.complete_pending()
    assert set(completed_ids) == pending_before

    # The job runs the same pipeline (same state id) as the hourly schedule does.
    pipeline.run("run", "bolna-to-postgres")

    statuses = assert_exactly_one_row_per_call(pipeline)
    assert set(new_ids) <= set(statuses)
    assert {statuses[call_id] for call_id in pending_before} <= set(FINAL_STATUSES)
    assert statuses == {call_id: call["status"] for call_id, call in world.executions.items()}
    assert sorted(agent_partitions(pipeline.state())) == sorted(world.agent_ids)

    # A full refresh re-reads everything and still upserts onto the same rows.
    pipeline.run("run", "--full-refresh", "tap-bolna", "target-postgres")
    assert_exactly_one_row_per_call(pipeline)


def test_calls_listed_late_reach_postgres_once_each(pipeline: Pipeline) -> None:
    """Calls Bolna lists only after a run, created before it, land with the next run."""
    world = pipeline.world
    before_the_run = world.server_now() - dt.timedelta(minutes=40)
    late = world.add_calls(6, created_at=before_the_run, hidden=True)

    pipeline.run("run", "tap-bolna", "target-postgres")
    loaded = {call_id for call_id, _status in pipeline.execution_rows()}
    assert not loaded & set(late)
    assert loaded == set(world.executions) - set(late)

    world.reveal()
    pipeline.run("run", "tap-bolna", "target-postgres")
    assert set(late) <= set(assert_exactly_one_row_per_call(pipeline))
    partition_keys = {
        key
        for partition in pipeline.state()["singer_state"]["bookmarks"]["executions"]["partitions"]
        for key in partition
    }
    assert {"newest_created_at", "recent_calls", "pending_calls"} <= partition_keys


def test_retried_and_disconnected_calls_end_completed_in_postgres(pipeline: Pipeline) -> None:
    """call-disconnected -> completed, and no-answer -> scheduled -> completed: one row each."""
    world = pipeline.world
    agent_id = world.agent_ids[0]
    hours_ago = world.server_now() - dt.timedelta(hours=3)  # outside the look-back
    (disconnected,) = world.add_calls(1, agent_id=agent_id, created_at=hours_ago, status="ringing")
    world.disconnect_calls([disconnected])
    (retried,) = world.add_calls(1, agent_id=agent_id, created_at=hours_ago, status="no-answer")

    pipeline.run("run", "tap-bolna", "target-postgres")
    statuses = assert_exactly_one_row_per_call(pipeline)
    assert (statuses[disconnected], statuses[retried]) == ("call-disconnected", "no-answer")

    world.clock_offset += dt.timedelta(minutes=30)
    world.complete_pending(ids=[disconnected], status="completed")
    world.retry_calls([retried], after=dt.timedelta(0))  # Bolna's auto-retry: the same id
    pipeline.run("run", "tap-bolna", "target-postgres")
    assert assert_exactly_one_row_per_call(pipeline)[retried] == "scheduled"

    world.clock_offset += dt.timedelta(minutes=5)
    world.complete_pending(ids=[retried], status="completed")
    pipeline.run("run", "tap-bolna", "target-postgres")
    statuses = assert_exactly_one_row_per_call(pipeline)
    assert (statuses[disconnected], statuses[retried]) == ("completed", "completed")
    with pipeline.connect() as conn:
        rows = conn.execute(
            "SELECT id, total_cost, transcript, retry_count FROM bolna.executions "
            "WHERE id = ANY(%s) ORDER BY id",
            ([disconnected, retried],),
        ).fetchall()
    expected = sorted((call_id, world.executions[call_id]) for call_id in (disconnected, retried))
    assert [(row[0], float(row[1]), row[2], row[3]) for row in rows] == [
        (call_id, float(call["total_cost"]), call["transcript"], call.get("retry_count"))
        for call_id, call in expected
    ]
    assert all(row[1] > 0 and row[2] for row in rows), "cost and transcript came with completed"


def test_stream_selection(pipeline: Pipeline) -> None:
    """The default selection leaves out execution_logs; `meltano select --exclude` drops more."""
    meltano_yml = pipeline.project / "meltano.yml"
    original = meltano_yml.read_text()
    try:
        pipeline.run("select", "tap-bolna", "--exclude", "batches", "*")
        assert "!batches.*" in pipeline.run("select", "tap-bolna", "--list").stdout
        listed = json.loads(pipeline.run("select", "tap-bolna", "--json").stdout)
        selected = {entry["stream"] for entry in listed["streams"]}
        assert {"agents", "executions"} <= selected
        assert not selected & {"batches", "execution_logs"}
        pipeline.run("run", "tap-bolna", "target-postgres")

        # Opting in to the call logs (README) selects them.
        pipeline.run("select", "tap-bolna", "--rm", "--exclude", "execution_logs", "*")
        listed = json.loads(pipeline.run("select", "tap-bolna", "--json").stdout)
        assert "execution_logs" in {entry["stream"] for entry in listed["streams"]}
    finally:
        meltano_yml.write_text(original)
    assert_exactly_one_row_per_call(pipeline)
    with pipeline.connect() as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (SCHEMA,),
            )
        }
    assert {"agents", "executions"} <= tables
    assert not tables & {"batches", "execution_logs"}


def test_killed_run_resumes_without_gaps_or_duplicates(
    meltano_project: Path, postgres: PostgresServer, tmp_path: Path
) -> None:
    """SIGKILL `meltano run` mid-sync; the next run completes and nothing is missing."""
    world = World.generate(seed=11, agents=3, calls=600, days=30)
    with serve_pipeline(
        meltano_project,
        postgres,
        tmp_path,
        world,
        # Small pages and windows plus latency make the sync take seconds, not milliseconds;
        # small target batches make rows (and state) land while it is still running.
        TAP_BOLNA_PAGE_SIZE="10",
        TAP_BOLNA_WINDOW_DAYS="2",
        TARGET_POSTGRES_BATCH_SIZE_ROWS="40",
    ) as pipeline:
        pipeline.api.latency = 0.05
        process = subprocess.Popen(
            [MELTANO, "run", "tap-bolna", "target-postgres"],
            cwd=pipeline.project,
            env=pipeline.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: meltano, tap and target
        )
        try:
            landed = wait_for_some_rows(pipeline, process, deadline=time.monotonic() + 120)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        assert 0 < landed < len(world.executions), "the kill should land mid-sync"

        pipeline.api.latency = 0.0
        # Meltano still sees the killed run as running (until its heartbeat is 5 minutes old):
        # it refuses to start the same pipeline twice unless told with --force (see README).
        refused = meltano(
            pipeline.project, "run", "tap-bolna", "target-postgres", env=pipeline.env, check=False
        )
        assert refused.returncode != 0
        assert "is already running" in refused.stderr
        assert "--force" in refused.stderr
        pipeline.run("run", "--force", "tap-bolna", "target-postgres")
        assert_exactly_one_row_per_call(pipeline)
        assert sorted(agent_partitions(pipeline.state())) == sorted(world.agent_ids)


def wait_for_some_rows(
    pipeline: Pipeline, process: subprocess.Popen[bytes], deadline: float
) -> int:
    """Poll until the executions table has rows (the run is under way); return their count."""
    while time.monotonic() < deadline:
        assert process.poll() is None, "meltano run finished before it could be killed"
        try:
            count = len(pipeline.execution_rows())
        except Exception:  # noqa: BLE001 - the table does not exist yet
            count = 0
        if count:
            return count
        time.sleep(0.1)
    pytest.fail("no rows landed within the deadline")


def test_state_in_postgres_system_database(pipeline: Pipeline, tmp_path: Path) -> None:
    """With MELTANO_DATABASE_URI on PostgreSQL, workers share state and never run twice at once."""
    system_db = pipeline.postgres.create_database(f"meltano_{uuid.uuid4().hex[:8]}")
    try:
        pipeline.env["MELTANO_DATABASE_URI"] = pipeline.postgres.sqlalchemy_url(system_db)
        # Worker A's first executions request is held until worker B has given up, so B finds A
        # running however slowly either starts (a latency that worked on a quiet machine did not
        # on a loaded one). B is refused by Meltano before its tap sends anything.
        worker_b_done = threading.Event()
        pipeline.api.before_request(
            lambda: worker_b_done.wait(timeout=COMMAND_TIMEOUT), path_contains="/executions"
        )

        worker_a = subprocess.Popen(
            [MELTANO, "run", "tap-bolna", "target-postgres"],
            cwd=pipeline.project,
            env=pipeline.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            wait_for_running_job(pipeline.postgres, system_db, worker_a)
            worker_b = meltano(
                pipeline.project,
                "run",
                "tap-bolna",
                "target-postgres",
                env=pipeline.env,
                check=False,
            )
            worker_b_done.set()
            _, a_stderr = worker_a.communicate(timeout=COMMAND_TIMEOUT)
        finally:
            worker_b_done.set()
            if worker_a.poll() is None:
                os.killpg(worker_a.pid, signal.SIGKILL)
                worker_a.wait(timeout=30)
        assert worker_a.returncode == 0, error_lines(a_stderr)
        assert worker_b.returncode != 0
        assert "is already running" in worker_b.stderr
        assert_exactly_one_row_per_call(pipeline)

        with pipeline.postgres.connect(system_db) as conn:
            (completed_state,) = fetch_one(
                conn, "SELECT completed_state FROM state WHERE state_id = %s", (STATE_ID,)
            )
        stored = (
            completed_state if isinstance(completed_state, dict) else json.loads(completed_state)
        )
        assert sorted(agent_partitions(stored)) == sorted(pipeline.world.agent_ids)

        # "Another machine": a bare checkout with only meltano.yml, no local system database.
        other_machine = tmp_path / "other-machine"
        other_machine.mkdir()
        shutil.copy(pipeline.project / "meltano.yml", other_machine / "meltano.yml")
        seen_there = json.loads(
            meltano(other_machine, "state", "get", STATE_ID, env=pipeline.env).stdout
        )
        assert seen_there == pipeline.state()
        assert not (other_machine / ".meltano" / "meltano.db").exists()
    finally:
        pipeline.postgres.drop_database(system_db)


def wait_for_running_job(
    postgres: PostgresServer, system_db: str, process: subprocess.Popen[str]
) -> None:
    """Poll Meltano's `runs` table until the pipeline is recorded as RUNNING."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "worker A finished before worker B could start"
        try:
            with postgres.connect(system_db) as conn:
                running = conn.execute(
                    "SELECT count(*) FROM runs WHERE job_name = %s AND state = 'RUNNING'",
                    (STATE_ID,),
                ).fetchone()
        except Exception:  # noqa: BLE001 - Meltano has not created its tables yet
            running = None
        if running and running[0]:
            return
        time.sleep(0.1)
    pytest.fail("worker A never showed up as RUNNING in the system database")


DEMO_SEED = 5


def test_offline_demo(meltano_project: Path) -> None:
    """`make demo`'s script: fake API -> target-csv -> a summary that says it is fake."""
    result = subprocess.run(
        [
            sys.executable,
            str(meltano_project / "scripts" / "demo.py"),
            f"--project-dir={meltano_project}",
            "--skip-install",
            f"--seed={DEMO_SEED}",
            "--agents=3",
            "--calls=200",
            "--days=10",
        ],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert "FAKE Bolna API (offline demo)" in output
    assert "all 200 calls the fake API holds landed, one row each" in output
    for figure in ("Calls by status:", "Completion rate:", "Average duration:", "Failed calls:"):
        assert figure in output

    # target-csv wrote every call once (README "CSV and JSON exports"), with the nested objects
    # as JSON (meltano.yml's stream maps). The demo's account, generated again from the same
    # arguments, has the same call ids (they do not depend on the clock).
    with (meltano_project / "output" / "demo" / "executions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    served = World.generate(seed=DEMO_SEED, agents=3, calls=200, days=10)
    assert len(rows) == 200
    assert {row["id"] for row in rows} == set(served.executions)
    durations = [
        json.loads(row["telephony_data"])["duration"] for row in rows if row["telephony_data"]
    ]
    assert len(durations) > 100
    assert all(isinstance(duration, int) for duration in durations if duration is not None)
    assert all(
        isinstance(json.loads(row["cost_breakdown"]), dict) for row in rows if row["cost_breakdown"]
    )
