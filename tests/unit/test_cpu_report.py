"""The per-module CPU report counts a test's child processes, live and exited."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.cpu_report import module_totals, tree_cpu_seconds

pytestmark = pytest.mark.unit

BURN = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"


def test_a_live_child_and_an_exited_one_are_both_counted() -> None:
    before = tree_cpu_seconds(os.getpid())
    live = subprocess.Popen(
        [sys.executable, "-c", BURN + "import sys\nsys.stdin.read()\n"], stdin=subprocess.PIPE
    )
    try:
        subprocess.run([sys.executable, "-c", BURN], check=True)  # exited and waited for
        deadline = time.monotonic() + 60
        while tree_cpu_seconds(live.pid) < 0.6:  # the live one still burning
            assert live.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert tree_cpu_seconds(os.getpid()) - before >= 1.2  # the live child's CPU counted
    finally:
        live.communicate(b"")
    assert tree_cpu_seconds(os.getpid()) - before >= 1.2  # and then in our cutime


def test_modules_are_summed_and_the_most_expensive_comes_first() -> None:
    lines = [
        {"nodeid": "tests/a.py::t1", "cpu": 1.0, "wall": 2.0},
        {"nodeid": "tests/b.py::t1[x]", "cpu": 5.0, "wall": 1.0},
        {"nodeid": "tests/a.py::t2", "cpu": 0.5, "wall": 0.5},
    ]
    assert module_totals(lines) == [("tests/b.py", 5.0, 1.0, 1), ("tests/a.py", 1.5, 2.5, 2)]
