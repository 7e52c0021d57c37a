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


def start_run(spark: SparkSession, runs_path: str, record: RunRecord) -> int:
    """Record a new run as running (an append: its ``run_id`` is new, there is nothing to
    match), then mark earlier runs of its job still shown as running as interrupted; returns
    how many were."""
    ensure_table(spark, runs_path, RUNS_SCHEMA)
    row = spark.createDataFrame([record.as_row()], RUNS_SCHEMA)
    with_conflict_retry(
        lambda: row.write.format("delta").mode("append").save(runs_path),
        what="record pipeline run",
    )
    return mark_interrupted(spark, runs_path, record.job, except_run=record.run_id)


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


#: The columns ``lambda-sales runs`` lists, in order.
RUN_LIST_COLUMNS = (
    "run_id",
    "job",
    "status",
    "started_at",
    "records_read",
    "valid",
    "duplicates",
    "quarantined",
    "quality_score",
    "generation",
)


def recent_runs(spark: SparkSession, runs_path: str, limit: int) -> list[dict[str, Any]] | None:
    """The ``limit`` latest runs, newest first, as :data:`RUN_LIST_COLUMNS` rows (None: no
    run recorded yet)."""
    if not DeltaTable.isDeltaTable(spark, runs_path):
        return None
    rows = (
        spark.read.format("delta")
        .load(runs_path)
        .orderBy(F.col("started_at").desc())
        .limit(limit)
        .select(*RUN_LIST_COLUMNS)
        .collect()
    )
    return [row.asDict() for row in rows]


def run_summary(record: RunRecord) -> list[tuple[str, str]]:
    """What a finished run reports: (item, value) pairs, counts adding up as in CONTRACT §2."""
    details = record.details or {}
    seconds = (record.ended_at - record.started_at).total_seconds() if record.ended_at else None
    items: list[tuple[str, Any]] = [
        ("run", record.run_id),
        ("status", record.status),
        ("records read", record.records_read),
        ("  valid (new events)", record.valid),
        ("  duplicates", record.duplicates),
        ("  quarantined", record.quarantined),
        ("quality score", None if record.quality_score is None else f"{record.quality_score:.2f}"),
        ("generation published", record.generation),
        ("events in views", details.get("events_in_views")),
        ("duration", None if seconds is None else f"{seconds:.1f}s"),
    ]
    items += [
        (f"  rejected {reason}", n)
        for reason, n in sorted((details.get("rejected_by_reason") or {}).items())
    ]
    return [(item, "" if value is None else str(value)) for item, value in items]


def format_run_summary(record: RunRecord) -> str:
    """:func:`run_summary` as an aligned two-column table for the terminal."""
    return format_items(run_summary(record))


def format_items(items: list[tuple[str, str]]) -> str:
    """(item, value) pairs as an aligned two-column table for the terminal."""
    rows = [("item", "value"), *items]
    item_width = max(len(item) for item, _ in rows)
    value_width = max(len(value) for _, value in rows)
    rows.insert(1, ("-" * item_width, "-" * value_width))
    return "\n".join(f"{item.ljust(item_width)}  {value}".rstrip() for item, value in rows)
