"""Kill the streaming job with SIGKILL between its writes, and stop it with SIGTERM; a restart
converges to exactly what the contract makes of the topic (CONTRACT §2, §4), computed by the
test's own oracle (``tests.oracle``) from the records as published, and every rejected record
reaches the dead-letter topic at least once.

The killed job is the real CLI (``lambda-sales speed``) in its own process, with
``LAMBDA_SALES_FAULT_POINT`` naming where it kills itself. The fault points are chained on one
lakehouse and checkpoint (each killed run is the recovery of the kill before it: a cold JVM per
point, not two), followed by a run stopped with SIGTERM on the state they left; the last,
converging run is in-process on the shared session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from devtools.generator import GeneratorSpec, generate_records
from devtools.writers import publish_records, to_json_line
from sales_core.config import load_config
from sales_core.lakehouse import Lakehouse, read_view_increments
from sales_core.views import VIEWS, merge_partials
from speed_layer.checkpoint import read_checkpoint_state
from speed_layer.job import run_speed
from tests.conftest import consume_all, write_stream_conf
from tests.oracle import Ledger, compute_views, normalise_row, parse_json_text, rows_to_view
from tests.processes import wait_for_exit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

CLI = str(Path(sys.executable).with_name("lambda-sales"))
TOPIC = f"crash-sales-{uuid.uuid4().hex[:8]}"  # on a broker other modules share
END = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
EVENTS = 450
PER_TRIGGER = 150  # three or four micro-batches (Spark splits the limit over the partitions)
# Before and after every Delta commit of a micro-batch, and after Spark's own checkpoint
# commit: quarantine | master | increments (the four views, one commit) | (end of the sink, Spark's commit
# next) | Spark's commit done, metrics not written | metrics written (off the hot path).
IN_SINK = (
    "speed.after_quarantine",
    "speed.after_master_insert",
    "speed.after_increments",
    "speed.before_checkpoint_commit",
)
AFTER_COMMIT = ("speed.after_checkpoint_commit", "speed.after_metrics")
FAULT_POINTS = IN_SINK + AFTER_COMMIT


@pytest.fixture(scope="module")
def bootstrap(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test process's broker, holding this module's topic of generated sales (3 partitions)."""
    base = tmp_path_factory.mktemp("publish")
    conf = load_config(conf_file(base, kafka_bootstrap))
    assert publish_records(RECORDS, conf.sources.kafka, partitions=3) == EVENTS
    return kafka_bootstrap


RECORDS = list(
    generate_records(
        GeneratorSpec(
            events=EVENTS, seed=11, end=END, bad_share=0.05, duplicate_share=0.05, late_share=0.1
        )
    )
)


@pytest.fixture(scope="module")
def oracle() -> Ledger:
    """What the contract makes of the topic: each record as its JSON value reads."""
    ledger = Ledger(now=datetime.now(timezone.utc))
    for record in RECORDS:
        ledger.add(parse_json_text(to_json_line(record)))
    assert ledger.duplicates and ledger.rejected, "the topic exercises every outcome"
    return ledger


def conf_file(base: Path, bootstrap: str) -> Path:
    """Each test's own dead-letter topic: what one run published cannot pass for another's."""
    return write_stream_conf(
        base,
        bootstrap=bootstrap,
        topic=TOPIC,
        landing=base,
        kafka_extra=f"max_offsets_per_trigger = {PER_TRIGGER}\n",
        dlq_topic=f"{TOPIC}-dlq-{base.name}",
    )


def outcome(spark: Any, lakehouse: Lakehouse) -> dict[str, Any]:
    """Everything a restart must reproduce: master events, quarantine, merged increments."""
    master = spark.read.format("delta").load(lakehouse.master_dataset)
    quarantine = spark.read.format("delta").load(lakehouse.quarantine)
    increments = {}
    for name, view in VIEWS.items():
        rows = read_view_increments(spark, lakehouse, name).transform(merge_partials(view))
        increments[name] = rows_to_view([r.asDict() for r in rows.collect()], name)
    metrics = spark.read.format("delta").load(lakehouse.stream_metrics)
    return {
        "master": sorted(
            tuple(r)
            for r in master.select(
                "event_id", "amount", "event_time", "source_partition", "source_offset"
            ).collect()
        ),
        "quarantine": sorted(
            tuple(r)
            for r in quarantine.select("source_partition", "source_offset", "reason").collect()
        ),
        "increments": increments,
        "micro_batches": sorted(
            tuple(r)
            for r in metrics.select(
                "batch_id", "input_rows", "valid", "duplicates", "quarantined"
            ).collect()
        ),
    }


def views_from_scratch(spark: Any, lakehouse: Lakehouse) -> dict[str, Any]:
    """The views over the master dataset, computed by the test's own oracle."""
    rows = spark.read.format("delta").load(lakehouse.master_dataset).collect()
    return compute_views([{k: normalise_row(v) for k, v in r.asDict().items()} for r in rows])


def start_cli(conf: Path, *args: str, stderr: Any, fault_point: str = "") -> subprocess.Popen[str]:
    """``lambda-sales speed`` in its own process (stderr to a file: a full pipe would block it)."""
    env = {**os.environ, "LAMBDA_SALES_FAULT_POINT": fault_point}
    return subprocess.Popen(
        [CLI, "speed", "--conf", str(conf), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def check_converged(
    spark: Any, lakehouse: Lakehouse, oracle: Ledger, bootstrap: str, dlq_topic: str
) -> None:
    """Master events, quarantine and merged increments are the oracle's; each micro-batch is
    recorded once and balances; every reject is on the dead-letter topic (at least once)."""
    got = outcome(spark, lakehouse)
    event_ids = [row[0] for row in got["master"]]
    assert len(event_ids) == len(set(event_ids)), "an event is in the master dataset twice"
    assert {row[0]: (row[1], normalise_row(row[2])) for row in got["master"]} == {
        i: (e["amount"], e["event_time"]) for i, e in oracle.events.items()
    }
    assert got["increments"] == oracle.views()
    assert got["increments"] == views_from_scratch(spark, lakehouse)
    positions = [(p, o) for p, o, _ in got["quarantine"]]
    assert len(positions) == len(set(positions)), "a record quarantined twice"
    assert sorted(r for _, _, r in got["quarantine"]) == sorted(oracle.rejected)
    batches = got["micro_batches"]
    assert [b[0] for b in batches] == list(range(len(batches))), (
        "a micro-batch recorded twice or never"
    )
    assert sum(b[1] for b in batches) == EVENTS
    assert all(
        read == valid + duplicates + quarantined
        for _, read, valid, duplicates, quarantined in batches
    )
    assert (sum(b[2] for b in batches), sum(b[3] for b in batches), sum(b[4] for b in batches)) == (
        len(oracle.events),
        oracle.duplicates,
        len(oracle.rejected),
    )
    letters = consume_all(bootstrap, dlq_topic, expected=len(positions))
    headers = [{k: v.decode() for k, v in m.headers} for m in letters]
    published = Counter(
        (int(h["source_partition"]), int(h["source_offset"]), h["reason"]) for h in headers
    )
    # at least once: a record published again after a crash is allowed (and counted here)
    twice = sum(published.values()) - len(published)
    missing = set(got["quarantine"]) - set(published)
    assert not missing, (
        f"rejects never published to the dead-letter topic: {sorted(missing)} "
        f"({twice} published more than once)"
    )
    assert set(published) == set(got["quarantine"]), "a dead letter of no quarantined record"


@pytest.mark.timeout(1800)  # 8 cold CLI JVMs in turn: 5.6 min on a quiet machine
def test_sigkill_at_each_fault_point_in_turn_then_sigterm_then_restart_converges(
    spark, tmp_path, bootstrap, oracle
) -> None:  # type: ignore[no-untyped-def]
    """Every fault point kills the real CLI in turn, on the same tables and checkpoint: each run
    after the first recovers from the kill before it (replaying micro-batch 0 until Spark has
    committed it) and then dies at the next point; then a run is stopped with SIGTERM; a last,
    uninterrupted run converges."""
    conf = conf_file(tmp_path, bootstrap)
    config = load_config(conf)
    lakehouse = Lakehouse(config.lakehouse.root)

    for step, fault_point in enumerate(FAULT_POINTS):
        log_path = tmp_path / f"speed-{step}.log"
        with log_path.open("w") as log:
            status = wait_for_exit(
                start_cli(conf, "--available-now", "--quiet", stderr=log, fault_point=fault_point)
            ).returncode
        assert status == -signal.SIGKILL, f"{fault_point}: {log_path.read_text()[-2000:]}"
        state = read_checkpoint_state(spark, lakehouse.speed_checkpoint)
        if fault_point in IN_SINK:
            assert (state.last_planned, state.last_committed) == (0, None), (
                f"{fault_point}: killed in micro-batch 0 (or its replay)"
            )
        else:
            assert state.last_committed is not None, (
                f"{fault_point}: killed after Spark committed a micro-batch"
            )
    # Then an operator's stop, on the state the kills left: SIGTERM lets the micro-batch in
    # flight finish and the job exit 0, its run recorded as stopped, its checkpoint at most one
    # planned micro-batch ahead of the last committed.
    log_path = tmp_path / "speed-sigterm.log"
    with log_path.open("w") as log:
        proc = start_cli(conf, "--trigger", "1 second", stderr=log)
        deadline = time.monotonic() + 600
        while '"event": "speed_micro_batch"' not in log_path.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, "no micro-batch finished in time"
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log_path.read_text()[-2000:]
    assert " stopped: " in stdout
    # a micro-batch refused because it started after the stop is no error (nor a traceback)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
    state = read_checkpoint_state(spark, lakehouse.speed_checkpoint)
    assert state.last_committed is not None
    assert state.last_planned in (state.last_committed, state.last_committed + 1)

    run = run_speed(spark, config, available_now=True)
    assert run.status == "succeeded"
    check_converged(spark, lakehouse, oracle, bootstrap, config.sources.kafka.dlq_topic)
    statuses = [
        r["status"]
        for r in spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .where(F.col("job") == "speed")
        .orderBy("started_at")
        .collect()
    ]
    assert statuses == ["interrupted"] * len(FAULT_POINTS) + ["stopped", "succeeded"]
