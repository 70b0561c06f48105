"""End to end: an agency with sub-accounts through `meltano run bolna-elt` into PostgreSQL."""

from __future__ import annotations

import typing as t
from collections import Counter

import pytest

from tap_bolna.windows import parse_timestamp
from tests.e2e_support import ANALYTICS_SCHEMA, SCHEMA, Pipeline, meltano, serve_pipeline
from tests.fake_api import World
from tests.test_api import ids, serve, walk

if t.TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator
    from pathlib import Path

    from tests.postgres import PostgresServer

# Meltano and PostgreSQL: run once, on one Python (`make test`; `make e2e` runs only these).
pytestmark = pytest.mark.e2e


@pytest.fixture
def agency_elt(
    meltano_project: Path, postgres: PostgresServer, tmp_path: Path
) -> Iterator[Pipeline]:
    """A parent account (2 agents, 90 calls) and 3 sub-accounts (2 agents, 50 calls each)."""
    world = World.generate(seed=61, agents=2, calls=90, days=6, pending_fraction=0)
    with serve_pipeline(
        meltano_project, postgres, tmp_path, world, TAP_BOLNA_INCLUDE_SUB_ACCOUNTS="true"
    ) as pipeline:
        for n in range(3):
            sub = World.generate(seed=62 + n, agents=2, calls=50, days=6, pending_fraction=0)
            pipeline.api.add_sub_account(sub, name=f"client-{n}")
        yield pipeline


def owners(pipeline: Pipeline) -> dict[str, tuple[str | None, str | None]]:
    """(sub_account_id, sub_account_name) of every call the fake serves, by call id."""
    worlds: list[tuple[str | None, str | None, World]] = [(None, None, pipeline.world)]
    worlds += [(s.id, s.name, s.world) for s in pipeline.api.sub_accounts.values()]
    found = {}
    for sub_id, name, world in worlds:
        for call_id in world.executions:
            if world.is_listed(call_id):
                found[call_id] = (sub_id, name)
    return found


def test_bolna_elt_carries_the_sub_account_through_every_model(agency_elt: Pipeline) -> None:
    result = agency_elt.run("run", "bolna-elt")
    assert "ERROR=0" in result.stderr
    for sub in agency_elt.api.sub_accounts.values():
        assert sub.api_key not in result.stdout + result.stderr
    served = owners(agency_elt)
    with agency_elt.connect() as conn:
        calls = conn.execute(
            f"SELECT call_id, sub_account_id, sub_account_name FROM {ANALYTICS_SCHEMA}.bolna__calls"  # noqa: S608
        ).fetchall()
        assert len(calls) == len(served) == 90 + 3 * 50
        assert {row[0]: (row[1], row[2]) for row in calls} == served

        daily = conn.execute(
            f"SELECT agent_id, sub_account_id, sub_account_name, calls"  # noqa: S608
            f" FROM {ANALYTICS_SCHEMA}.bolna__agent_daily"
        ).fetchall()
        per_account = Counter()
        for _agent, sub_id, _name, count in daily:
            per_account[sub_id] += count
        assert per_account == Counter(sub_id for sub_id, _ in served.values())
        assert {(sub, name) for _a, sub, name, _c in daily} == set(served.values())

        rows = conn.execute(
            f"SELECT sub_account_id, usage_date, usage_calls, loaded_calls"  # noqa: S608
            f" FROM {ANALYTICS_SCHEMA}.bolna__sub_account_daily"
        ).fetchall()
        # The parent key never sees a key column, in any table.
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s",
            (SCHEMA,),
        ).fetchall()
        assert "api_key" not in {column for (column,) in columns}
    expected: Counter[tuple[str, dt.date]] = Counter()
    for sub in agency_elt.api.sub_accounts.values():
        for call in sub.world.executions.values():
            expected[sub.id, parse_timestamp(call["created_at"]).date()] += 1
    assert {(sub, day): (usage, loaded) for sub, day, usage, loaded in rows} == {
        key: (count, count) for key, count in expected.items()
    }
    the_endpoint_filters_by_sub_account(agency_elt, served)


def the_endpoint_filters_by_sub_account(
    pipeline: Pipeline, served: dict[str, tuple[str | None, str | None]]
) -> None:
    """`bolna-api` over the same build: `sub_account_id` on a listing and on the metrics, and
    every call carrying its own (docs/http-api.md)."""
    created = {
        call_id: call["created_at"]
        for world in [pipeline.world, *(s.world for s in pipeline.api.sub_accounts.values())]
        for call_id, call in world.executions.items()
    }
    with serve(pipeline) as server:
        for sub in pipeline.api.sub_accounts.values():
            mine = sorted(
                (call_id for call_id, (owner, _name) in served.items() if owner == sub.id),
                key=lambda call_id: (created[call_id], call_id),
                reverse=True,
            )
            listed = walk(server, {"sub_account_id": sub.id, "page_size": 20})
            assert ids(listed) == mine
            assert {call["sub_account_id"] for call in listed} == {sub.id}
            metrics = server.ok("/api/metrics", {"sub_account_id": sub.id})
            assert metrics["total_calls"] == len(mine)
        parents = [call_id for call_id, (owner, _name) in served.items() if owner is None]
        assert server.ok(f"/api/executions/{parents[0]}")["sub_account_id"] is None
        assert server.ok("/api/executions", {"sub_account_id": "no-such"})["total"] == 0


def test_the_agreement_test_fails_when_usage_and_calls_disagree(agency_elt: Pipeline) -> None:
    agency_elt.run("run", "bolna-elt")
    with agency_elt.connect() as conn:
        conn.execute(
            f"UPDATE {SCHEMA}.sub_account_usage SET total_records = total_records + 1"  # noqa: S608
            " WHERE date = (SELECT min(date) FROM bolna.sub_account_usage)"
        )
        conn.commit()
    result = meltano(
        agency_elt.project, "invoke", "dbt-postgres:build", env=agency_elt.env, check=False
    )
    assert result.returncode != 0
    assert "assert_sub_account_daily_agrees" in result.stdout + result.stderr
