"""A PostgreSQL cluster (data directory) of this project's own, and the binaries that run it.

Finds the server binaries of this machine (installing the Debian ``postgresql`` package
when they are missing), runs them as the server's OS user (``postgres`` when we are root:
PostgreSQL refuses to run as root), initialises a cluster and (re)writes the settings and
``pg_hba.conf`` this project owns. :mod:`devtools.postgres` starts and stops the server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.processes import ServiceError, apt_install, last_line, process_matches, read_pid

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
SUPERUSER = "postgres"
OS_USER = "postgres"
DATA_ENV = "LAMBDA_SALES_PG_DATA"
#: Unix socket paths are limited to 107 bytes; the socket file name takes up to 17 of them.
_MAX_SOCKET_DIR_LENGTH = 90
_CONF_FILE = "lambda_sales.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_FILE}'"


@dataclass(frozen=True)
class PostgresBinaries:
    """The directory holding ``pg_ctl``, ``initdb`` and ``postgres``."""

    bindir: Path

    @property
    def pg_ctl(self) -> str:
        return str(self.bindir / "pg_ctl")

    @property
    def initdb(self) -> str:
        return str(self.bindir / "initdb")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def _find_binaries() -> PostgresBinaries | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("pg_ctl", "initdb", "postgres")):
            return PostgresBinaries(bindir)
    return None


def ensure_installed(also: Sequence[str] = ()) -> PostgresBinaries:
    """Find the PostgreSQL server binaries, installing the ``postgresql`` package if needed.

    ``also``: other Debian packages to install in the same apt-get run (the test set-up
    installs the browser's with it), installed even when PostgreSQL is there.

    Raises:
        ServiceError: If they are missing and cannot be installed (not root, no apt-get).
    """
    binaries = _find_binaries()
    if binaries is None and os.geteuid() == 0 and shutil.which("apt-get"):
        # Debian would otherwise create and start a "main" cluster on port 5432.
        no_main_cluster = Path("/etc/postgresql-common/createcluster.d/lambda-sales.conf")
        no_main_cluster.parent.mkdir(parents=True, exist_ok=True)
        no_main_cluster.write_text("create_main_cluster = false\n")
        apt_install(["postgresql", *also])
        binaries = _find_binaries()
    elif also and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_install(list(also))
    if binaries is None:
        raise ServiceError(
            "PostgreSQL server binaries (pg_ctl, initdb, postgres) not found; "
            "install the 'postgresql' package"
        )
    return binaries


def _server_account() -> pwd.struct_passwd | None:
    """The OS account to run the server as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        logger.info("creating the '%s' OS user", OS_USER)
        command = ["useradd", "--system", "--user-group", "--no-create-home", OS_USER]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"useradd {OS_USER} failed: {last_line(result.stderr)}") from None
        return pwd.getpwnam(OS_USER)


def run_as_server(
    command: list[str], data_dir: Path, what: str
) -> subprocess.CompletedProcess[str]:
    """Run a server binary as the server's OS user; raise ServiceError if it fails."""
    account = _server_account()
    kwargs: dict[str, Any] = {}
    # A minimal environment: the server must not inherit secrets or PG* client settings.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    if account is not None:
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    result = subprocess.run(
        command,
        cwd=data_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )
    if result.returncode != 0:
        raise ServiceError(f"{what} failed: {last_line(result.stderr + result.stdout)}")
    return result


def socket_dir(data_dir: Path) -> Path:
    """Where the Unix socket lives: the data dir, unless its path is too long for a socket."""
    if len(str(data_dir)) <= _MAX_SOCKET_DIR_LENGTH:
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"lambda-sales-pg-{digest}"


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` and the socket dir (mode 0700), owned by the server's OS user."""
    data_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    account = _server_account()
    for directory in {data_dir, socket_dir(data_dir)}:
        directory.mkdir(exist_ok=True, mode=0o700)
        if account is not None:
            os.chown(directory, account.pw_uid, account.pw_gid)
    if account is not None:
        probe = subprocess.run(["test", "-w", str(data_dir)], user=account.pw_uid, check=False)
        if probe.returncode != 0:
            raise ServiceError(
                f"the '{OS_USER}' OS user cannot reach {data_dir}; "
                f"use a data dir under a world-traversable directory (set {DATA_ENV})"
            )


def initdb(binaries: PostgresBinaries, data_dir: Path) -> None:
    """Initialise a cluster in ``data_dir`` whose postgresql.conf includes our settings file."""
    logger.info("initialising a PostgreSQL cluster in %s", data_dir)
    run_as_server(
        [
            binaries.initdb,
            "--pgdata",
            str(data_dir),
            "--username",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        data_dir,
        "initdb",
    )
    conf = data_dir / "postgresql.conf"
    conf.write_text(conf.read_text() + f"\n{_INCLUDE_LINE}\n")


def write_settings(data_dir: Path, port: int) -> None:
    """(Re)write the settings this module owns; they override postgresql.conf."""
    settings = {
        "listen_addresses": f"'{HOST}'",
        "port": str(port),
        "unix_socket_directories": f"'{socket_dir(data_dir)}'",
        "password_encryption": "'scram-sha-256'",
        "max_connections": "50",
        "shared_buffers": "'64MB'",
        "logging_collector": "off",
    }
    lines = ["# Written by devtools.postgres_cluster on every start; edits are overwritten."]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    _write_as_server(data_dir / _CONF_FILE, "\n".join(lines) + "\n")
    hba = [
        "# Written by devtools.postgres_cluster; the socket is inside the 0700 data dir.",
        "local   all   all                   trust",
        "host    all   all   127.0.0.1/32    scram-sha-256",
    ]
    _write_as_server(data_dir / "pg_hba.conf", "\n".join(hba) + "\n")


def _write_as_server(path: Path, text: str) -> None:
    path.write_text(text)
    account = _server_account()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(0o600)


def postmaster(data_dir: Path) -> tuple[int, int] | None:
    """(pid, port) of the running postmaster of ``data_dir``, from ``postmaster.pid``."""
    pid_file = data_dir / "postmaster.pid"
    pid = read_pid(pid_file)
    if pid is None or not process_matches(pid, str(data_dir)):
        return None
    try:
        port = int(pid_file.read_text().splitlines()[3])
    except (OSError, ValueError, IndexError):
        return None
    return pid, port
