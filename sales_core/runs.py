"""The ``pipeline_runs`` table: one row per job run, upserted as the run progresses.

A run's row is written three times or more (running, then its end, and by the next run of
its job if it was killed): on a local lakehouse by delta-rs from the driver, a commit in
tens of milliseconds, where each of Spark's (an append, a count, an update, a MERGE) cost
one to eight seconds of a small run, most of a cold JVM's first minute. Elsewhere (object
storage: no delta-rs storage options here) by Spark.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sales_core.delta_log import local_path
from sales_core.lakehouse import RUNS_SCHEMA, ensure_table
from sales_core.local_rows import local_frame
from sales_core.master import with_conflict_retry
from sales_core.sql import string_literal

# A delta-rs commit to the runs table losing a race with another job's (each writes its own
# rows): read the table again and retry, this many times.
DRIVER_COMMIT_RETRIES = 4
INTERRUPTED_ERROR = "the run stopped before it finished (killed or crashed)"


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
    if local_path(runs_path) is not None:
        with_conflict_retry(
            lambda: _write_row(runs_path, record, replace=True),
            what="record pipeline run",
            retries=DRIVER_COMMIT_RETRIES,
        )
        return
    row = local_frame(spark, [record.as_row()], RUNS_SCHEMA)

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
    if local_path(runs_path) is not None:
        with_conflict_retry(
            lambda: _write_row(runs_path, record, replace=False),
            what="record pipeline run",
            retries=DRIVER_COMMIT_RETRIES,
        )
        return with_conflict_retry(
            lambda: _mark_interrupted_on_driver(runs_path, record),
            what="mark interrupted runs",
            retries=DRIVER_COMMIT_RETRIES,
        )
    row = local_frame(spark, [record.as_row()], RUNS_SCHEMA)
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
                {"status": F.lit("interrupted"), "error": F.lit(INTERRUPTED_ERROR)},
            ),
            what="mark interrupted runs",
        )
    return count


def job_runs(spark: SparkSession, runs_path: str, job: str, columns: list[str]) -> list[dict]:
    """``columns`` of every recorded run of ``job`` (none before the table exists): read by
    delta-rs on a local lakehouse, by Spark elsewhere. Timestamps compare with each other
    only (delta-rs's are UTC-aware, Spark's naive)."""
    if local_path(runs_path) is not None:
        from deltalake import DeltaTable as RsDeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            table = RsDeltaTable(runs_path)
        except TableNotFoundError:
            return []
        return table.to_pyarrow_table(columns=columns, filters=[("job", "=", job)]).to_pylist()
    if not DeltaTable.isDeltaTable(spark, runs_path):
        return []
    runs = spark.read.format("delta").load(runs_path).where(F.col("job") == job)
    return [row.asDict() for row in runs.select(*columns).collect()]


def _write_row(runs_path: str, record: RunRecord, *, replace: bool) -> None:
    """Append the run's row, or replace it (one commit: the rows of ``run_id`` out, the new
    one in), with delta-rs."""
    import pyarrow as pa
    from deltalake import write_deltalake
    from pyspark.sql.pandas.types import to_arrow_schema

    rows = pa.Table.from_pylist(
        [record.as_row()], schema=to_arrow_schema(RUNS_SCHEMA, timezone="UTC")
    )
    if replace:
        predicate = f"run_id = {string_literal(record.run_id)}"
        write_deltalake(runs_path, rows, mode="overwrite", predicate=predicate)
    else:
        write_deltalake(runs_path, rows, mode="append")


def _mark_interrupted_on_driver(runs_path: str, record: RunRecord) -> int:
    """:func:`mark_interrupted`, read and updated with delta-rs."""
    from deltalake import DeltaTable as RsDeltaTable

    table = RsDeltaTable(runs_path)
    running = table.to_pyarrow_table(
        columns=["run_id"], filters=[("job", "=", record.job), ("status", "=", "running")]
    )
    stale = [run for run in running.column("run_id").to_pylist() if run != record.run_id]
    if stale:
        table.update(
            predicate=(
                f"job = {string_literal(record.job)} AND status = 'running' "
                f"AND run_id <> {string_literal(record.run_id)}"
            ),
            updates={"status": "'interrupted'", "error": string_literal(INTERRUPTED_ERROR)},
        )
    return len(stale)


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
