"""docs/http-api.md: the HTTP endpoint `meltano invoke bolna-api` (package api/), end to end.

After `meltano run` (tap-bolna -> target-postgres) and the dbt build of the session's account
(`modelled_warehouse`), the real server runs as a Meltano utility on 127.0.0.1 and is asked over
real HTTP; every answer is checked against the calls the fake API served (`world.executions`).
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import threading
import typing as t
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import urljoin

import pytest
import requests
import yaml

from tests.e2e_support import (
    EXECUTION_COLUMNS,
    MELTANO,
    PII_SAFE_ANALYTICS_SCHEMA,
    PROJECT_ROOT,
    Pipeline,
    as_loaded,
    meltano,
)
from tests.test_pii_safe import hashed, served_personal_data

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fake_api import World

# Meltano, PostgreSQL and dbt: run once, on one Python (`make test`'s e2e lane, `make e2e`).
pytestmark = pytest.mark.e2e

Call = dict[str, t.Any]
START_TIMEOUT = 90
TOKEN = "e2e-api-token-9f2c41d7b6a05e38"  # noqa: S105 - a test token
FAILED_STATUSES = {"failed", "error"}  # bolna_failed_statuses in transform/dbt_project.yml
LISTENING = re.compile(r"INFO bolna-api: Serving schema (\S+) of .* on http://127\.0\.0\.1:(\d+)/")


@dataclass
class Server:
    """A running `meltano invoke bolna-api`, its output, and every body it answered."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    url: str = ""
    bodies: list[str] = field(default_factory=list)
    listening: threading.Event = field(default_factory=threading.Event)

    def get(
        self, path: str, params: dict[str, t.Any] | None = None, **kwargs: t.Any
    ) -> requests.Response:
        response = requests.get(urljoin(self.url, path), params=params, timeout=60, **kwargs)
        self.bodies.append(response.text)
        return response

    def ok(self, path: str, params: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        response = self.get(path, params)
        assert response.status_code == 200, response.text
        body = response.json(parse_float=Decimal)
        assert body["success"] is True
        return t.cast("dict[str, t.Any]", body["data"])

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def read_output(server: Server) -> None:
    assert server.process.stdout is not None
    for line in server.process.stdout:
        server.lines.append(line.rstrip("\n"))
        if match := LISTENING.search(line):
            server.url = f"http://127.0.0.1:{match.group(2)}"
            server.listening.set()
    server.listening.set()  # it ended: nobody needs to wait any longer


def invoke(pipeline: Pipeline, plugin: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [MELTANO, "invoke", plugin, *args],
        cwd=pipeline.project,
        env={**pipeline.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stopped with meltano's child
    )


@contextlib.contextmanager
def serve(pipeline: Pipeline, plugin: str = "bolna-api", **env: str) -> Iterator[Server]:
    """Start the utility on a free port, wait for its INFO line, stop it afterwards."""
    server = Server(invoke(pipeline, plugin, "--port", "0", **env))
    reader = threading.Thread(target=read_output, args=(server,), daemon=True)
    reader.start()
    try:
        assert server.listening.wait(START_TIMEOUT), server.output
        assert server.url, f"{plugin} did not start:\n{server.output}"
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=30)
        reader.join(timeout=10)
        if server.process.stdout is not None:
            server.process.stdout.close()


def refused(pipeline: Pipeline, *args: str, **env: str) -> tuple[int, str]:
    """Run the utility's command expecting it not to start: its exit code and output.

    The executable Meltano installed, with the TARGET_POSTGRES_* variables it falls back to
    without Meltano: refusals are the server's, and this saves a Meltano start-up each.
    """
    command = (
        pipeline.project / ".meltano" / "utilities" / "bolna-api" / "venv" / "bin" / "bolna-api"
    )
    result = subprocess.run(
        [str(command), *args],
        env={**pipeline.env, **env},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def newest_first(calls: t.Iterable[Call]) -> list[Call]:
    return sorted(calls, key=lambda call: (call["created_at"], call["id"]), reverse=True)


def walk(server: Server, params: dict[str, t.Any], *, by: str = "page_number") -> list[Call]:
    """Every page of a listing, by page_number or by following the Link header's cursor."""
    calls: list[Call] = []
    params = {"page_size": 25, **params}
    response = server.get("/api/executions", params)
    number = 1
    while True:
        assert response.status_code == 200, response.text
        page = response.json()["data"]
        assert (page["page_number"], page["page_size"]) == (number, params["page_size"])
        calls += page["data"]
        assert page["has_more"] == ("next" in response.links)
        if not page["has_more"]:
            assert page["total"] == len(calls)
            return calls
        assert len(page["data"]) == params["page_size"]
        number += 1
        if by == "cursor":
            response = server.get(response.links["next"]["url"])
        else:
            response = server.get("/api/executions", {**params, "page_number": number})


def ids(calls: t.Iterable[Call]) -> list[str]:
    return [call["id"] for call in calls]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def warehouse(modelled_warehouse: Pipeline) -> Pipeline:
    """Both loads and both builds of the models; nothing here changes them."""
    return modelled_warehouse


@pytest.fixture(scope="module")
def world(warehouse: Pipeline) -> World:
    return warehouse.world


@pytest.fixture(scope="module")
def calls(world: World) -> list[Call]:
    """Every call the fake served, newest first, as the tap loads it."""
    return newest_first(as_loaded(call) for call in world.executions.values())


@pytest.fixture(scope="module")
def api(warehouse: Pipeline) -> Iterator[Server]:
    """`meltano invoke bolna-api --port 0`: the plain models, no token."""
    with serve(warehouse) as server:
        yield server


# --------------------------------------------------------------------------- the listing


def test_it_says_where_it_listens_and_which_schema_in_one_info_line(api: Server) -> None:
    info = [line for line in api.lines if "INFO bolna-api:" in line]
    assert len(info) == 1, api.output
    assert LISTENING.search(info[0])
    assert LISTENING.search(info[0]).group(1) == "bolna_analytics"  # type: ignore[union-attr]
    assert f"{api.url}/api/executions" in info[0]


def test_paging_an_agent_returns_each_call_once_newest_first(
    api: Server, world: World, calls: list[Call]
) -> None:
    for agent_id in world.agent_ids:
        expected = [call for call in calls if call["agent_id"] == agent_id]
        assert len(expected) > 100
        by_number = walk(api, {"agent_id": agent_id, "page_size": 9})
        assert ids(by_number) == ids(expected)
        assert ids(walk(api, {"agent_id": agent_id, "page_size": 9}, by="cursor")) == ids(expected)


def test_every_call_is_the_object_bolna_returns(api: Server, calls: list[Call]) -> None:
    """Same fields, names, nesting and values as the fake served (after the tap's normalisation)."""
    served = walk(api, {"page_size": 100})
    assert served == calls
    assert {tuple(call) for call in served} == {EXECUTION_COLUMNS}  # the loaded columns' order
    some = calls[::57]
    for call in some:
        assert api.ok(f"/api/executions/{call['id']}") == json.loads(
            json.dumps(call), parse_float=Decimal
        )


def test_the_guides_envelope_and_defaults(api: Server, calls: list[Call]) -> None:
    response = api.get("/api/executions")
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["success", "data"]
    assert list(body["data"]) == ["page_number", "page_size", "total", "has_more", "data"]
    assert body["data"]["page_number"] == 1
    assert body["data"]["page_size"] == 50
    assert body["data"]["total"] == len(calls)
    assert body["data"]["has_more"] is True
    assert ids(body["data"]["data"]) == ids(calls[:50])
    last = api.ok("/api/executions", {"page_size": 100, "page_number": 4})
    assert (last["has_more"], ids(last["data"])) == (False, ids(calls[300:]))
    beyond = api.ok("/api/executions", {"page_size": 100, "page_number": 9})
    assert (beyond["total"], beyond["has_more"], beyond["data"]) == (len(calls), False, [])


def filter_cases(world: World) -> list[tuple[dict[str, str], t.Callable[[Call], bool]]]:
    """(query, which calls it must return): every path of the endpoint (numbered, counted)."""
    agent, other = world.agent_ids[0], world.agent_ids[1]
    members = Counter(
        call["batch_id"] for call in world.executions.values() if call.get("batch_id")
    )
    batch = members.most_common(1)[0][0]
    stamps = sorted(call["created_at"] for call in world.executions.values())
    early, late = stamps[60], stamps[-80]  # the bounds are calls' own created_at: inclusive
    return [
        ({"batch_id": batch}, lambda c: c["batch_id"] == batch),
        ({"status": "completed"}, lambda c: c["status"] == "completed"),
        ({"status": "ringing"}, lambda c: c["status"] == "ringing"),
        ({"call_type": "inbound"}, lambda c: c["telephony_data"]["call_type"] == "inbound"),
        ({"from": early, "to": late}, lambda c: early <= c["created_at"] <= late),
        (
            {"agent_id": agent, "from": early},
            lambda c: c["agent_id"] == agent and c["created_at"] >= early,
        ),
        (
            {"agent_id": other, "to": late},
            lambda c: c["agent_id"] == other and c["created_at"] <= late,
        ),
        (
            {"agent_id": agent, "status": "completed", "to": late},
            lambda c: (
                c["agent_id"] == agent and c["status"] == "completed" and c["created_at"] <= late
            ),
        ),
        (
            {"batch_id": batch, "from": early},
            lambda c: c["batch_id"] == batch and c["created_at"] >= early,
        ),
        (
            {"agent_id": other, "batch_id": batch},
            lambda c: c["agent_id"] == other and c["batch_id"] == batch,
        ),
        ({"agent_id": "no-such-agent"}, lambda _c: False),
        ({"from": late, "to": late}, lambda c: c["created_at"] == late),
    ]


def test_filters_match_the_calls_the_fake_served(
    api: Server, world: World, calls: list[Call]
) -> None:
    for query, wanted in filter_cases(world):
        expected = ids(call for call in calls if wanted(call))
        assert ids(walk(api, query)) == expected, query
        assert ids(walk(api, query, by="cursor")) == expected, query
        assert api.ok("/api/executions", query)["total"] == len(expected), query
    assert any(
        len(ids(call for call in calls if wanted(call))) > 25 for _, wanted in filter_cases(world)
    )


def test_from_and_to_take_any_iso_8601_time_and_any_range(api: Server, calls: list[Call]) -> None:
    # A year wide (Bolna allows 7 days), with an offset: 05:30 in Kolkata is 00:00 UTC.
    moment = calls[200]["created_at"]  # e.g. 2026-11-20T07:12:03.123456Z
    day = moment[:10]
    same_day = [call for call in calls if call["created_at"][:10] == day]
    page = api.ok(
        "/api/executions",
        {"from": f"{day}T05:30:00+05:30", "to": f"{day}T23:59:59.999999Z", "page_size": 100},
    )
    assert ids(page["data"]) == ids(same_day)
    oldest, newest = calls[-1]["created_at"], calls[0]["created_at"]
    years = {"from": f"{int(oldest[:4]) - 1}{oldest[4:10]}", "to": f"{int(newest[:4]) + 1}-01-01"}
    assert api.ok("/api/executions", years)["total"] == len(calls)


def test_calls_created_at_the_same_instant_are_ordered_by_id(
    warehouse: Pipeline, world: World
) -> None:
    """The same calls with created_at cut to the day (about 7 per agent and day: ties), built by
    dbt into a schema of their own and served from it: each call once, ties by id, descending."""
    with warehouse.connect() as conn:
        conn.execute("drop schema if exists ties cascade")
        conn.execute("create schema ties")
        tables = conn.execute(
            "select table_name from information_schema.tables where table_schema = 'bolna'"
        ).fetchall()
        for (table,) in tables:
            conn.execute(f'create table ties."{table}" (like bolna."{table}" including all)')
            conn.execute(f'insert into ties."{table}" select * from bolna."{table}"')  # noqa: S608
        conn.execute("update ties.executions set created_at = date_trunc('day', created_at)")
    schemas = {"DBT_POSTGRES_SOURCE_SCHEMA": "ties", "DBT_POSTGRES_SCHEMA": "ties_analytics"}
    try:
        # Only the models it serves (their data tests ran on the session's build).
        meltano(
            warehouse.project,
            "invoke",
            "dbt-postgres",
            "run",
            "--select",
            "+bolna__executions",
            "+bolna__calls",
            env={**warehouse.env, **schemas},
        )
        with serve(warehouse, BOLNA_API_SCHEMA="ties_analytics") as server:
            for agent_id in world.agent_ids:
                calls = [
                    as_loaded(c) for c in world.executions.values() if c["agent_id"] == agent_id
                ]
                for call in calls:
                    call["created_at"] = call["created_at"][:10] + "T00:00:00.000000Z"
                expected = ids(newest_first(calls))
                assert len({c["created_at"] for c in calls}) < len(calls) / 3  # many ties
                for by in ("page_number", "cursor"):
                    got = walk(server, {"agent_id": agent_id, "page_size": 4}, by=by)
                    assert ids(got) == expected, by
            everything = walk(server, {"page_size": 6, "status": "completed"}, by="cursor")
            completed = [
                as_loaded(c) for c in world.executions.values() if c["status"] == "completed"
            ]
            for call in completed:
                call["created_at"] = call["created_at"][:10] + "T00:00:00.000000Z"
            assert ids(everything) == ids(newest_first(completed))
    finally:
        with warehouse.connect() as conn:
            conn.execute("drop schema if exists ties, ties_analytics cascade")


# --------------------------------------------------------------------------- the other uses


def metrics_of(calls: list[Call]) -> dict[str, t.Any]:
    """The guide's figures, computed from the calls served (rounding as PostgreSQL's round)."""

    def one_decimal(value: Decimal) -> Decimal:
        return value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)

    completed = [call for call in calls if call["status"] == "completed"]
    durations = [
        Decimal(call["telephony_data"]["duration"])
        for call in completed
        if call["telephony_data"]["duration"] is not None
    ]
    return {
        "total_calls": len(calls),
        "completed_calls": len(completed),
        "completion_rate": one_decimal(Decimal(100 * len(completed)) / len(calls))
        if calls
        else None,
        "average_duration": one_decimal(sum(durations) / len(durations)) if durations else None,
        "failed_calls": sum(call["status"] in FAILED_STATUSES for call in calls),
        "total_cost": sum((Decimal(repr(call["total_cost"])) for call in calls), Decimal(0)),
    }


def test_metrics_are_the_figures_of_the_calls_served(
    api: Server, world: World, calls: list[Call]
) -> None:
    assert api.ok("/api/metrics") == metrics_of(calls)
    for query, wanted in filter_cases(world):
        assert api.ok("/api/metrics", query) == metrics_of([c for c in calls if wanted(c)]), query


def test_the_csv_has_one_row_per_call(api: Server, world: World, calls: list[Call]) -> None:
    response = api.get("/api/executions.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "chunked" in response.headers.get("transfer-encoding", "")  # streamed, not sized
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["Execution ID", "Status", "Duration", "Recipient", "Created"]
    duration = "telephony_data"
    assert rows[1:] == [
        [
            call["id"],
            call["status"],
            "" if call[duration]["duration"] is None else str(call[duration]["duration"]),
            call["telephony_data"]["to_number"],
            call["created_at"],
        ]
        for call in calls
    ]
    agent = world.agent_ids[2]
    rows = list(
        csv.DictReader(io.StringIO(api.get("/api/executions.csv", {"agent_id": agent}).text))
    )
    assert [row["Execution ID"] for row in rows] == ids(c for c in calls if c["agent_id"] == agent)


def test_one_call_or_a_json_404(api: Server, calls: list[Call]) -> None:
    assert api.ok(f"/api/executions/{calls[0]['id']}")["id"] == calls[0]["id"]
    missing = api.get("/api/executions/no-such-call")
    assert missing.status_code == 404
    assert missing.json() == {
        "success": False,
        "error": "no execution 'no-such-call' in this warehouse",
    }
    for path in ("/", "/api", "/api/execution", "/api/executions/a/b", "/docs"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert response.json()["success"] is False
        assert path in response.json()["error"]
    wrong_method = requests.post(f"{api.url}/api/executions", timeout=10)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["success"] is False


def test_the_openapi_description_is_served(api: Server) -> None:
    document = api.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {
        "/api/executions",
        "/api/executions/{execution_id}",
        "/api/metrics",
        "/api/executions.csv",
    } <= set(document["paths"])
    listed = {p["name"] for p in document["paths"]["/api/executions"]["get"]["parameters"]}
    assert listed == {
        "agent_id",
        "batch_id",
        "sub_account_id",
        "status",
        "call_type",
        "from",
        "to",
        "page_number",
        "page_size",
        "cursor",
    }
    statuses = next(
        p
        for p in document["paths"]["/api/executions"]["get"]["parameters"]
        if p["name"] == "status"
    )["schema"]["enum"]
    dbt_vars = yaml.safe_load((PROJECT_ROOT / "transform" / "dbt_project.yml").read_text())["vars"]
    assert set(statuses) == {*dbt_vars["bolna_pending_statuses"], *dbt_vars["bolna_final_statuses"]}


# --------------------------------------------------------------------------- bad input


BAD_INPUT = [
    ("/api/executions", {"page_size": "101"}, "page_size"),
    ("/api/executions", {"page_size": "0"}, "page_size"),
    ("/api/executions", {"page_size": "ten"}, "page_size"),
    ("/api/executions", {"page_number": "0"}, "page_number"),
    ("/api/executions", {"page_number": "-2"}, "page_number"),
    ("/api/executions", {"page_number": "1.5"}, "page_number"),
    ("/api/executions", {"from": "yesterday"}, "from"),
    ("/api/executions", {"to": "2026-13-01"}, "to"),
    ("/api/executions", {"from": "2026-02-01", "to": "2026-01-01"}, "from"),
    ("/api/executions", {"status": "done"}, "status"),
    ("/api/executions", {"call_type": "sideways"}, "call_type"),
    ("/api/executions", {"agentid": "x"}, "agentid"),
    ("/api/executions", {"cursor": "not-a-cursor"}, "cursor"),
    ("/api/executions", {"cursor": "eA", "page_number": "2"}, "cursor"),
    ("/api/executions?status=completed&status=failed", None, "status"),
    ("/api/metrics", {"status": "done"}, "status"),
    ("/api/metrics", {"page_size": "10"}, "page_size"),
    ("/api/executions.csv", {"from": "31/01/2026"}, "from"),
    ("/api/executions/some-id", {"verbose": "1"}, "verbose"),
]


@pytest.mark.parametrize(("path", "params", "parameter"), BAD_INPUT)
def test_bad_input_is_a_400_naming_the_parameter(
    api: Server, path: str, params: dict[str, str] | None, parameter: str
) -> None:
    response = api.get(path, params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"].startswith(f"{parameter}: ")
    assert "\n" not in body["error"]


def test_nothing_a_client_sends_reaches_sql_but_as_a_bound_value(
    api: Server, warehouse: Pipeline, calls: list[Call]
) -> None:
    for value in ("x' or '1'='1", "'; drop table bolna_analytics.bolna__calls; --", "%(agent_id)s"):
        for name in ("agent_id", "batch_id"):
            assert api.ok("/api/executions", {name: value})["total"] == 0, value
            assert api.ok("/api/metrics", {name: value})["total_calls"] == 0, value
        assert api.get(f"/api/executions/{value}").status_code == 404
    with warehouse.connect() as conn:
        (count,) = conn.execute("select count(*) from bolna_analytics.bolna__calls").fetchone() or (
            0,
        )
    assert count == len(calls)


# --------------------------------------------------------------------------- many clients


def test_concurrent_clients_get_no_errors_and_no_duplicates(
    api: Server, warehouse: Pipeline, world: World, calls: list[Call]
) -> None:
    """16 clients at once, each walking a listing to its end (timings: benchmarks/api.py)."""
    walks = [
        (
            {"agent_id": world.agent_ids[n % 3], "page_size": 7 + n},
            "cursor" if n % 2 else "page_number",
        )
        for n in range(12)
    ] + [
        ({"status": "completed", "page_size": 30}, "page_number"),
        ({"page_size": 40}, "cursor"),
    ] * 2

    def one(task: tuple[dict[str, t.Any], str]) -> list[str]:
        query, by = task
        return ids(walk(api, query, by=by))

    with ThreadPoolExecutor(max_workers=len(walks)) as pool:
        results = list(pool.map(one, walks))
    for (query, _by), got in zip(walks, results, strict=True):
        wanted = [
            call["id"]
            for call in calls
            if call["agent_id"] == query.get("agent_id", call["agent_id"])
            and call["status"] == query.get("status", call["status"])
        ]
        assert len(got) == len(set(got))
        assert got == wanted, query
    with warehouse.connect() as conn:
        (connections,) = conn.execute(
            "select count(*) from pg_stat_activity where application_name = 'bolna-api'"
        ).fetchone() or (0,)
    assert 1 <= connections <= 4  # the pool (pool_size 4), not one connection per client


# --------------------------------------------------------------------------- safe by default


def test_every_connection_is_read_only(warehouse: Pipeline) -> None:
    """The server's own connection settings, in its own venv: PostgreSQL refuses any write."""
    python = warehouse.project / ".meltano" / "utilities" / "bolna-api" / "venv" / "bin" / "python"
    script = (
        "import os, psycopg\n"
        "from bolna_api.settings import Settings\n"
        "settings = Settings.from_environment(os.environ)\n"
        "with psycopg.connect(**settings.connection_kwargs(), autocommit=True) as conn:\n"
        "    print(conn.execute('show default_transaction_read_only').fetchone()[0])\n"
        "    try:\n"
        "        conn.execute('create table bolna_analytics.intruder (x int)')\n"
        "    except psycopg.errors.ReadOnlySqlTransaction as error:\n"
        "        print(type(error).__name__)\n"
    )
    result = subprocess.run(
        [str(python), "-c", script], env=warehouse.env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["on", "ReadOnlySqlTransaction"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])  # noqa: S104 - refused
def test_it_refuses_to_listen_beyond_this_machine_without_a_token(
    warehouse: Pipeline, host: str
) -> None:
    code, output = refused(warehouse, "--host", host, "--port", "0")
    assert code == 2
    assert f"refusing to listen on {host} without a token: set BOLNA_API_TOKEN" in output


def test_a_short_token_is_refused(warehouse: Pipeline) -> None:
    code, output = refused(warehouse, "--port", "0", BOLNA_API_TOKEN="short")  # noqa: S106
    assert code == 2
    assert "BOLNA_API_TOKEN must be at least 16 characters" in output


def test_with_a_token_every_request_needs_it(warehouse: Pipeline, calls: list[Call]) -> None:
    with serve(warehouse, BOLNA_API_TOKEN=TOKEN) as server:
        assert "bearer token required" in server.output
        for path in (
            "/api/executions",
            "/api/metrics",
            "/api/executions.csv",
            "/openapi.json",
            "/nope",
        ):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = server.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.json()["success"] is False
                assert response.headers["WWW-Authenticate"] == "Bearer"
        good = server.get("/api/executions", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.json()["data"]["total"] == len(calls)
        assert TOKEN not in server.output + "".join(server.bodies)


def test_credentials_never_appear_in_answers_or_logs(api: Server, warehouse: Pipeline) -> None:
    """After everything above (and a failing start-up), no password in any body or log line."""
    password = warehouse.postgres.password
    assert api.bodies
    assert password not in api.output + "".join(api.bodies)
    wrong = {"TARGET_POSTGRES_PASSWORD": "wrong-pw-61d0a"}
    code, output = refused(warehouse, "--port", "0", **wrong)
    assert code == 1
    (line,) = [line for line in output.splitlines() if "ERROR bolna-api:" in line]
    assert (
        f"cannot connect to the warehouse 127.0.0.1:{warehouse.postgres.port}/{warehouse.database}"
        in line
    )
    assert "wrong-pw-61d0a" not in output
    assert password not in output


def test_without_the_models_it_says_what_to_run(warehouse: Pipeline) -> None:
    code, output = refused(warehouse, "--port", "0", BOLNA_API_SCHEMA="bolna")
    assert code == 1
    assert "bolna.bolna__calls is missing or out of date" in output
    assert "build the models first (uv run meltano run bolna-elt" in output


def test_the_pii_safe_schema_serves_no_phone_number_or_transcript(
    warehouse: Pipeline, world: World, calls: list[Call]
) -> None:
    with serve(warehouse, "bolna-api--pii-safe") as server:
        assert f"Serving schema {PII_SAFE_ANALYTICS_SCHEMA} " in server.output
        served = walk(server, {"page_size": 100})
        assert ids(served) == ids(calls)
        server.get("/api/executions.csv")
        for call in calls[:40]:
            server.get(f"/api/executions/{call['id']}")
        text = "".join(server.bodies)
    for kind, values in served_personal_data(world).items():
        assert sorted(value for value in values if value in text) == [], f"{kind} served"
    for call in served:
        assert "transcript" not in call
        raw = world.executions[call["id"]]
        assert call["telephony_data"]["to_number"] == hashed(raw["telephony_data"]["to_number"])
        assert call["status"] == raw["status"]


# --------------------------------------------------------------------------- the project


def test_the_endpoint_is_a_utility_with_its_own_venv_reading_the_loaders_settings() -> None:
    project = yaml.safe_load((PROJECT_ROOT / "meltano.yml").read_text())
    utilities = {plugin["name"]: plugin for plugin in project["plugins"]["utilities"]}
    api = utilities["bolna-api"]
    assert api["pip_url"] == "-e ${MELTANO_PROJECT_ROOT}/api"
    settings = {setting["name"]: setting.get("value") for setting in api["settings"]}
    for part in ("HOST", "PORT", "USER", "PASSWORD", "DATABASE"):
        assert settings[f"postgres_{part.lower()}"] == f"${{TARGET_POSTGRES_{part}}}"
    assert settings["schema"] == "bolna_analytics"
    assert utilities["bolna-api--pii-safe"]["config"] == {"schema": PII_SAFE_ANALYTICS_SCHEMA}
    tap = (PROJECT_ROOT / "pyproject.toml").read_text()
    for package in ("starlette", "uvicorn", "psycopg-pool", "psycopg_pool"):
        assert package not in tap  # the tap (and its tests) get no web dependencies
    server = (PROJECT_ROOT / "api" / "bolna_api").rglob("*.py")
    assert not [path for path in server if "tap_bolna" in path.read_text()]


def test_the_servers_statuses_are_the_dbt_projects() -> None:
    tree = ast.parse((PROJECT_ROOT / "api" / "bolna_api" / "params.py").read_text())
    (statuses,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "STATUSES"
    ]
    dbt_vars = yaml.safe_load((PROJECT_ROOT / "transform" / "dbt_project.yml").read_text())["vars"]
    assert sorted(statuses) == sorted(
        dbt_vars["bolna_pending_statuses"] + dbt_vars["bolna_final_statuses"]
    )
