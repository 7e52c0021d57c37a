"""What one steady-state speed micro-batch costs: Spark jobs and Delta commits, counted.

The real streaming job runs over a real broker; every job a micro-batch's sink runs (Spark's
own included: the Kafka read and the state store run inside the sink's first action) is
counted through Spark's status tracker, under a job group per micro-batch, and every Delta
commit from the tables' transaction logs. Micro-batches after the first of a run are the
steady state (the first one of a process reads its position in the master log and the
newest registered batch epoch).

Budget of issue 12: at most 3 jobs and 2 commits (a third commit only with rejects). One job
reads, validates, de-duplicates and counts the micro-batch into the cache; one appends the new
events to the master dataset (in the steady state without reading it: see
speed_layer/sink.py); one appends the four views' increments to their one table.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from devtools.writers import publish_records
from sales_core.config import load_config
from sales_core.lakehouse import Lakehouse
from speed_layer import sink as sink_module
from speed_layer.job import run_speed
from tests.conftest import write_stream_conf
from tests.oracle import event, raw_json

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TOPIC = f"budget-sales-{uuid.uuid4().hex[:8]}"
PER_TRIGGER = 60  # 20 records per partition and micro-batch
EVENTS = 300  # five micro-batches

MAX_JOBS = 3
MAX_COMMITS = 2


def delta_versions(path: str) -> set[int]:
    log = Path(path) / "_delta_log"
    return {int(f.stem) for f in log.glob("*.json")} if log.is_dir() else set()


def stage_names(tracker: Any, job_id: int) -> list[str]:
    job = tracker.getJobInfo(job_id)
    infos = [tracker.getStageInfo(stage) for stage in (job.stageIds if job else [])]
    return [info.name for info in infos if info]


def test_steady_state_micro_batch_budget(spark, tmp_path, kafka_bootstrap, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    conf = write_stream_conf(
        tmp_path,
        bootstrap=kafka_bootstrap,
        topic=TOPIC,
        landing=tmp_path,
        kafka_extra=f"max_offsets_per_trigger = {PER_TRIGGER}\n",
    )
    config = load_config(conf)
    lakehouse = Lakehouse(config.lakehouse.root)
    events = [
        event(
            f"b-{i}", amount=f"{i}.25", customer_id=f"c{i % 7}", event_time="2026-01-15T10:00:00Z"
        )
        for i in range(EVENTS)
    ]
    records: list[dict[str, Any] | str | None] = [raw_json(e) for e in events]
    assert publish_records(records, config.sources.kafka, partitions=3) == EVENTS

    tables = [
        lakehouse.master_dataset,
        lakehouse.quarantine,
        lakehouse.speed_increments,
    ]
    cost: dict[int, tuple[int, int]] = {}  # batch id -> (jobs, commits)
    stages: dict[int, list[list[str]]] = {}  # batch id -> each job's stage names (a failure says)
    original = sink_module.SpeedSink.write_micro_batch

    def counted(self: Any, batch_df: Any, batch_id: int) -> None:
        context = batch_df.sparkSession.sparkContext
        group = context.getLocalProperty("spark.jobGroup.id")
        description = context.getLocalProperty("spark.job.description")
        before = {path: delta_versions(path) for path in tables}
        context.setJobGroup(f"budget-{batch_id}", f"micro-batch {batch_id}")
        try:
            original(self, batch_df, batch_id)
        finally:
            context.setJobGroup(group or "", description or "")
        tracker = context.statusTracker()
        jobs = tracker.getJobIdsForGroup(f"budget-{batch_id}")
        commits = sum(len(delta_versions(path) - before[path]) for path in tables)
        cost[batch_id] = (len(jobs), commits)
        stages[batch_id] = [stage_names(tracker, j) for j in sorted(jobs)]

    monkeypatch.setattr(sink_module.SpeedSink, "write_micro_batch", counted)
    run = run_speed(spark, config, available_now=True)
    assert run.totals.valid == EVENTS

    steady = {b: c for b, c in cost.items() if b > 0}
    assert len(steady) >= 3, cost
    print(json.dumps({"jobs_and_commits_per_micro_batch": cost, "stages": stages}))
    for batch_id, (jobs, commits) in steady.items():
        assert jobs <= MAX_JOBS, f"micro-batch {batch_id} ran {jobs} Spark jobs: {stages[batch_id]}"
        assert commits <= MAX_COMMITS, f"micro-batch {batch_id} made {commits} commits: {cost}"
    # The metrics are no commit of the micro-batch: they come after it, in batches.
    metrics = spark.read.format("delta").load(lakehouse.stream_metrics)
    assert sorted(r["batch_id"] for r in metrics.collect()) == sorted(cost)
