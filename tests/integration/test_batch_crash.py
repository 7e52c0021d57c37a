"""Kill the batch job with SIGKILL at every step; readers keep the previous generation and
a rerun converges to exactly what an uninterrupted run gives (CONTRACT §2, §4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from batch_layer.job import run_batch
from devtools.generator import GeneratorSpec, generate_records
from devtools.writers import write_landing_files
from sales_core.handoff import current_generation
from sales_core.lakehouse import Lakehouse
from tests.processes import descendants, wait_gone
from tests.serving_helpers import published_views

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = str(Path(sys.executable).with_name("lambda-sales"))
END = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
FAULT_POINTS = (
    "batch.after_plan",
    "batch.after_quarantine",
    "batch.after_master_insert",
    "batch.after_ledger_commit",
    "batch.after_view_2",
    "batch.after_publish",
)


def write_inputs(landing: Path, part: str) -> None:
    """Part A, or part B (which repeats some of A's events and adds its own).

    File names are fixed, so positions (file, line) compare equal across lakehouses.
    """
    spec = GeneratorSpec(
        events=400, seed=1 if part == "a" else 2, end=END, bad_share=0.05, duplicate_share=0.05
    )
    written = write_landing_files(
        generate_records(spec), landing, fmt="jsonl", rows_per_file=150, prefix=f"part-{part}"
    )
    if part == "b":
        again = list(generate_records(GeneratorSpec(events=60, seed=1, end=END, bad_share=0.05)))
        written += write_landing_files(iter(again), landing, fmt="csv", prefix="part-b-replay")
    for index, path in enumerate(written):
        path.rename(path.with_name(f"part-{part}-{index}{path.suffix}"))


def outcome(spark, lakehouse: Lakehouse) -> dict:  # type: ignore[no-untyped-def]
    """Everything a rerun must reproduce: views, master events, quarantine (by position)."""
    master = spark.read.format("delta").load(lakehouse.master_dataset)
    quarantine = spark.read.format("delta").load(lakehouse.quarantine)
    name = F.regexp_extract("source_name", r"([^/]+)$", 1)
    return {
        "views": published_views(spark, lakehouse),
        "master": sorted(
            tuple(r)
            for r in master.select(
                "event_id", "amount", "event_time", name, "source_offset"
            ).collect()
        ),
        "quarantine": sorted(
            tuple(r) for r in quarantine.select(name, "source_offset", "reason").collect()
        ),
    }


def conf_file(base: Path) -> Path:
    path = base / "pipeline.toml"
    path.write_text(
        f'[lakehouse]\nroot = "{base / "lakehouse"}"\n[sources.files]\nlanding = "{base / "landing"}"\n'
        '[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\n[quality]\nmin_score = 0.0\n'
    )
    return path


def run_killed(
    base: Path, *, fault_point: str | None = None, kill_after: float | None = None
) -> int:
    env = {**os.environ, "LAMBDA_SALES_FAULT_POINT": fault_point or ""}
    proc = subprocess.Popen(
        [CLI, "batch", "--conf", str(conf_file(base)), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            family = descendants(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            wait_gone(family, timeout=60)
            return proc.returncode
    else:
        family: list[int] = []
        while proc.poll() is None:
            family = descendants(proc.pid) or family
            time.sleep(0.5)
        wait_gone(family, timeout=60)
    proc.communicate()
    return proc.returncode


@pytest.fixture(scope="module")
def reference(spark, tmp_path_factory):  # type: ignore[no-untyped-def]
    """An uninterrupted history: part A in one run, part B in the next."""
    from sales_core.config import load_config

    base = tmp_path_factory.mktemp("reference")
    config = load_config(conf_file(base))
    write_inputs(base / "landing", "a")
    run_batch(spark, config)
    write_inputs(base / "landing", "b")
    run_batch(spark, config)
    return outcome(spark, Lakehouse(config.lakehouse.root))


@pytest.mark.timeout(
    3000
)  # six cold JVM starts in a row: past the 900 s default when two workers share the cores
def test_sigkill_at_each_step_in_turn_then_rerun_converges(spark, tmp_path, reference) -> None:  # type: ignore[no-untyped-def]
    """Kill the job at every step, each run resuming from the state the last kill left.

    Run k+1 starts from the crash state of run k and passes through every step before its own
    fault point again, so recovery from each crash state is exercised; the last rerun must
    converge to the uninterrupted history. (One chain: a JVM start per step, not a whole
    history per step, to keep the suite within CI's time.)
    """
    from sales_core.config import load_config

    config = load_config(conf_file(tmp_path))
    lakehouse = Lakehouse(config.lakehouse.root)
    write_inputs(tmp_path / "landing", "a")
    run_batch(spark, config)
    before = published_views(spark, lakehouse)
    write_inputs(tmp_path / "landing", "b")

    for fault_point in FAULT_POINTS:
        assert run_killed(tmp_path, fault_point=fault_point) == -signal.SIGKILL, (
            f"{fault_point} was never reached"
        )
        # A reader during (and after) the killed run sees a whole generation: the previous one,
        # unless the kill came after the new one was published.
        if fault_point == "batch.after_publish":
            assert current_generation(spark, lakehouse).generation == 2  # type: ignore[union-attr]
            assert published_views(spark, lakehouse) == reference["views"]
        else:
            assert current_generation(spark, lakehouse).generation == 1, fault_point  # type: ignore[union-attr]
            assert published_views(spark, lakehouse) == before, fault_point

    rerun = run_batch(spark, config)
    assert rerun.status == "succeeded"
    assert outcome(spark, lakehouse) == reference
    statuses = [
        r["status"]
        for r in spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .orderBy("started_at")
        .collect()
    ]
    assert statuses == ["succeeded", *["interrupted"] * len(FAULT_POINTS), "succeeded"]


@pytest.mark.parametrize("kill_after", (25.0,))
def test_sigkill_at_an_arbitrary_moment_then_rerun_converges(
    spark, tmp_path, reference, kill_after
) -> None:  # type: ignore[no-untyped-def]
    from sales_core.config import load_config

    config = load_config(conf_file(tmp_path))
    lakehouse = Lakehouse(config.lakehouse.root)
    write_inputs(tmp_path / "landing", "a")
    run_batch(spark, config)
    write_inputs(tmp_path / "landing", "b")

    run_killed(tmp_path, kill_after=kill_after)  # killed wherever it is by then (or finished)
    assert current_generation(spark, lakehouse).generation in (1, 2)  # type: ignore[union-attr]

    run_batch(spark, config)
    assert outcome(spark, lakehouse) == reference
