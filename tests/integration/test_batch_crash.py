"""Kill the batch job with SIGKILL at every step and at moments it reports; readers keep the
previous generation and a rerun converges to what the contract makes of the input
(CONTRACT §2, §4).

What must come out is computed by the test's own oracle (``tests.oracle``: CONTRACT §1 and §3
in plain Python) from the landing files as written, not by another run of the pipeline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from batch_layer.job import run_batch
from devtools.generator import GeneratorSpec, generate_records
from devtools.writers import write_landing_files
from sales_core.handoff import current_generation
from sales_core.lakehouse import Lakehouse
from tests.oracle import Ledger, normalise_row, read_landing_file
from tests.processes import kill_on_line, wait_for_exit
from tests.serving_helpers import published_views

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = str(Path(sys.executable).with_name("lambda-sales"))
END = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)


def write_inputs(landing: Path, part: str) -> None:
    """Part A, or part B (new events, and a CSV replaying events of A, some of them changed:
    the first ingested copy must win).

    File names are fixed, so positions (file, line) compare equal across lakehouses.
    """
    spec = GeneratorSpec(
        events=400, seed=1 if part == "a" else 2, end=END, bad_share=0.05, duplicate_share=0.05
    )
    written = write_landing_files(
        generate_records(spec), landing, fmt="jsonl", rows_per_file=150, prefix=f"part-{part}"
    )
    if part == "b":
        again = generate_records(GeneratorSpec(events=60, seed=1, end=END, bad_share=0.05))
        # CSV rows of dicts only: a non-object line has no CSV shape of its own
        records = iter([r for r in again if isinstance(r, dict)])
        written += write_landing_files(records, landing, fmt="csv", prefix="part-b-replay")
    for index, path in enumerate(written):
        path.rename(path.with_name(f"part-{part}-{index}{path.suffix}"))


def expected(landing: Path, parts: str) -> Ledger:
    """The oracle over the landing files of ``parts``, ingested one part a run."""
    ledger = Ledger(now=datetime.now(timezone.utc))
    for part in parts:
        for path in sorted(landing.glob(f"part-{part}-*")):
            for record in read_landing_file(path):
                ledger.add(record)
    return ledger


def check_outcome(
    spark: Any, lakehouse: Lakehouse, oracle: Ledger, *, uninterrupted: bool = False
) -> None:
    """Published views, master events and quarantine reasons are the oracle's; each run's
    record balances (and, without a crash, the runs' counts are the oracle's)."""
    assert published_views(spark, lakehouse) == oracle.views()
    master = [
        {k: normalise_row(v) for k, v in r.asDict().items()}
        for r in spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .select("event_id", "amount", "quantity", "event_time", "customer_id", "category")
        .collect()
    ]
    ids = [r["event_id"] for r in master]
    assert len(ids) == len(set(ids)), "an event is in the master dataset twice"
    assert {r["event_id"]: r for r in master} == {
        i: {
            k: e[k]
            for k in ("event_id", "amount", "quantity", "event_time", "customer_id", "category")
        }
        for i, e in oracle.events.items()
    }
    reasons = Counter(
        r["reason"] for r in spark.read.format("delta").load(lakehouse.quarantine).collect()
    )
    assert dict(reasons) == oracle.reasons()
    runs = (
        spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .where(F.col("status") == "succeeded")
        .select("records_read", "valid", "duplicates", "quarantined")
        .collect()
    )
    if uninterrupted:
        assert sum(r["valid"] for r in runs) == len(oracle.events)
        assert sum(r["duplicates"] for r in runs) == oracle.duplicates
        assert sum(r["quarantined"] for r in runs) == len(oracle.rejected)
    assert all(r["records_read"] == r["valid"] + r["duplicates"] + r["quarantined"] for r in runs)


def conf_file(base: Path) -> Path:
    path = base / "pipeline.toml"
    path.write_text(
        f'[lakehouse]\nroot = "{base / "lakehouse"}"\n[sources.files]\nlanding = "{base / "landing"}"\n'
        '[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\n[quality]\nmin_score = 0.0\n'
    )
    return path


def start_batch(base: Path, fault_point: str = "") -> subprocess.Popen[str]:
    env = {**os.environ, "LAMBDA_SALES_FAULT_POINT": fault_point}
    return subprocess.Popen(
        [CLI, "batch", "--conf", str(conf_file(base))],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_to_fault_point(base: Path, fault_point: str) -> int:
    """The CLI, which kills itself with SIGKILL at ``fault_point``; its exit status."""
    return wait_for_exit(start_batch(base, fault_point)).returncode


def kill_when_reported(base: Path, pattern: str) -> tuple[int, list[str]]:
    """The CLI, killed with SIGKILL as soon as it reports a line matching ``pattern``."""
    command = [CLI, "batch", "--conf", str(conf_file(base))]
    return kill_on_line(command, pattern, env={**os.environ, "LAMBDA_SALES_FAULT_POINT": ""})


def first_run(spark: Any, base: Path) -> tuple[Any, Lakehouse, Ledger]:
    """Part A ingested and published (generation 1); part B waiting in the landing zone."""
    from sales_core.config import load_config

    config = load_config(conf_file(base))
    lakehouse = Lakehouse(config.lakehouse.root)
    write_inputs(base / "landing", "a")
    assert run_batch(spark, config).status == "succeeded"
    oracle_a = expected(base / "landing", "a")
    check_outcome(spark, lakehouse, oracle_a, uninterrupted=True)
    write_inputs(base / "landing", "b")
    return config, lakehouse, oracle_a


def statuses(spark: Any, lakehouse: Lakehouse) -> list[str]:
    return [
        r["status"]
        for r in spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .orderBy("started_at")
        .collect()
    ]


# The chain: each step kills the CLI at a fault point of its own, or right after it reports a
# moment that is none (the kill lands in whatever the job does next: reading and merging the
# epoch's sources, writing a view).
CHAIN = (
    ("fault point", "batch.after_plan"),
    ("reported", r"ingest epoch \d+:"),
    ("fault point", "batch.after_quarantine"),
    ("fault point", "batch.after_master_insert"),
    ("fault point", "batch.after_ledger_commit"),
    ("fault point", "batch.after_view_2"),
    ("reported", r"view \d/4 written: "),  # the other views mid-write
    ("fault point", "batch.after_publish"),
)


@pytest.mark.timeout(
    3000
)  # eight cold JVM starts in a row: past the 900 s default when two workers share the cores
def test_sigkill_at_each_step_in_turn_then_rerun_converges(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Kill the job at every step and at moments it reports, each run resuming from the state
    the last kill left.

    Run k+1 starts from the crash state of run k and passes through every step before its own
    kill again, so recovery from each crash state is exercised; the last rerun must converge to
    the oracle's outcome. Readers keep generation 1 until the kill after the publish. (One
    chain: a JVM start per step, not a whole history per step, to keep the suite within CI's
    time.)
    """
    config, lakehouse, oracle_a = first_run(spark, tmp_path)
    oracle_ab = expected(tmp_path / "landing", "ab")
    assert oracle_ab.duplicates > 0 and oracle_ab.rejected, "the input exercises every outcome"

    for kind, where in CHAIN:
        if kind == "fault point":
            status = run_to_fault_point(tmp_path, where)
            assert status == -signal.SIGKILL, f"{where} was never reached"
        else:
            status, lines = kill_when_reported(tmp_path, where)
            assert status == -signal.SIGKILL, f"the job ended before reporting {where}: {lines}"
        # A reader during (and after) the killed run sees a whole generation: the previous one,
        # unless the kill came after the new one was published.
        published = current_generation(spark, lakehouse).generation  # type: ignore[union-attr]
        if where == "batch.after_publish":
            assert published == 2
            assert published_views(spark, lakehouse) == oracle_ab.views()
        else:
            assert published == 1, where
            assert published_views(spark, lakehouse) == oracle_a.views(), where

    rerun = run_batch(spark, config)
    assert rerun.status == "succeeded"
    check_outcome(spark, lakehouse, oracle_ab)
    assert statuses(spark, lakehouse) == ["succeeded", *["interrupted"] * len(CHAIN), "succeeded"]
