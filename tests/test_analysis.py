"""README "Analysing calls in SQL": every dbt analysis in transform/analyses/, compiled by
`meltano invoke dbt-postgres:compile` and run with psql as the README says, against an account
loaded by `meltano run` and modelled by dbt, gives exactly the figures of the calls the fake API
served (computed here from `world.executions`).

Each analysis runs against both builds: bolna_analytics (over tap-bolna's load, by dbt-postgres)
and bolna_pii_safe_analytics (over tap-bolna--pii-safe's, by dbt-postgres--pii-safe), which must
answer every question the same way.
"""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
import subprocess
import typing as t
from collections import Counter, defaultdict
from decimal import ROUND_HALF_UP, Decimal

import pytest

from tests.e2e_support import (
    ANALYTICS_SCHEMA,
    DBT_TARGET,
    PII_SAFE_ANALYTICS_SCHEMA,
    PROJECT_ROOT,
    Pipeline,
)
from tests.fake_api.world import parse_timestamp
from tests.postgres import find_postgres_bin_dir

# Meltano and PostgreSQL: run once, on one Python (`make test`; `make e2e` runs only these).
pytestmark = pytest.mark.e2e

ANALYSES = PROJECT_ROOT / "transform" / "analyses"
FAILED_STATUSES = ("failed", "error")  # bolna_failed_statuses in transform/dbt_project.yml
PAGE_SIZE = 20
TESTED_FILES = {
    "calls_by_status.sql",
    "completion_rate.sql",
    "call_duration.sql",
    "cost_per_day.sql",
    "failed_calls.sql",
    "voicemail_rate.sql",
    "agent_calls.sql",
}
# Each dbt utility of meltano.yml and the schema it builds the models in.
BUILDS = {"dbt-postgres": ANALYTICS_SCHEMA, "dbt-postgres--pii-safe": PII_SAFE_ANALYTICS_SCHEMA}

if t.TYPE_CHECKING:
    from pathlib import Path

Call = dict[str, t.Any]


@pytest.fixture(scope="module", params=list(BUILDS))
def utility(request: pytest.FixtureRequest) -> str:
    return t.cast("str", request.param)


@pytest.fixture(scope="module")
def warehouse(modelled_warehouse: Pipeline) -> Pipeline:
    """Both loads and both builds of the models (nothing here changes them)."""
    return modelled_warehouse


@pytest.fixture(scope="module")
def compiled(warehouse: Pipeline, utility: str) -> Path:
    """`meltano invoke <utility>:compile`, as the README says; the compiled analyses' folder."""
    warehouse.run("invoke", f"{utility}:compile")
    return warehouse.project / DBT_TARGET[utility] / "compiled" / "bolna" / "analyses"


@pytest.fixture(scope="module")
def calls(warehouse: Pipeline) -> list[Call]:
    return list(warehouse.world.executions.values())


def psql(warehouse: Pipeline, compiled: Path, analysis: str, **variables: str) -> list[dict]:
    """`psql <url> [-v name=value ...] -f <compiled analysis>`, as in the README; the rows as
    dicts of text (psql's CSV output, NULL as '')."""
    server = warehouse.postgres
    url = (
        f"postgresql://{server.user}:{server.password}@{server.host}:{server.port}/"
        f"{warehouse.database}"
    )
    executable = shutil.which("psql") or str(find_postgres_bin_dir() / "psql")
    readme_command = [executable, url]
    for name, value in variables.items():
        readme_command += ["-v", f"{name}={value}"]
    readme_command += ["-f", str(compiled / analysis)]
    result = subprocess.run(
        [*readme_command, "--csv", "--no-psqlrc", "--set=ON_ERROR_STOP=1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


def percent(part: int, whole: int) -> Decimal:
    """100 * part / whole to one decimal, rounded half away from zero like PostgreSQL's round()."""
    return (Decimal(100) * part / whole).quantize(Decimal("0.1"), ROUND_HALF_UP)


def newest_first(selected: list[Call]) -> list[Call]:
    return sorted(selected, key=lambda call: (call["created_at"], call["id"]), reverse=True)


def test_every_analysis_is_tested_and_reads_only_models() -> None:
    assert {path.name for path in ANALYSES.glob("*.sql")} == TESTED_FILES
    assert not (PROJECT_ROOT / "analysis").exists()  # the raw-table queries it replaced
    for path in ANALYSES.glob("*.sql"):
        text = path.read_text()
        first_line = text.splitlines()[0]
        assert first_line.startswith("-- "), path.name
        assert first_line.endswith("?"), path.name  # the question the query answers
        # One place per metric: analyses build on the models, never on the loaded tables.
        assert "source(" not in text, path.name
        assert set(re.findall(r"ref\('(\w+)'\)", text)) <= {"bolna__calls", "bolna__agent_daily"}


def test_analyses_read_the_schema_their_build_made(compiled: Path, utility: str) -> None:
    text = (compiled / "calls_by_status.sql").read_text()
    assert f'"{BUILDS[utility]}"."bolna__calls"' in text


def test_calls_by_status(warehouse: Pipeline, compiled: Path, calls: list[Call]) -> None:
    rows = psql(warehouse, compiled, "calls_by_status.sql")
    by_status = Counter(call["status"] for call in calls)
    assert len(by_status) >= 10  # the fake serves most statuses, pending ones included
    expected = [
        {"status": status, "calls": str(count), "percent_of_calls": percent(count, len(calls))}
        for status, count in sorted(by_status.items(), key=lambda item: (-item[1], item[0]))
    ]
    assert [{**row, "percent_of_calls": Decimal(row["percent_of_calls"])} for row in rows] == (
        expected
    )


def test_completion_rate(warehouse: Pipeline, compiled: Path, calls: list[Call]) -> None:
    (row,) = psql(warehouse, compiled, "completion_rate.sql")
    completed = sum(call["status"] == "completed" for call in calls)
    assert int(row["completed_calls"]) == completed
    assert int(row["calls"]) == len(calls)
    assert Decimal(row["completion_rate_percent"]) == percent(completed, len(calls))


def test_call_duration_average_and_p95(
    warehouse: Pipeline, compiled: Path, calls: list[Call]
) -> None:
    (row,) = psql(warehouse, compiled, "call_duration.sql")
    # The fake sends durations as integers or numeric strings; the tap loads integers.
    durations = sorted(
        int(call["telephony_data"]["duration"])
        for call in calls
        if call["status"] == "completed" and call["telephony_data"]["duration"] is not None
    )
    assert len(durations) > 100
    assert int(row["completed_calls"]) == len(durations)
    average = (Decimal(sum(durations)) / len(durations)).quantize(Decimal("0.1"), ROUND_HALF_UP)
    assert Decimal(row["average_seconds"]) == average
    # percentile_disc(0.95): the value at 1-based position ceil(0.95 * n) in ascending order.
    assert int(row["p95_seconds"]) == durations[math.ceil(0.95 * len(durations)) - 1]


def test_cost_per_day(warehouse: Pipeline, compiled: Path, calls: list[Call]) -> None:
    rows = psql(warehouse, compiled, "cost_per_day.sql")
    per_day: dict[str, list[Decimal]] = defaultdict(list)
    for call in calls:
        day = parse_timestamp(call["created_at"]).date().isoformat()  # UTC date
        per_day[day].append(Decimal(repr(call["total_cost"])))  # the JSON the API sent
    expected = [(day, len(costs), sum(costs, Decimal(0))) for day, costs in sorted(per_day.items())]
    assert len(expected) >= 20
    assert [
        (row["day"], int(row["calls"]), Decimal(row["total_cost_cents"])) for row in rows
    ] == expected


def test_failed_calls_with_their_error_message(
    warehouse: Pipeline, compiled: Path, calls: list[Call]
) -> None:
    rows = psql(warehouse, compiled, "failed_calls.sql")
    failed = newest_first([call for call in calls if call["status"] in FAILED_STATUSES])
    assert len(failed) > 10
    assert all(call["error_message"] for call in failed)
    assert [
        (row["call_id"], row["agent_id"], row["status"], row["error_message"]) for row in rows
    ] == [(call["id"], call["agent_id"], call["status"], call["error_message"]) for call in failed]


def test_voicemail_rate(warehouse: Pipeline, compiled: Path, calls: list[Call]) -> None:
    (row,) = psql(warehouse, compiled, "voicemail_rate.sql")
    voicemail = sum(call["answered_by_voice_mail"] for call in calls)
    assert voicemail > 0
    assert int(row["voicemail_calls"]) == voicemail
    assert int(row["calls"]) == len(calls)
    assert Decimal(row["voicemail_rate_percent"]) == percent(voicemail, len(calls))


def test_agent_executions_page_replaces_the_seeds_endpoint(
    warehouse: Pipeline, compiled: Path, calls: list[Call]
) -> None:
    """`/api/executions?agent_id=…&page_size=20` as one parameterised query, per agent."""
    for agent_id in warehouse.world.agent_ids:
        rows = psql(
            warehouse,
            compiled,
            "agent_calls.sql",
            agent_id=agent_id,
            page_size=str(PAGE_SIZE),
        )
        expected = newest_first([call for call in calls if call["agent_id"] == agent_id])
        assert len(expected) > PAGE_SIZE
        assert [row["call_id"] for row in rows] == [call["id"] for call in expected[:PAGE_SIZE]]
        assert {row["status"] for row in rows} <= {call["status"] for call in expected}
