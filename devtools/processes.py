"""Process helpers the local services share: tools, ports, pid files, stopping, locking.

Standard library only, so importing it is cheap. The services themselves are
:mod:`devtools.kafka` and :mod:`devtools.postgres`; ``python -m devtools`` is their CLI.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = PROJECT_ROOT / ".cache"


class ServiceError(RuntimeError):
    """A development service could not be installed, started or stopped.

    The message is a single line meant for a human (the CLI prints it as is).
    """


class PortInUseError(ServiceError):
    """The port a service was asked to listen on is taken by another program."""


def require_tool(name: str, apt_package: str) -> str:
    """Return the path of executable ``name``, installing ``apt_package`` if it is missing.

    The package is only installed when running as root on a Debian-like system.

    Args:
        name: Executable to look up on ``PATH``.
        apt_package: Debian package providing it.

    Raises:
        ServiceError: If the tool is missing and cannot be installed.
    """
    found = shutil.which(name)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_install([apt_package])
        found = shutil.which(name)
    if found is None:
        raise ServiceError(f"'{name}' not found on PATH; install the '{apt_package}' package")
    return found


def apt_install(packages: list[str]) -> None:
    """Install Debian packages non-interactively (needs root), one apt-get run at a time in
    this checkout (two at once would fight over dpkg's lock, and the loser fail).

    Raises:
        ServiceError: If apt-get fails.
    """
    logger.info("installing %s with apt-get", " ".join(packages))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with file_lock(CACHE_ROOT / "locks" / "apt-get.lock"):
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ServiceError(f"'{' '.join(command)}' failed: {last_line(result.stderr)}")


def last_line(text: str) -> str:
    """The last non-blank line of ``text`` (for one-line error messages)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, joined with `` | `` to fit on one line."""
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    tail = [line.strip() for line in content[-lines:] if line.strip()]
    return " | ".join(tail) if tail else "(empty log)"


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound right now (nothing listens on it or holds it)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def read_pid(pid_file: Path) -> int | None:
    """The process id on the first line of ``pid_file``, or None."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (``[0]`` is the state, ``[1]``
    the parent's pid, ``[2]`` the process group, ``[11:15]`` utime, stime, cutime and cstime in
    clock ticks); None if the process is gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_table() -> dict[int, list[str]]:
    """:func:`stat_fields` of every live process by pid, in one pass over ``/proc``."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(entry.name)
            if fields is not None:
                table[int(entry.name)] = fields
    return table


def process_matches(pid: int, marker: str) -> bool:
    """Whether process ``pid`` is alive (not a zombie) and its command line contains ``marker``.

    The marker guards against a stale pid file whose pid was reused by another program.
    """
    with contextlib.suppress(ChildProcessError):
        # Reap our own exited child so it does not linger as a zombie and look alive.
        os.waitpid(pid, os.WNOHANG)
    fields = stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return False
    try:
        cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return marker in cmdline.replace(b"\0", b" ").decode(errors="replace")


def terminate(pid: int, marker: str, timeout: float = 30.0) -> None:
    """Stop process ``pid`` with SIGTERM, then SIGKILL after ``timeout`` seconds.

    Args:
        pid: The process to stop.
        marker: Substring of its command line (see :func:`process_matches`).
        timeout: Seconds to wait for a clean exit before killing it.
    """
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if not process_matches(pid, marker):
            return
        logger.info("sending %s to pid %d", sig.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not process_matches(pid, marker):
                return
            time.sleep(0.2)
    raise ServiceError(f"pid {pid} did not exit after SIGKILL")


def _group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    return [
        pid
        for pid, fields in process_table().items()
        if int(fields[2]) == pgid and fields[0] != "Z"
    ]


def stop_group(process: subprocess.Popen[bytes], term_wait: float = 30.0) -> None:
    """Stop a process started with ``start_new_session=True`` together with its whole group
    (a Spark worker takes its executors with it): SIGTERM, then SIGKILL if it lingers.

    Once the leader has been reaped its pid may belong to a new program, so the group is then
    only signalled while the pid itself is free and the group still has members: the kernel
    does not reuse a group id that is still in use, so those members are the leader's.
    """
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            if Path(f"/proc/{process.pid}").exists() or not _group_members(process.pid):
                return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_members(process.pid):
                return
            time.sleep(0.2)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
