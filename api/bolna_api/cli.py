"""`bolna-api [--host 127.0.0.1] [--port 5000]`: check the settings and the warehouse, then serve.

Started by Meltano as `meltano invoke bolna-api`. It refuses to start, with one line that says
why, when a setting is wrong, when it would listen beyond this machine without a token, or when
the served schema does not hold the dbt models.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

import psycopg
import uvicorn
from psycopg import sql

from bolna_api.app import create_app
from bolna_api.settings import Settings, SettingsError, is_loopback

logger = logging.getLogger("bolna-api")
# What the endpoint reads; without them it cannot answer (they come with `meltano run bolna-elt`).
REQUIRED_COLUMNS = {
    "bolna__calls": {
        "call_id",
        "agent_id",
        "sub_account_id",
        "is_completed",
        "is_failed",
        "duration_s",
    },
    "bolna__executions": {
        "call_id",
        "sub_account_id",
        "execution",
        "agent_call_number",
        "batch_call_number",
    },
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """--host and --port."""
    parser = argparse.ArgumentParser(
        prog="bolna-api", description="Serve the warehouse's Bolna calls over HTTP, read-only."
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other needs BOLNA_API_TOKEN)",
    )
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000; 0: a free one)")
    return parser.parse_args(argv)


def check_warehouse(settings: Settings) -> str | None:
    """Connect once and check the models are there; the reason if not (no credentials in it)."""
    try:
        with psycopg.connect(
            **settings.connection_kwargs(), autocommit=True, connect_timeout=10
        ) as conn:
            rows = conn.execute(
                "select table_name, column_name from information_schema.columns"
                " where table_schema = %s and table_name = any(%s)",
                (settings.schema, list(REQUIRED_COLUMNS)),
            ).fetchall()
            conn.execute(
                sql.SQL("select 1 from {} limit 1").format(
                    sql.Identifier(settings.schema, "bolna__executions")
                )
            )
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        return f"cannot connect to the warehouse {settings.warehouse()}: {reason}"
    except psycopg.errors.UndefinedTable:
        rows = []
    except psycopg.Error as error:
        return f"cannot read {settings.schema}.bolna__executions: {type(error).__name__}: {error}"
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    for table, columns in REQUIRED_COLUMNS.items():
        if not columns <= found.get(table, set()):
            return (
                f"{settings.schema}.{table} is missing or out of date in {settings.warehouse()}:"
                " build the models first (uv run meltano run bolna-elt, or"
                " uv run meltano invoke dbt-postgres:build)"
            )
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; 2 for a bad setting, 1 for a warehouse problem."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    args = parse_args(argv)
    try:
        settings = Settings.from_environment(os.environ)
    except SettingsError as error:
        logger.error("%s", error)  # noqa: TRY400 - one line, no traceback
        return 2
    if not is_loopback(args.host) and not settings.token:
        logger.error(
            "refusing to listen on %s without a token: set BOLNA_API_TOKEN (at least 16 characters,"
            " e.g. `openssl rand -hex 32`); clients then send Authorization: Bearer <token>",
            args.host,
        )
        return 2
    problem = check_warehouse(settings)
    if problem:
        logger.error("%s", problem)
        return 1
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((args.host, args.port))
        listener.listen(2048)  # connections wait from now on, while the pool opens
    except OSError as error:
        logger.error("cannot listen on %s port %s: %s", args.host, args.port, error.strerror)  # noqa: TRY400
        return 1
    host, port = listener.getsockname()[:2]
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    logger.info(
        "Serving schema %s of %s on http://%s:%d/api/executions (OpenAPI: /openapi.json; %s)",
        settings.schema,
        settings.warehouse(),
        shown_host,
        port,
        "bearer token required" if settings.token else "no token: this machine only",
    )
    config = uvicorn.Config(
        create_app(settings),
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[listener])
    return 0
