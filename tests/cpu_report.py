"""CPU seconds each test module costs, summed over the test process and every process it
started (a pytest plugin, loaded by ``tests/conftest.py``).

Wall time on two shared cores says little about a module's cost: it depends on what the other
worker runs beside it and on the host's speed that hour. Around each test, this plugin reads
``/proc`` for the test process and its live descendants (the session's JVM, the brokers, the
CLI's drivers) and adds what they used; a child that exited and was waited for is in its
parent's ``cutime``/``cstime``. Processes that detach from the tree (a daemon's double fork:
PostgreSQL, a standalone Spark cluster's master, workers and executors) are not counted, and
a process started by an earlier test that detaches during a later one takes its CPU out of that
test's figure (which can then be slightly negative).

With ``LAMBDA_SALES_TEST_CPU`` naming a file, each worker appends a JSON line per test, and the
run's summary prints the modules by CPU seconds (``scripts/run-tests.sh`` sets it).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.processes import process_table
from tests.processes import descendants

REPORT_ENV = "LAMBDA_SALES_TEST_CPU"
TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants, their waited-for children included."""
    table = process_table()
    return (
        sum(
            # utime, stime, cutime, cstime
            sum(int(tick) for tick in table[pid][11:15])
            for pid in [root, *descendants(root, table)]
            if pid in table
        )
        / TICKS
    )


def module_totals(lines: list[dict[str, Any]]) -> list[tuple[str, float, float, int]]:
    """(module, CPU seconds, wall seconds, tests), the most expensive module first."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for line in lines:
        entry = totals[line["nodeid"].split("::", 1)[0]]
        entry[0] += line["cpu"]
        entry[1] += line["wall"]
        entry[2] += 1
    return sorted(
        ((module, cpu, wall, int(n)) for module, (cpu, wall, n) in totals.items()),
        key=lambda row: -row[1],
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    report = os.environ.get(REPORT_ENV)
    if not report:
        yield
        return
    cpu, wall = tree_cpu_seconds(os.getpid()), time.monotonic()
    yield
    line = {
        "nodeid": item.nodeid,
        "cpu": round(tree_cpu_seconds(os.getpid()) - cpu, 2),
        "wall": round(time.monotonic() - wall, 2),
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
    }
    with open(report, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    report = os.environ.get(REPORT_ENV)
    if not report or os.environ.get("PYTEST_XDIST_WORKER") or not Path(report).is_file():
        return
    lines = [json.loads(line) for line in Path(report).read_text().splitlines() if line]
    rows = module_totals(lines)
    terminalreporter.write_sep("=", "CPU seconds by module (test processes and their children)")
    for module, cpu, wall, tests in rows:
        terminalreporter.write_line(f"{cpu:9.1f} CPU-s {wall:8.1f} s {tests:4d} tests  {module}")
    terminalreporter.write_line(
        f"{sum(r[1] for r in rows):9.1f} CPU-s {sum(r[2] for r in rows):8.1f} s "
        f"{sum(r[3] for r in rows):4d} tests  in all"
    )
