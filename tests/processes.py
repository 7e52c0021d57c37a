"""Process helpers for tests that run servers and jobs in their own processes: a free port,
stopping a process group, finding a CLI's JVM and waiting until a killed job is gone."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from devtools.processes import free_port, stop_group

__all__ = [
    "descendants",
    "free_port",
    "kill_on_line",
    "stop_group",
    "wait_for_exit",
    "wait_until_serving",
    "wait_gone",
]


def descendants(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children + [d for c in children for d in descendants(c)]


def wait_gone(pids: list[int], timeout: float = 120) -> None:
    """A killed driver's JVM exits when its stdin closes; wait so it cannot write any more."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        proc = Path(f"/proc/{pid}")
        while proc.exists() and time.monotonic() < deadline:
            try:
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            except OSError:
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
