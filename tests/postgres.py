"""A throwaway PostgreSQL server for end-to-end tests.

`PostgresServer` runs `initdb` into a temporary directory, starts `postgres` on a free port
that listens on 127.0.0.1 only (and on a Unix socket inside the same directory), and removes
everything on `stop()` - which also runs at interpreter exit, so a crashed test session
does not leave a server behind.

PostgreSQL refuses to run as root, so when we are root (CI) every server command runs as
the `postgres` OS user through `runuser`, with the temporary directory handed to that user.

Even if the test process is killed outright (SIGKILL, a CI timeout), a small watchdog process
notices and shuts the server down and deletes its directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from types import TracebackType

SUPERUSER = "postgres"
PASSWORD = "bolna-test-password"  # noqa: S105 - throwaway server bound to 127.0.0.1
POSTGRES_OS_USER = "postgres"
START_TIMEOUT_SECONDS = 60
# Run by `python -c` with (owner pid, base dir): once the owner is gone, stop the server
# (SIGQUIT to the postmaster = immediate shutdown) and delete the directory.
WATCHDOG = """
import os, pathlib, shutil, signal, sys, time
owner, base = int(sys.argv[1]), pathlib.Path(sys.argv[2])
while base.exists():
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
else:
    sys.exit(0)
try:
    os.kill(int((base / "data" / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)
    time.sleep(3)
except (OSError, ValueError, IndexError):
    pass
shutil.rmtree(base, ignore_errors=True)
"""


class PostgresNotAvailableError(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def find_postgres_bin_dir() -> Path:
    """Return the directory holding `initdb` and `pg_ctl`.

    Looks on PATH first, then in Debian's /usr/lib/postgresql/<version>/bin (newest first).
    """
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    if candidates:
        return candidates[0].parent
    msg = (
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
        "/usr/lib/postgresql/*/bin. Install them, e.g. `apt-get install -y postgresql`."
    )
    raise PostgresNotAvailableError(msg)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A PostgreSQL cluster in a temp dir, listening on 127.0.0.1:<free port> only."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        """Prepare (but do not start) a server; `bin_dir` defaults to the one found."""
        self.bin_dir = bin_dir or find_postgres_bin_dir()
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.password = PASSWORD
        self.dbname = "postgres"
        self.base_dir: Path | None = None
        self._as_postgres_user = os.geteuid() == 0
        self._started = False
        self._watchdog: subprocess.Popen[bytes] | None = None

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> PostgresServer:
        """Create the cluster and start the server; returns self."""
        self.base_dir = Path(tempfile.mkdtemp(prefix="tap-bolna-pg-"))
        atexit.register(self.stop)
        if self._as_postgres_user:
            shutil.chown(self.base_dir, user=POSTGRES_OS_USER)
        try:
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(self.base_dir)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or kill of our process group spares it
        )
        return self

    def stop(self) -> None:
        """Stop the server (if running) and delete its directory. Safe to call twice."""
        if self.base_dir is None:
            return
        base_dir, self.base_dir = self.base_dir, None
        if self._started:
            self._started = False
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "stop",
                        "-D",
                        str(base_dir / "data"),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "30",
                    ],
                    timeout=60,
                )
        shutil.rmtree(base_dir, ignore_errors=True)
        if self._watchdog is not None:
            self._watchdog.terminate()
            self._watchdog.wait(timeout=10)
            self._watchdog = None

    def __enter__(self) -> PostgresServer:  # noqa: PYI034 - Self needs typing_extensions on 3.10
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server whatever happened."""
        self.stop()

    # --- connection helpers ------------------------------------------------------------
    def conninfo(self, dbname: str | None = None) -> str:
        """Return a libpq connection string."""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={dbname or self.dbname}"
        )

    def sqlalchemy_url(self, dbname: str | None = None, driver: str = "psycopg") -> str:
        """Return a SQLAlchemy URL such as `postgresql+psycopg://user:pw@127.0.0.1:port/db`."""
        return (
            f"postgresql+{driver}://{self.user}:{self.password}@{self.host}:{self.port}/"
            f"{dbname or self.dbname}"
        )

    def connect(self, dbname: str | None = None) -> psycopg.Connection:
        """Open an autocommit connection."""
        return psycopg.connect(self.conninfo(dbname), autocommit=True)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its name."""
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting anybody still connected to it."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # --- internals ---------------------------------------------------------------------
    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if self._as_postgres_user:
            argv = ["runuser", "-u", POSTGRES_OS_USER, "--", *argv]
        return subprocess.run(
            argv,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base_dir or "/",
        )

    def _initdb(self) -> None:
        assert self.base_dir is not None
        password_file = self.base_dir / "pwfile"
        password_file.write_text(self.password + "\n")
        if self._as_postgres_user:
            shutil.chown(password_file, user=POSTGRES_OS_USER)
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.base_dir / "data"),
                "-U",
                self.user,
                f"--pwfile={password_file}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        password_file.unlink()

    def _start_server(self) -> None:
        assert self.base_dir is not None
        last_error = ""
        for _attempt in range(5):  # the free port can be taken between choosing and binding
            self.port = free_port()
            options = " ".join(
                [
                    f"-p {self.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={self.base_dir}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=50",
                ]
            )
            try:
                self._run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "start",
                        "-D",
                        str(self.base_dir / "data"),
                        "-l",
                        str(self.base_dir / "server.log"),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        str(START_TIMEOUT_SECONDS),
                    ],
                    timeout=START_TIMEOUT_SECONDS + 30,
                )
            except subprocess.CalledProcessError as error:
                last_error = f"{error.stderr}\n{self.server_log()}"
                time.sleep(0.2)
                continue
            self._started = True
            return
        msg = f"PostgreSQL did not start:\n{last_error}"
        raise RuntimeError(msg)

    def server_log(self) -> str:
        """Return the server log (for failure messages)."""
        if self.base_dir is None:
            return ""
        log = self.base_dir / "server.log"
        return log.read_text(errors="replace") if log.exists() else ""
