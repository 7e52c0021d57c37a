"""A real PostgreSQL server for the tests and the JDBC source.

Uses the PostgreSQL server binaries of this machine (installing the Debian ``postgresql``
package when they are missing) to run a private cluster in ``data_dir``, listening on
127.0.0.1 only, with a password-protected login role and database::

    from devtools import postgres

    postgres.start(port=15432)   # idempotent; returns once a password login works
    postgres.stop()

Defaults come from the environment: ``LAMBDA_SALES_PG_PORT`` (5432), ``LAMBDA_SALES_PG_DATA``
(``.cache/postgres/data``) and ``LAMBDA_SALES__SOURCES__JDBC__PASSWORD`` for the password.
When that variable is unset the password is :data:`DEV_PASSWORD`, which is for local
development only. The password is never logged or put in an error message.

When running as root (PostgreSQL refuses to), the server runs as the ``postgres`` OS user.
Local (Unix socket) connections are trusted: the socket lives inside the data directory
(or, for a long path, a private ``/tmp`` directory), which only the server's OS user (and
root) can enter. TCP logins need the password (SCRAM-SHA-256). The binaries and the data
directory's files are :mod:`devtools.postgres_cluster`'s job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.postgres_cluster import (
    DATA_ENV,
    HOST,
    SUPERUSER,
    ensure_installed,
    initdb,
    postmaster,
    prepare_data_dir,
    run_as_server,
    socket_dir,
    write_settings,
)
from devtools.processes import (
    CACHE_ROOT,
    PortInUseError,
    ServiceError,
    file_lock,
    free_port,
    last_line,
    log_tail,
    port_open,
)

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5432
DEFAULT_DATA_DIR = CACHE_ROOT / "postgres" / "data"
DEFAULT_USER = "sales"
DEFAULT_DATABASE = "sales"
#: The password used when LAMBDA_SALES__SOURCES__JDBC__PASSWORD is unset. Local development only.
DEV_PASSWORD = "sales-local-dev"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30

PORT_ENV = "LAMBDA_SALES_PG_PORT"
PASSWORD_ENV = "LAMBDA_SALES__SOURCES__JDBC__PASSWORD"


@dataclass(frozen=True)
class PostgresStatus:
    """Whether the server of a data directory is running, and where.

    Attributes:
        running: True if the postmaster process is alive.
        pid: Its process id (None when stopped).
        port: The TCP port it listens on, on 127.0.0.1 (None when stopped).
        data_dir: The cluster's data directory.
    """

    running: bool
    pid: int | None
    port: int | None
    data_dir: Path

    @property
    def address(self) -> str | None:
        """``host:port`` of the running server."""
        return f"{HOST}:{self.port}" if self.running else None

    def __str__(self) -> str:
        if self.running:
            return f"postgres: running (pid {self.pid}) on {self.address}, data in {self.data_dir}"
        return f"postgres: stopped, data in {self.data_dir}"


# --------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------


def resolve_port(port: int | None = None) -> int:
    """``port``, else ``$LAMBDA_SALES_PG_PORT``, else 5432."""
    if port is not None:
        return port
    value = os.environ.get(PORT_ENV, str(DEFAULT_PORT))
    try:
        return int(value)
    except ValueError:
        raise ServiceError(f"{PORT_ENV} must be a port number, got {value!r}") from None


def resolve_password(password: str | None = None) -> str:
    """``password``, else ``$LAMBDA_SALES__SOURCES__JDBC__PASSWORD``, else the dev default."""
    return password or os.environ.get(PASSWORD_ENV) or DEV_PASSWORD


def resolve_data_dir(
    data_dir: str | os.PathLike[str] | None = None, port: int | None = None
) -> Path:
    """The cluster's data directory.

    ``data_dir``, else ``$LAMBDA_SALES_PG_DATA``, else ``.cache/postgres/data`` in the
    project. When running as root and the default location cannot be reached by the
    ``postgres`` OS user, ``/tmp/lambda-sales-postgres-<port>`` is used instead.
    """
    # Resolved always: the postmaster's command line names this path, and a later status()
    # must find it there whichever spelling (a symlinked .cache) it is given.
    explicit = data_dir or os.environ.get(DATA_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    if os.geteuid() != 0 or _traversable_by_others(DEFAULT_DATA_DIR.parent):
        return DEFAULT_DATA_DIR.resolve()
    return (Path("/tmp") / f"lambda-sales-postgres-{resolve_port(port)}").resolve()


def _traversable_by_others(path: Path) -> bool:
    """Whether every existing ancestor of ``path`` can be entered by any user (o+x)."""
    return all(parent.stat().st_mode & 0o001 for parent in (path, *path.parents) if parent.exists())


# --------------------------------------------------------------------------------------
# Role and database
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _superuser_connection(data_dir: Path, port: int) -> Iterator[psycopg.Connection[Any]]:
    import psycopg

    with psycopg.connect(
        host=str(socket_dir(data_dir)),
        port=port,
        user=SUPERUSER,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        yield conn


def _ensure_role_and_database(
    data_dir: Path, port: int, user: str, password: str, database: str
) -> None:
    """Create or update the login role (with ``password``) and create its database."""
    from psycopg import sql

    with _superuser_connection(data_dir, port) as conn:
        # Keep the statement carrying the password out of the server log, even on error.
        conn.execute("SET log_statement = 'none'")
        conn.execute("SET log_min_error_statement = 'panic'")
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user]).fetchone()
        verb = sql.SQL("ALTER" if exists else "CREATE")
        conn.execute(
            sql.SQL("{} ROLE {} WITH LOGIN PASSWORD {}").format(
                verb, sql.Identifier(user), sql.Literal(password)
            )
        )
        if (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
            is None
        ):
            logger.info("creating database %s owned by %s", database, user)
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(user)
                )
            )


def _check_login(port: int, user: str, password: str, database: str, timeout: float) -> None:
    """Wait until a password login over TCP works."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(
                host=HOST,
                port=port,
                user=user,
                password=password,
                dbname=database,
                connect_timeout=5,
            ) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                reason = last_line(str(exc))
                raise ServiceError(
                    f"cannot log in to PostgreSQL on {HOST}:{port} as {user}: {reason}"
                ) from None
            time.sleep(0.5)


# --------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------


def start(
    port: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    user: str = DEFAULT_USER,
    password: str | None = None,
    database: str = DEFAULT_DATABASE,
    timeout: float = START_TIMEOUT_S,
) -> PostgresStatus:
    """Start the server (idempotent) and return once ``user`` can log in over TCP.

    The role is (re)created with ``password`` and the database created if missing, also
    when the server was already running.

    Args:
        port: TCP port on 127.0.0.1 (default ``$LAMBDA_SALES_PG_PORT`` or 5432).
        data_dir: Cluster directory (default ``$LAMBDA_SALES_PG_DATA`` or ``.cache/postgres/data``).
        user: Login role to create.
        password: Its password (default ``$LAMBDA_SALES__SOURCES__JDBC__PASSWORD`` or
            :data:`DEV_PASSWORD`).
        database: Database to create, owned by ``user``.
        timeout: Seconds to wait for the server to accept logins.

    Returns:
        The server's status.

    Raises:
        ServiceError: If PostgreSQL cannot be installed, initialised or started, or the
            port is taken by another program.
    """
    port = resolve_port(port)
    data_dir = resolve_data_dir(data_dir, port)
    password = resolve_password(password)
    binaries = ensure_installed()
    with file_lock(data_dir.parent / f".{data_dir.name}.lock"):
        running = postmaster(data_dir)
        if running is not None and running[1] != port:
            raise ServiceError(
                f"the PostgreSQL of {data_dir} already runs on port {running[1]}; "
                "stop it first or use another data dir"
            )
        if running is None:
            if port_open(HOST, port):
                raise PortInUseError(
                    f"port {HOST}:{port} is in use by another program, not the PostgreSQL of {data_dir}"
                )
            prepare_data_dir(data_dir)
            if not (data_dir / "PG_VERSION").is_file():
                initdb(binaries, data_dir)
            write_settings(data_dir, port)
            logger.info("starting PostgreSQL on %s:%d (data in %s)", HOST, port, data_dir)
            started = time.monotonic()
            run_as_server(
                [
                    binaries.pg_ctl,
                    "start",
                    "--pgdata",
                    str(data_dir),
                    "--log",
                    str(data_dir / "postgres.log"),
                    "--wait",
                    "--timeout",
                    str(int(timeout)),
                    "--silent",
                ],
                data_dir,
                f"pg_ctl start (log tail: {log_tail(data_dir / 'postgres.log', 5)})",
            )
            logger.info("PostgreSQL ready in %.1f s", time.monotonic() - started)
        else:
            logger.info("PostgreSQL already running on %s:%d (pid %d)", HOST, port, running[0])
        try:
            _ensure_role_and_database(data_dir, port, user, password, database)
        except Exception as exc:  # psycopg errors never include the password
            raise ServiceError(
                f"setting up role {user} and database {database} failed: {last_line(str(exc))}"
            ) from None
        _check_login(port, user, password, database, timeout)
    return status(data_dir=data_dir, port=port)


def start_on_free_port(
    data_dir: str | os.PathLike[str],
    password: str | None = None,
    attempts: int = 5,
) -> PostgresStatus:
    """Start the server of ``data_dir`` on a port nothing uses, for the tests.

    Several servers may then run on one machine at once (pytest-xdist workers, other
    checkouts), each with its own data directory. A port another program takes between the
    choice and the start is given up for another one.

    Raises:
        ServiceError: As :func:`start`; PortInUseError after ``attempts`` taken ports.
    """
    for _ in range(attempts - 1):
        with contextlib.suppress(PortInUseError):
            return start(port=free_port(HOST), data_dir=data_dir, password=password)
    return start(port=free_port(HOST), data_dir=data_dir, password=password)


def stop(
    data_dir: str | os.PathLike[str] | None = None,
    port: int | None = None,
    timeout: float = STOP_TIMEOUT_S,
) -> PostgresStatus:
    """Stop the server of ``data_dir`` (idempotent), with a fast shutdown.

    Args:
        data_dir: Cluster directory (resolved as in :func:`start`).
        port: Only used to find the default ``/tmp`` fallback directory.
        timeout: Seconds to wait for the shutdown.

    Returns:
        The (stopped) status.
    """
    data_dir = resolve_data_dir(data_dir, port)
    if postmaster(data_dir) is None:
        return status(data_dir=data_dir, port=port)
    binaries = ensure_installed()
    logger.info("stopping PostgreSQL (data in %s)", data_dir)
    command = [binaries.pg_ctl, "stop", "--pgdata", str(data_dir), "--wait", "--silent"]
    try:
        run_as_server(
            [*command, "--mode", "fast", "--timeout", str(int(timeout))], data_dir, "pg_ctl stop"
        )
    except ServiceError:
        logger.warning("PostgreSQL did not stop within %d s; stopping it immediately", timeout)
        run_as_server([*command, "--mode", "immediate"], data_dir, "pg_ctl stop --mode immediate")
    return status(data_dir=data_dir, port=port)


def status(
    data_dir: str | os.PathLike[str] | None = None, port: int | None = None
) -> PostgresStatus:
    """The status of the server of ``data_dir`` (resolved as in :func:`start`)."""
    data_dir = resolve_data_dir(data_dir, port)
    running = postmaster(data_dir)
    if running is None:
        return PostgresStatus(running=False, pid=None, port=None, data_dir=data_dir)
    return PostgresStatus(running=True, pid=running[0], port=running[1], data_dir=data_dir)
