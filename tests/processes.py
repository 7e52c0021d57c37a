"""Process helpers for tests that run servers and jobs in their own processes: a free port,
stopping a process group, finding a CLI's JVM and waiting until a killed job is gone."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from devtools.processes import free_port, process_table, stat_fields, stop_group

__all__ = [
    "descendants",
    "free_port",
    "kill_on_line",
    "stop_group",
    "wait_for_exit",
    "wait_until_serving",
    "wait_gone",
]


def descendants(pid: int, table: dict[int, list[str]] | None = None) -> list[int]:
    """The live descendants of ``pid`` (children first), from one reading of ``/proc``
    (``table``: a :func:`devtools.processes.process_table` already read)."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for child, fields in table.items():
        children.setdefault(int(fields[1]), []).append(child)
    found, level = [], children.get(pid, [])
    while level:
        found += level
        level = [grandchild for child in level for grandchild in children.get(child, [])]
    return found


def wait_gone(pids: list[int], timeout: float = 120) -> None:
    """A killed driver's JVM exits when its stdin closes; wait so it cannot write any more."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            fields = stat_fields(pid)
            if fields is None or fields[0] == "Z":
                break
            time.sleep(0.2)


def wait_for_exit(
    proc: subprocess.Popen[str], timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Wait for a CLI and its JVM to be gone (killed after ``timeout``): its exit status and
    what it wrote to pipes (None for a stream that was not a pipe)."""
    family: list[int] = []
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        family = descendants(proc.pid) or family
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate()
    wait_gone(family)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_on_line(
    command: list[str], pattern: str, *, env: dict[str, str], cwd: Path | None = None
) -> tuple[int, list[str]]:
    """Run ``command``; SIGKILL it as soon as a line of its stderr matches ``pattern`` (and
    wait until it and its JVM are gone). Returns its exit status and the lines it wrote."""
    import os
    import re
    import signal

    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    lines: list[str] = []
    family: list[int] = []
    for line in proc.stderr:
        lines.append(line.rstrip())
        if re.search(pattern, line):
            family = descendants(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    wait_gone(family, timeout=60)
    return proc.returncode, lines


def wait_until_serving(process: subprocess.Popen[str], url: str, timeout: float = 60) -> None:
    """Wait until ``lambda-sales serve`` (``process``) answers ``/health`` at ``url``; an
    AssertionError if it exits or does not answer within ``timeout`` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"the server did not start at {url} (exit status {process.poll()})"
            )
        time.sleep(0.2)
