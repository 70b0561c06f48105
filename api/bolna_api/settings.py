"""Settings, from the environment Meltano gives the utility (meltano.yml: bolna-api).

Meltano passes each setting as `BOLNA_API_<NAME>`; the warehouse settings default to the
loader's `TARGET_POSTGRES_*` variables there, and they are read here too when the server runs
without Meltano, so the warehouse is configured in one place.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_SCHEMA = "bolna_analytics"
MIN_TOKEN_LENGTH = 16
# A schema name as dbt writes it; it is quoted as an identifier anyway, this only catches typos.
SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
LOOPBACK_NAMES = {"localhost"}


class SettingsError(ValueError):
    """A setting is missing or invalid; the message is one line that names it."""


@dataclass(frozen=True)
class Settings:
    """Where the warehouse is, which schema to serve, and the token (if any)."""

    postgres_host: str
    postgres_port: int
    postgres_user: str
    postgres_password: str
    postgres_database: str
    postgres_sslmode: str
    schema: str
    token: str
    pool_size: int
    statement_timeout_ms: int

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Settings:
        """Read the settings; raise SettingsError naming the first one that is wrong."""

        def value(name: str, fallback: str = "") -> str:
            own = environ.get(f"BOLNA_API_{name.upper()}", "").strip()
            return own or (environ.get(fallback, "").strip() if fallback else "")

        def integer(name: str, default: int, low: int, high: int) -> int:
            text = value(name) or str(default)
            if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
                msg = f"BOLNA_API_{name.upper()}: a whole number from {low} to {high}, got {text!r}"
                raise SettingsError(msg)
            return int(text)

        user = value("postgres_user", "TARGET_POSTGRES_USER")
        database = value("postgres_database", "TARGET_POSTGRES_DATABASE")
        for text, variable in ((user, "USER"), (database, "DATABASE")):
            if not text:
                msg = (
                    f"set TARGET_POSTGRES_{variable} (or BOLNA_API_POSTGRES_{variable}):"
                    " the warehouse to serve"
                )
                raise SettingsError(msg)
        port_text = value("postgres_port", "TARGET_POSTGRES_PORT") or "5432"
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:  # noqa: PLR2004
            msg = f"TARGET_POSTGRES_PORT must be a port number, got {port_text!r}"
            raise SettingsError(msg)
        schema = value("schema") or DEFAULT_SCHEMA
        if not SCHEMA_NAME.match(schema):
            msg = f"BOLNA_API_SCHEMA must be a schema name, got {schema!r}"
            raise SettingsError(msg)
        token = value("token")
        if token and len(token) < MIN_TOKEN_LENGTH:
            msg = (
                f"BOLNA_API_TOKEN must be at least {MIN_TOKEN_LENGTH} characters"
                " (e.g. `openssl rand -hex 32`)"
            )
            raise SettingsError(msg)
        return cls(
            postgres_host=value("postgres_host", "TARGET_POSTGRES_HOST") or "localhost",
            postgres_port=int(port_text),
            postgres_user=user,
            postgres_password=value("postgres_password", "TARGET_POSTGRES_PASSWORD"),
            postgres_database=database,
            postgres_sslmode=value("postgres_sslmode", "TARGET_POSTGRES_SSL_MODE") or "prefer",
            schema=schema,
            token=token,
            pool_size=integer("pool_size", 4, 1, 100),
            statement_timeout_ms=integer("statement_timeout_ms", 10_000, 1, 3_600_000),
        )

    def connection_kwargs(self) -> dict[str, Any]:
        """psycopg.connect() arguments. Every statement runs in a read-only transaction."""
        return {
            "host": self.postgres_host,
            "port": self.postgres_port,
            "user": self.postgres_user,
            "password": self.postgres_password,
            "dbname": self.postgres_database,
            "sslmode": self.postgres_sslmode,
            "application_name": "bolna-api",
            # Read-only transactions, a time limit, and no JIT (compiling costs more than these
            # short queries take).
            "options": (
                "-c default_transaction_read_only=on"
                f" -c statement_timeout={self.statement_timeout_ms} -c jit=off"
            ),
        }

    def warehouse(self) -> str:
        """Where the warehouse is, for log lines and errors: no user, no password."""
        return f"{self.postgres_host}:{self.postgres_port}/{self.postgres_database}"


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is only reachable from this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
