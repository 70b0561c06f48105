"""README "Transform with dbt": the dbt project in transform/, run by Meltano's dbt-postgres
utility, and the job `bolna-elt` (tap-bolna -> target-postgres -> dbt-postgres:build).

End to end (real Meltano, real PostgreSQL, the fake API): every call lands once in
`bolna__calls`, `bolna__agent_daily` gives the figures of the calls the fake served, and both stay
current when pending calls complete, new calls arrive, data is extracted later and an agent is
renamed; a row loaded with an older load marker (a loader whose clock runs behind) is merged
too; the data tests fail on bad data; freshness warns and fails as documented.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import typing as t
from collections import defaultdict
from decimal import Decimal

import pytest
import yaml
from psycopg import sql

from tests.e2e_support import (
    ANALYTICS_SCHEMA,
    DBT_MODELS,
    DBT_TARGET,
    PROJECT_ROOT,
    Pipeline,
    fetch_one,
    meltano,
    serve_pipeline,
)
from tests.fake_api import FINAL_STATUSES, PENDING_STATUSES, UNDOCUMENTED_STATUSES, World
from tests.fake_api.world import parse_timestamp

# Meltano and PostgreSQL: run once, on one Python (`make test`; `make e2e` runs only these).
pytestmark = pytest.mark.e2e

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.postgres import PostgresServer

TRANSFORM = PROJECT_ROOT / "transform"
FAILED_STATUSES = {"failed", "error"}
MODELS = DBT_MODELS


def meltano_yml() -> dict[str, t.Any]:
    return t.cast("dict[str, t.Any]", yaml.safe_load((PROJECT_ROOT / "meltano.yml").read_text()))


def dbt_project() -> dict[str, t.Any]:
    text = (TRANSFORM / "dbt_project.yml").read_text()
    return t.cast("dict[str, t.Any]", yaml.safe_load(text))


# --------------------------------------------------------------------------- the project


def test_the_status_lists_are_bolnas_documented_ones() -> None:
    # The fake's own lists (Bolna's documented statuses, and one it sends undocumented).
    variables = dbt_project()["vars"]
    documented_pending = tuple(s for s in PENDING_STATUSES if s not in UNDOCUMENTED_STATUSES)
    assert tuple(variables["bolna_pending_statuses"]) == documented_pending
    assert tuple(variables["bolna_final_statuses"]) == FINAL_STATUSES
    assert len(variables["bolna_pending_statuses"] + variables["bolna_final_statuses"]) == 16
    assert set(variables["bolna_failed_statuses"]) == FAILED_STATUSES


def test_dbt_lives_in_a_meltano_plugin_venv_configured_by_the_loaders_variables() -> None:
    project = meltano_yml()
    (dbt,) = [u for u in project["plugins"]["utilities"] if u["name"] == "dbt-postgres"]
    # dbt-core 1.12 downloads a wheel from GitHub while installing: pinned below it.
    assert "dbt-core>=1.11,<1.12" in dbt["pip_url"]
    assert "dbt-postgres>=1.11,<1.12" in dbt["pip_url"]
    assert "meltano-dbt-ext>=0.5,<0.6" in dbt["pip_url"]
    settings = {setting["name"]: setting.get("value") for setting in dbt["settings"]}
    for name, variable in [
        ("host", "HOST"),
        ("port", "PORT"),
        ("user", "USER"),
        ("password", "PASSWORD"),
        ("dbname", "DATABASE"),
    ]:
        assert settings[name] == f"${{TARGET_POSTGRES_{variable}}}", name
    assert settings["schema"] == ANALYTICS_SCHEMA
    assert settings["source_schema"] == "${TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA}"
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert "dbt" not in pyproject  # not a dependency of the tap, nor of its tests


def test_jobs() -> None:
    project = meltano_yml()
    jobs = {job["name"]: job["tasks"] for job in project["jobs"]}
    assert jobs["bolna-elt"] == ["tap-bolna target-postgres dbt-postgres:build"]
    assert jobs["bolna-to-postgres"] == ["tap-bolna target-postgres"]  # extract and load only
    assert jobs["bolna-elt-pii-safe"] == [
        "tap-bolna--pii-safe target-postgres dbt-postgres--pii-safe:build"
    ]
    # The PII-safe load alone; e2e_support runs bolna-elt-pii-safe, which starts with it.
    assert jobs["bolna-to-postgres-pii-safe"] == ["tap-bolna--pii-safe target-postgres"]
    # The hourly schedule of bolna-elt: test_meltano_e2e.test_job_and_hourly_schedule.


def test_models_follow_the_layout() -> None:
    """source() only in staging; every model imports as CTEs and ends with `select * from final`,
    and is described, with its key tested, in the .yml beside it."""
    sql_files = {path.stem: path for path in (TRANSFORM / "models").rglob("*.sql")}
    assert set(sql_files) == MODELS
    described: dict[str, dict[str, t.Any]] = {}
    for path in (TRANSFORM / "models").rglob("*.yml"):
        for model in yaml.safe_load(path.read_text()).get("models", []):
            described[model["name"]] = model
            assert model["description"], model["name"]
            assert sql_files[model["name"]].parent == path.parent, model["name"]
    assert set(described) == MODELS
    for name, path in sql_files.items():
        text = path.read_text()
        assert ("source(" in text) == (path.parent.name == "staging"), name
        assert text.rstrip().endswith("select * from final"), name
        key = described[name]["columns"][0]
        assert {"unique", "not_null"} <= {
            test if isinstance(test, str) else next(iter(test)) for test in key["data_tests"]
        } or name == "bolna__agent_daily", name


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def elt(meltano_project: Path, postgres: PostgresServer, tmp_path: Path) -> Iterator[Pipeline]:
    """A fresh warehouse and a fake account: 3 agents, 300 calls over 12 days, 15% pending."""
    world = World.generate(seed=31, agents=3, calls=300, days=12, pending_fraction=0.15)
    with serve_pipeline(meltano_project, postgres, tmp_path, world) as pipeline:
        yield pipeline


def served_calls(world: World) -> dict[str, dict[str, t.Any]]:
    """What bolna__calls must hold for each call the fake API serves."""
    calls = {}
    for call_id, call in world.executions.items():
        if not world.is_listed(call_id):
            continue
        duration = call["telephony_data"]["duration"]
        calls[call_id] = {
            "agent_id": call["agent_id"],
            "agent_name": world.agents[call["agent_id"]]["agent_name"],
            "status": call["status"],
            "is_final": call["status"] in FINAL_STATUSES,  # the fake's list, not the tap's
            "is_completed": call["status"] == "completed",
            "is_failed": call["status"] in FAILED_STATUSES,
            "is_voicemail": bool(call["answered_by_voice_mail"]),
            "duration_s": None if duration is None else Decimal(int(duration)),
            "total_cost": Decimal(repr(call["total_cost"])),  # the JSON the API sent
            "created_date": parse_timestamp(call["created_at"]).date(),
            "extracted_data": call["extracted_data"],
        }
    return calls


def model_calls(pipeline: Pipeline) -> list[dict[str, t.Any]]:
    """Every row of bolna__calls, duplicates included."""
    columns = ["call_id", *next(iter(served_calls(pipeline.world).values()))]
    with pipeline.connect() as conn:
        query = sql.SQL("SELECT {} FROM bolna_analytics.bolna__calls")
        rows = conn.execute(query.format(sql.SQL(", ").join(map(sql.Identifier, columns))))
        rows = rows.fetchall()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def assert_calls_are_current(pipeline: Pipeline) -> None:
    served = served_calls(pipeline.world)
    rows = model_calls(pipeline)
    assert sorted(row["call_id"] for row in rows) == sorted(served)  # each once, none missing
    for row in rows:
        call_id = row.pop("call_id")
        assert row == served[call_id], call_id


def assert_agent_daily_is_what_was_served(pipeline: Pipeline) -> None:
    by_day: dict[tuple[str, t.Any], list[dict[str, t.Any]]] = defaultdict(list)
    for call in served_calls(pipeline.world).values():
        by_day[call["agent_id"], call["created_date"]].append(call)
    expected = {}
    for key, calls in by_day.items():
        durations = sorted(
            c["duration_s"] for c in calls if c["is_completed"] and c["duration_s"] is not None
        )
        completed = sum(c["is_completed"] for c in calls)
        expected[key] = {
            "agent_name": calls[0]["agent_name"],
            "calls": len(calls),
            "completed_calls": completed,
            "failed_calls": sum(c["is_failed"] for c in calls),
            "voicemail_calls": sum(c["is_voicemail"] for c in calls),
            "pending_calls": sum(not c["is_final"] for c in calls),
            "total_cost": sum((c["total_cost"] for c in calls), Decimal(0)),
            "avg_duration_s": sum(durations) / len(durations) if durations else None,
            # percentile_disc(0.95): the value at 1-based position ceil(0.95 * n).
            "p95_duration_s": durations[-(-95 * len(durations) // 100) - 1] if durations else None,
            "completion_rate": Decimal(completed) / len(calls),
        }
    with pipeline.connect() as conn:
        rows = conn.execute(
            "SELECT agent_id, created_date, agent_name, calls, completed_calls, failed_calls,"
            " voicemail_calls, pending_calls, total_cost, avg_duration_s, p95_duration_s,"
            " completion_rate FROM bolna_analytics.bolna__agent_daily"
        ).fetchall()
    assert len(rows) == len(expected)  # one row per agent and day, none twice
    assert len(expected) > 20
    for agent_id, day, *figures in rows:
        want = expected[agent_id, day]
        got = dict(zip(list(want), figures, strict=True))
        for ratio in ("avg_duration_s", "completion_rate"):
            if want[ratio] is not None:
                assert abs(got.pop(ratio) - want.pop(ratio)) < Decimal("1e-12"), (agent_id, day)
        assert got == want, (agent_id, day)


# One agent-day of five calls, and its bolna__agent_daily row worked out by hand (not with the
# model's formulas): status, duration (s), cost (cents), answered by voice mail.
HAND_DAY_CALLS = (
    ("completed", 60, 10, False),
    ("completed", 120, 20, True),
    ("completed", 300, 30, False),
    ("failed", 15, 5, False),
    ("in-progress", 0, 0, False),
)
HAND_DAY_ROW = {
    "calls": 5,
    "completed_calls": 3,
    "failed_calls": 1,
    "voicemail_calls": 1,
    "pending_calls": 1,
    "total_cost": Decimal(65),
    "avg_duration_s": Decimal(160),  # (60 + 120 + 300) / 3
    "p95_duration_s": Decimal(300),  # the longest of three completed calls
    "completion_rate": Decimal("0.6"),
}


def plant_hand_day(world: World) -> tuple[str, dt.date]:
    """Replace the first agent's calls of the day 5 days ago by HAND_DAY_CALLS."""
    agent_id = world.agent_ids[0]
    noon = (world.server_now() - dt.timedelta(days=5)).replace(
        hour=12, minute=0, second=0, microsecond=0
    )
    world.remove_calls(
        [
            call_id
            for call_id, call in world.executions.items()
            if call["agent_id"] == agent_id
            and parse_timestamp(call["created_at"]).date() == noon.date()
        ]
    )
    for n, (status, duration, cost, voice_mail) in enumerate(HAND_DAY_CALLS):
        (call_id,) = world.add_calls(
            1, agent_id=agent_id, created_at=noon + dt.timedelta(minutes=n), status=status
        )
        telephony = {**world.executions[call_id]["telephony_data"], "duration": duration}
        world.update_calls(
            [call_id],
            telephony_data=telephony,
            total_cost=cost,
            answered_by_voice_mail=voice_mail,
        )
    return agent_id, noon.date()


def assert_hand_day_row(pipeline: Pipeline, agent_id: str, day: dt.date) -> None:
    with pipeline.connect() as conn:
        row = fetch_one(
            conn,
            "SELECT calls, completed_calls, failed_calls, voicemail_calls, pending_calls,"
            " total_cost, avg_duration_s, p95_duration_s, completion_rate"
            " FROM bolna_analytics.bolna__agent_daily WHERE agent_id = %s AND created_date = %s",
            (agent_id, day),
        )
    got, want = dict(zip(HAND_DAY_ROW, row, strict=True)), dict(HAND_DAY_ROW)
    for ratio in ("avg_duration_s", "completion_rate"):
        assert abs(got.pop(ratio) - want.pop(ratio)) < Decimal("1e-12"), ratio
    assert got == want


def dbt_summary(log: str) -> str:
    """dbt's closing `Done. PASS=… WARN=… ERROR=…` line."""
    (line,) = re.findall(r"Done\. PASS=\d+ WARN=\d+ ERROR=\d+ SKIP=\d+.*", log)
    return line


def merged_calls(log: str) -> int:
    """How many rows dbt merged into bolna__calls in an incremental run."""
    pattern = rf"incremental model {ANALYTICS_SCHEMA}\.bolna__calls .*\[MERGE (\d+)"
    (count,) = re.findall(pattern, log)
    return int(count)


def test_bolna_elt_keeps_every_call_once_and_current(elt: Pipeline) -> None:
    world = elt.world
    just_ended = world.add_calls(7)  # completed a moment ago; their data is extracted later
    hand_agent, hand_day = plant_hand_day(world)
    first = elt.run("run", "bolna-elt")
    assert " ERROR=0 " in dbt_summary(first.stderr)
    assert elt.postgres.password not in first.stdout + first.stderr  # nor in dbt's lines
    assert_calls_are_current(elt)
    assert_agent_daily_is_what_was_served(elt)
    assert_hand_day_row(elt, hand_agent, hand_day)
    assert len(world.pending_ids()) > 20

    # The next hour: pending calls end, new calls come, data is extracted after a call ended,
    # and an agent is renamed in the dashboard.
    completed = world.complete_pending()
    new = world.add_calls(12)
    enriched = list(world.update_calls(just_ended, extracted_data={"outcome": "callback"}))
    renamed = world.agent_ids[2]
    world.agents[renamed]["agent_name"] = "Renamed Agent"
    second = elt.run("run", "bolna-elt")
    assert " ERROR=0 " in dbt_summary(second.stderr)
    assert_calls_are_current(elt)
    assert_agent_daily_is_what_was_served(elt)
    # Incremental, not rebuilt: exactly the calls that changed were merged.
    changed = set(completed) | set(new) | set(enriched)
    changed |= {i for i, call in world.executions.items() if call["agent_id"] == renamed}
    assert merged_calls(second.stderr) == len(changed) < len(world.executions)

    # Nothing changed: nothing merged, and the models still pass their tests.
    third = elt.run("run", "bolna-elt")
    assert merged_calls(third.stderr) == 0
    assert " ERROR=0 " in dbt_summary(elt.run("invoke", "dbt-postgres:test").stderr)


def test_calls_loaded_with_an_older_marker_are_merged(elt: Pipeline) -> None:
    """A load written with an earlier _sdc_batched_at than the last build's newest (another
    machine whose clock runs a day behind) still reaches bolna__calls: changes are found by
    comparing markers, not by `newer than the newest`. Both incremental strategies."""
    elt.run("run", "bolna-elt")
    pending = sorted(elt.world.pending_ids())
    assert len(pending) >= 4
    for strategy, ids in [("merge", pending[:2]), ("delete+insert", pending[2:4])]:
        with elt.connect() as conn:
            conn.execute(
                "UPDATE bolna.executions SET status = 'completed',"
                " _sdc_batched_at = _sdc_batched_at - interval '1 day' WHERE id = ANY(%s)",
                (ids,),
            )
        result = elt.run(
            "invoke",
            "dbt-postgres",
            "run",
            "--vars",
            json.dumps({"bolna_incremental_strategy": strategy}),
        )
        assert " ERROR=0 " in dbt_summary(result.stderr)
        with elt.connect() as conn:
            statuses = dict(
                conn.execute(
                    "SELECT call_id, status FROM bolna_analytics.bolna__calls"
                    " WHERE call_id = ANY(%s)",
                    (ids,),
                ).fetchall()
            )
            (count,) = conn.execute(
                "SELECT count(*) FROM bolna_analytics.bolna__calls"
            ).fetchone() or (0,)
        assert statuses == dict.fromkeys(ids, "completed"), strategy
        assert count == len(elt.world.executions), strategy

    # README: `meltano invoke dbt-postgres run --full-refresh` rebuilds it from the loaded table.
    result = elt.run("invoke", "dbt-postgres", "run", "--full-refresh", "--select", "bolna__calls")
    assert "sql incremental model bolna_analytics.bolna__calls" in result.stderr
    # Rebuilt: every call selected, none merged.
    assert f"[SELECT {len(elt.world.executions)} in " in result.stderr


def test_the_data_tests_fail_on_bad_data(elt: Pipeline) -> None:
    elt.run("run", "bolna-elt")
    with elt.connect() as conn:
        # Daily figures that do not add up to the calls.
        conn.execute(
            "UPDATE bolna_analytics.bolna__agent_daily SET calls = calls + 1"
            " WHERE created_date = (SELECT max(created_date) FROM bolna_analytics"
            ".bolna__agent_daily)"
        )
    failed = meltano(elt.project, "invoke", "dbt-postgres:test", env=elt.env, check=False)
    assert failed.returncode != 0
    assert re.search(r"FAIL \d+ assert_agent_daily_adds_up_to_calls", failed.stderr)
    assert " ERROR=0 " in dbt_summary(elt.run("invoke", "dbt-postgres:build").stderr)

    with elt.connect() as conn:
        # A status the project does not know, and a call of an agent that is not loaded.
        conn.execute(
            "INSERT INTO bolna.executions (id, agent_id, status, created_at, _sdc_batched_at)"
            " VALUES ('odd-status', %s, 'on-hold', now(), now()),"
            " ('no-agent', 'unknown-agent', 'completed', now(), now())",
            (elt.world.agent_ids[0],),
        )
    # The job fails on the first failing test, after the load (and its state) completed.
    state_before = elt.state()
    arrived = elt.world.add_calls(3)
    job = meltano(elt.project, "run", "bolna-elt", env=elt.env, check=False)
    assert job.returncode != 0
    assert re.search(r"FAIL 1 accepted_values_stg_bolna__executions_status", job.stderr)
    assert set(arrived) <= {call_id for call_id, _ in elt.execution_rows()}
    assert elt.state() != state_before
    elt.run("invoke", "dbt-postgres:run")  # models only: `build` skips those after a failure
    failed = meltano(elt.project, "invoke", "dbt-postgres:test", env=elt.env, check=False)
    assert failed.returncode != 0
    assert re.search(r"FAIL 1 accepted_values_stg_bolna__executions_status", failed.stderr)
    assert re.search(r"FAIL 1 accepted_values_bolna__calls_status", failed.stderr)
    assert re.search(r"FAIL 1 relationships_bolna__calls_agent_id", failed.stderr)
    assert re.search(r"FAIL 1 relationships_bolna__agent_daily_agent_id", failed.stderr)


def test_source_freshness(elt: Pipeline) -> None:
    elt.run("run", "bolna-elt")

    def freshness(hours_ago: int) -> t.Any:
        with elt.connect() as conn:
            conn.execute(
                "UPDATE bolna.executions SET _sdc_batched_at ="
                " (now() at time zone 'utc') - make_interval(hours => %s)",
                (hours_ago,),
            )
        return meltano(elt.project, "invoke", "dbt-postgres:freshness", env=elt.env, check=False)

    fresh, late, stale = freshness(0), freshness(4), freshness(25)
    assert fresh.returncode == 0
    assert "PASS freshness of bolna.executions" in fresh.stderr
    assert late.returncode == 0
    assert "WARN freshness of bolna.executions" in late.stderr
    assert stale.returncode != 0
    assert "ERROR STALE freshness of bolna.executions" in stale.stderr


def test_docs_generate_documents_every_model(elt: Pipeline) -> None:
    elt.run("run", "bolna-elt")
    elt.run("invoke", "dbt-postgres:docs-generate")
    target = elt.project / DBT_TARGET["dbt-postgres"]
    catalog = json.loads((target / "catalog.json").read_text())
    manifest = json.loads((target / "manifest.json").read_text())
    for name in MODELS:
        node = f"model.bolna.{name}"
        assert catalog["nodes"][node]["metadata"]["schema"] == ANALYTICS_SCHEMA
        assert manifest["nodes"][node]["description"], name
    columns = catalog["nodes"]["model.bolna.bolna__calls"]["columns"]
    assert {"call_id", "agent_name", "is_final", "duration_s", "created_date"} <= set(columns)


def test_models_built_in_another_schema(elt: Pipeline) -> None:
    """README: `DBT_POSTGRES_SCHEMA=bolna_analytics_dev meltano invoke dbt-postgres:build`."""
    elt.run("run", "bolna-to-postgres")
    env = {**elt.env, "DBT_POSTGRES_SCHEMA": "bolna_analytics_dev"}
    meltano(elt.project, "invoke", "dbt-postgres:build", env=env)
    with elt.connect() as conn:
        (calls,) = conn.execute("SELECT count(*) FROM bolna_analytics_dev.bolna__calls").fetchone()
        schemas = conn.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'bolna%'"
        ).fetchall()
    assert calls == len(elt.world.executions)
    assert sorted(schema for (schema,) in schemas) == ["bolna", "bolna_analytics_dev"]


@pytest.mark.parametrize("variable", ["TARGET_POSTGRES_USER", "TARGET_POSTGRES_DATABASE"])
def test_a_missing_connection_variable_is_named(elt: Pipeline, variable: str) -> None:
    env = {key: value for key, value in elt.env.items() if key != variable}
    result = meltano(elt.project, "invoke", "dbt-postgres:run", env=env, check=False)
    assert result.returncode != 0
    assert f"Env var required but not provided: '{variable}'" in result.stderr
