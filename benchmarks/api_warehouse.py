"""A big warehouse for the HTTP endpoint's benchmark, loaded without the tap.

Calls come from the fake API's `World` (the objects Bolna's API returns) and are written with
COPY straight into bolna.executions, bolna.agents and bolna.batches in the shape target-postgres
gives them (same columns and types, the tap's normalisation of durations and of
`conversation_time` applied); then the real dbt project builds the models with
`meltano invoke dbt-postgres:build`, as the job `bolna-elt` would after a load.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.types.json import Jsonb

from tests.e2e_support import EXECUTION_COLUMNS, as_loaded
from tests.fake_api import World
from tests.fake_api.world import parse_timestamp

if t.TYPE_CHECKING:
    import psycopg

    from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
MELTANO = str(Path(sys.executable).parent / "meltano")

# bolna.executions as target-postgres 0.8 creates it for the tap's schema (columns in order).
EXECUTIONS_DDL = """
create table bolna.executions (
    id text primary key, sub_account_id text, agent_id text, batch_id text,
    conversation_duration numeric, total_cost numeric, status text, error_message text,
    answered_by_voice_mail boolean, transcript text, created_at timestamp, updated_at timestamp,
    cost_breakdown jsonb, telephony_data jsonb, transfer_call_data jsonb, batch_run_details jsonb,
    extracted_data jsonb, context_details jsonb, scheduled_at timestamp, retry_count bigint,
    retry_history jsonb, _sdc_extracted_at timestamp, _sdc_received_at timestamp,
    _sdc_batched_at timestamp, _sdc_deleted_at timestamp, _sdc_sequence bigint,
    _sdc_table_version bigint, _sdc_sync_started_at bigint
)
"""
AGENTS_DDL = """
create table bolna.agents (
    id text primary key, sub_account_id text, agent_name text, agent_type text,
    agent_status text, created_at timestamp, updated_at timestamp, _sdc_batched_at timestamp,
    _sdc_deleted_at timestamp
)
"""
BATCHES_DDL = """
create table bolna.batches (
    batch_id text primary key, sub_account_id text, agent_id text, status text, file_name text,
    from_phone_number text, valid_contacts integer, total_contacts integer,
    execution_status jsonb, created_at timestamp, updated_at timestamp, scheduled_at timestamp,
    _sdc_batched_at timestamp, _sdc_deleted_at timestamp
)
"""
# The agency streams: empty here (the models read them; bolna__sub_account_daily is empty).
SUB_ACCOUNTS_DDL = """
create table bolna.sub_accounts (
    id text primary key, name text, organization_id text, multi_tenant boolean,
    min_concurrency bigint, max_concurrency bigint, allow_concurrent_calls bigint,
    _sdc_batched_at timestamp, _sdc_deleted_at timestamp
)
"""
SUB_ACCOUNT_USAGE_DDL = """
create table bolna.sub_account_usage (
    sub_account_id text, "date" date, sub_account_name text, total_records bigint,
    total_duration numeric, total_cost numeric, total_platform_cost numeric,
    total_telephony_cost numeric, status_map jsonb, synthesizer_cost_map jsonb,
    transcriber_cost_map jsonb, llm_cost_map jsonb, _sdc_batched_at timestamp,
    _sdc_deleted_at timestamp, primary key (sub_account_id, "date")
)
"""
# The tap's columns (tests.e2e_support.EXECUTION_COLUMNS), with the load marker dbt reads.
COPIED_COLUMNS = (*EXECUTION_COLUMNS, "_sdc_batched_at")
JSON_COLUMNS = {
    "cost_breakdown",
    "telephony_data",
    "transfer_call_data",
    "batch_run_details",
    "extracted_data",
    "context_details",
    "retry_history",
}
TIMESTAMP_COLUMNS = {"created_at", "updated_at", "scheduled_at"}
# The big agent is the parent account's; the other agents belong to these, in turn.
SUB_ACCOUNTS = {f"sub-account-{n}": f"client {n}" for n in range(4)}


@dataclass(frozen=True)
class Account:
    """What was loaded: the big agent and every agent's number of calls."""

    big_agent: str
    calls_per_agent: dict[str, int]
    calls_per_sub_account: dict[str, int]
    batch_ids: list[str]
    oldest: dt.datetime
    newest: dt.datetime
    sample_ids: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        """All calls."""
        return sum(self.calls_per_agent.values())


def generate(big_agent_calls: int, other_agents: int, other_calls: int, days: int) -> list[World]:
    """One big agent, and `other_agents` sharing `other_calls`, over `days` days."""
    now = dt.datetime.now(dt.timezone.utc)
    big = World.generate(seed=181, agents=1, calls=big_agent_calls, days=days, now=now)
    others = World.generate(seed=182, agents=other_agents, calls=other_calls, days=days, now=now)
    return [big, others]


def load(conn: psycopg.Connection, worlds: list[World]) -> Account:
    """Create schema bolna and COPY every world's agents, batches and calls into it."""
    loaded_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    conn.execute("create schema bolna")
    for ddl in (EXECUTIONS_DDL, AGENTS_DDL, BATCHES_DDL, SUB_ACCOUNTS_DDL, SUB_ACCOUNT_USAGE_DDL):
        conn.execute(ddl)
    owner: dict[str, str | None] = dict.fromkeys(worlds[0].agent_ids)
    for n, agent_id in enumerate(worlds[1].agent_ids):
        owner[agent_id] = list(SUB_ACCOUNTS)[n % len(SUB_ACCOUNTS)]
    calls_per_agent: dict[str, int] = {}
    calls_per_sub_account: dict[str, int] = {}
    batch_ids: list[str] = []
    with conn.cursor() as cursor:
        with cursor.copy(f"copy bolna.executions ({', '.join(COPIED_COLUMNS)}) from stdin") as copy:
            for world in worlds:
                for call in world.executions.values():
                    sub_account_id = owner[call["agent_id"]]
                    row = {**as_loaded(call, sub_account_id), "_sdc_batched_at": loaded_at}
                    copy.write_row([column_value(name, row[name]) for name in COPIED_COLUMNS])
                    calls_per_agent[call["agent_id"]] = calls_per_agent.get(call["agent_id"], 0) + 1
                    if sub_account_id is not None:
                        calls_per_sub_account[sub_account_id] = (
                            calls_per_sub_account.get(sub_account_id, 0) + 1
                        )
        for sub_account_id, name in SUB_ACCOUNTS.items():
            cursor.execute(
                "insert into bolna.sub_accounts (id, name, _sdc_batched_at) values (%s, %s, %s)",
                (sub_account_id, name, loaded_at),
            )
        for world in worlds:
            for agent in world.agents.values():
                cursor.execute(
                    "insert into bolna.agents values (%s, %s, %s, %s, %s, %s, %s, %s, null)",
                    (
                        agent["id"],
                        owner[agent["id"]],
                        agent["agent_name"],
                        agent["agent_type"],
                        agent["agent_status"],
                        naive(agent["created_at"]),
                        naive(agent["updated_at"]),
                        loaded_at,
                    ),
                )
            for batch in world.batches.values():
                batch_ids.append(batch["batch_id"])
                cursor.execute(
                    "insert into bolna.batches values"
                    " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, null)",
                    (
                        batch["batch_id"],
                        owner[batch["agent_id"]],
                        batch["agent_id"],
                        batch["status"],
                        batch["file_name"],
                        batch["from_phone_number"],
                        batch["valid_contacts"],
                        batch["total_contacts"],
                        Jsonb(batch["execution_status"]),
                        naive(batch["created_at"]),
                        naive(batch["updated_at"]),
                        naive(batch["scheduled_at"]),
                        loaded_at,
                    ),
                )
    conn.execute("analyze")
    oldest, newest = conn.execute(
        "select min(created_at), max(created_at) from bolna.executions"
    ).fetchone()  # type: ignore[misc]
    return Account(
        worlds[0].agent_ids[0], calls_per_agent, calls_per_sub_account, batch_ids, oldest, newest
    )


def column_value(name: str, value: object) -> object:
    """A value of the tap's record as target-postgres stores it in column `name`."""
    if value is None:
        return None
    if name in JSON_COLUMNS:
        return Jsonb(value)
    if name in TIMESTAMP_COLUMNS:
        return naive(value)
    return value


def naive(stamp: str) -> dt.datetime:
    """A Bolna timestamp as target-postgres stores it: UTC, without the offset."""
    return parse_timestamp(stamp).replace(tzinfo=None)


def meltano_environment(postgres: PostgresServer, database: str, tmp: Path) -> dict[str, str]:
    """Meltano pointed at the throwaway warehouse, with none of the developer's settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TAP_BOLNA_", "TARGET_", "MELTANO_", "BOLNA_", "DBT_"))
    }
    env.update(
        {
            "MELTANO_DATABASE_URI": f"sqlite:///{tmp / 'meltano.db'}",
            "TARGET_POSTGRES_HOST": postgres.host,
            "TARGET_POSTGRES_PORT": str(postgres.port),
            "TARGET_POSTGRES_USER": postgres.user,
            "TARGET_POSTGRES_PASSWORD": postgres.password,
            "TARGET_POSTGRES_DATABASE": database,
        }
    )
    return env


def build_models(env: dict[str, str]) -> float:
    """`meltano install` both utilities, then `meltano invoke dbt-postgres:build`: seconds."""
    subprocess.run(
        [MELTANO, "install", "dbt-postgres", "bolna-api"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    started = time.perf_counter()
    result = subprocess.run(
        [MELTANO, "invoke", "dbt-postgres:build"],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError("dbt-postgres:build failed:\n" + result.stderr[-4000:])
    return time.perf_counter() - started
