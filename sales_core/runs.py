"""The ``pipeline_runs`` table: one row per job run, upserted as the run progresses."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sales_core.lakehouse import RUNS_SCHEMA, ensure_table
from sales_core.master import with_conflict_retry


def new_run_id(job: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{job}-{stamp}-{uuid.uuid4().hex[:8]}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class RunRecord:
    run_id: str
    job: str
    started_at: datetime
    status: str = "running"
    ended_at: datetime | None = None
    records_read: int | None = None
    valid: int | None = None
    duplicates: int | None = None
    quarantined: int | None = None
    quality_score: float | None = None
    quality: dict[str, Any] | None = None
    generation: int | None = None
    delta_versions: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "status": self.status,
            "records_read": self.records_read,
            "valid": self.valid,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "quality_score": self.quality_score,
            "quality": json.dumps(self.quality) if self.quality is not None else None,
            "generation": self.generation,
            "delta_versions": self.delta_versions or None,
            "error": self.error,
            "details": json.dumps(self.details, default=str) if self.details else None,
        }


def save_run(spark: SparkSession, runs_path: str, record: RunRecord) -> None:
    """Insert or update the run's row (keyed by ``run_id``)."""
    ensure_table(spark, runs_path, RUNS_SCHEMA)
    row = spark.createDataFrame([record.as_row()], RUNS_SCHEMA)

    def upsert() -> None:
        (
            DeltaTable.forPath(spark, runs_path)
            .alias("r")
            .merge(row.alias("n"), "r.run_id = n.run_id")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )

    with_conflict_retry(upsert, what="record pipeline run")


def mark_interrupted(spark: SparkSession, runs_path: str, job: str, *, except_run: str) -> int:
    """Mark earlier runs of ``job`` still shown as running (killed mid-run) as interrupted."""
    if not DeltaTable.isDeltaTable(spark, runs_path):
        return 0
    table = DeltaTable.forPath(spark, runs_path)
    stale = (F.col("job") == job) & (F.col("status") == "running") & (F.col("run_id") != except_run)
    count = table.toDF().where(stale).count()
    if count:
        with_conflict_retry(
            lambda: table.update(
                stale,
                {
                    "status": F.lit("interrupted"),
                    "error": F.lit("the run stopped before it finished (killed or crashed)"),
                },
            ),
            what="mark interrupted runs",
        )
    return count
