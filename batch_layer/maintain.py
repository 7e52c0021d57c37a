"""Table maintenance: keep the data files of a lakehouse that runs for months few.

A stream with a 1-second trigger adds small files and Delta commits every second, forever;
``lambda-sales maintain`` (scheduled after the nightly batch) takes them back:

1. **compacts** the master dataset, the speed increments, the quarantine, the stream
   metrics and the alerts (Delta ``OPTIMIZE``, bin-packing; a commit with ``dataChange = false``, so the
   stream's appends never conflict with it and readers see the same rows);
2. **expires the speed increments every kept generation covers**: per stream, the rows at or
   below the lowest hand-off mark of the last ``batch.keep_generations`` generations. No
   reader adds them any more (each reader adds only the increments above its generation's
   mark), the batch views hold their events, and the reconciliation of the next publish
   compares only increments above the current mark;
3. **drops the view rows of generations older than** ``batch.keep_generations`` (the publish
   does too; this catches a publish that stopped after its commit);
4. **VACUUMs** every table with ``maintenance.vacuum_retention_hours`` (at least 1): the
   files a table version of that window needs stay, so a reader or job pinned to a version
   younger than that never breaks; the serving fast path re-reads a table whose files it
   held were compacted away.

5. **expires the Delta log** of each local table beyond the same retention
   (:func:`sales_core.delta_log.expire_log`): a 1-second trigger adds a commit and its
   checksum a second to the hot tables, which Delta would keep for
   ``delta.logRetentionDuration`` (30 days by default) though no version older than the
   VACUUM retention can be read. On an object store Delta's own clean-up stays in charge.

Every step is safe while the stream, the batch and readers run: a compaction or a delete that
loses a race with another commit is run again. The run is recorded in ``pipeline_runs``
(job ``maintain``) with the files of each table before and after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch_layer.job import record_failure, table_versions
from batch_layer.publish import drop_old_generations
from sales_core.config import Config, ConfigError
from sales_core.delta_log import expire_log, local_path
from sales_core.errors import one_line
from sales_core.lakehouse import Lakehouse
from sales_core.master import with_conflict_retry
from sales_core.runs import RunRecord, new_run_id, save_run, start_run, utcnow
from sales_core.views import VIEWS

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

MAINTAIN_JOB = "maintain"
# Below this many data files a table is left as it is.
MIN_FILES = 2


def _tables(lakehouse: Lakehouse) -> dict[str, str]:
    """Every table of the lakehouse, by name; the first five are the ones compacted."""
    return {
        "master_dataset": lakehouse.master_dataset,
        "speed_increments": lakehouse.speed_increments,
        "quarantine": lakehouse.quarantine,
        "stream_metrics": lakehouse.stream_metrics,
        "alerts": lakehouse.alerts,
        "quarantine_replays": lakehouse.quarantine_replays,
        "ingest_ledger": lakehouse.ingest_ledger,
        "pipeline_runs": lakehouse.pipeline_runs,
        "generations": lakehouse.generations,
        **{f"view_{name}": lakehouse.batch_view(name) for name in VIEWS},
    }


COMPACTED = ("master_dataset", "speed_increments", "quarantine", "stream_metrics", "alerts")


def data_files(spark: SparkSession, path: str) -> int:
    """How many data files the table's current version has."""
    row = DeltaTable.forPath(spark, path).detail().select("numFiles").first()
    return 0 if row is None else int(row["numFiles"])


def compact(spark: SparkSession, path: str, *, min_files: int = MIN_FILES) -> tuple[int, int]:
    """``OPTIMIZE`` the table when it has at least ``min_files`` files; (files before, after)."""
    before = data_files(spark, path)
    if before < min_files:
        return before, before
    with_conflict_retry(
        lambda: DeltaTable.forPath(spark, path).optimize().executeCompaction(),
        what=f"compact {path}",
    )
    return before, data_files(spark, path)


def covered_marks(
    spark: SparkSession, lakehouse: Lakehouse, keep_generations: int
) -> dict[str, int]:
    """Per stream, the lowest hand-off mark of the last ``keep_generations`` generations: the
    increments at or below it are covered by every generation a reader may still use."""
    if not DeltaTable.isDeltaTable(spark, lakehouse.generations):
        return {}
    kept = (
        spark.read.format("delta")
        .load(lakehouse.generations)
        .orderBy(F.col("generation").desc())
        .limit(keep_generations)
        .collect()
    )
    if not kept:
        return {}
    streams = set.intersection(*(set(r["handoff"]) for r in kept))
    return {s: min(int(r["handoff"][s]) for r in kept) for s in sorted(streams)}


def expire_increments(spark: SparkSession, lakehouse: Lakehouse, marks: dict[str, int]) -> int:
    """Delete the speed increments at or below ``marks``; returns how many rows went."""
    if not marks or not DeltaTable.isDeltaTable(spark, lakehouse.speed_increments):
        return 0
    covered = F.lit(False)
    for stream, mark in marks.items():
        covered = covered | ((F.col("stream") == stream) & (F.col("batch_id") <= mark))
    table = DeltaTable.forPath(spark, lakehouse.speed_increments)
    rows = table.toDF().where(covered).count()
    if rows:
        with_conflict_retry(lambda: table.delete(covered), what="expire covered increments")
    return rows


# Delta's own floor for a VACUUM retention (7 days) unless its check is turned off.
DELTA_DEFAULT_RETENTION_HOURS = 168.0


def _vacuum(spark: SparkSession, paths: list[str], hours: float) -> None:
    """VACUUM each table keeping ``hours``; below Delta's 7-day floor its check is turned off
    for these calls only (the configured window, at least 1 hour, is the rule here).

    ``LITE``: the files to delete are the ones the Delta log says were removed, not a listing
    of the whole directory (a listing job of thousands of tasks: 30 s for a table of a few
    files on two cores, 3 s this way). When the log no longer reaches back far enough, Delta
    refuses LITE and the full listing runs instead.
    """
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    previous = spark.conf.get(check, "true")
    if hours < DELTA_DEFAULT_RETENTION_HOURS:
        spark.conf.set(check, "false")
    try:
        for path in paths:
            quoted = path.replace("`", "``")
            try:
                spark.sql(f"VACUUM delta.`{quoted}` RETAIN {hours:g} HOURS LITE")
            except Exception as exc:  # noqa: BLE001 - LITE refused: the full listing is always right
                log.info("VACUUM LITE refused for %s (%s); full VACUUM", path, one_line(exc))
                DeltaTable.forPath(spark, path).vacuum(hours)
    finally:
        spark.conf.set(check, previous or "true")


def expire_logs(tables: dict[str, str], hours: float) -> dict[str, int]:
    """Expire the log entries older than the VACUUM retention of each local table
    (:func:`sales_core.delta_log.expire_log`); per table, how many files went. Tables on an
    object store keep Delta's own clean-up (``delta.logRetentionDuration``)."""
    expired: dict[str, int] = {}
    for name, path in tables.items():
        root = local_path(path)
        if root is not None:
            expired[name] = expire_log(root, hours * 3600)
    return expired


def maintain(spark: SparkSession, config: Config, *, progress: Progress = log.info) -> RunRecord:
    """Run every maintenance step once; returns the run's record (saved in ``pipeline_runs``).

    Raises:
        ConfigError: ``maintenance.vacuum_retention_hours`` is below 1.
    """
    hours = config.maintenance.vacuum_retention_hours
    if hours < 1:
        raise ConfigError(
            f"maintenance.vacuum_retention_hours must be at least 1 (readers pinned to a "
            f"version younger than it keep their files), got {hours:g}"
        )
    lakehouse = Lakehouse(config.lakehouse.root)
    record = RunRecord(new_run_id(MAINTAIN_JOB), MAINTAIN_JOB, utcnow())
    start_run(spark, lakehouse.pipeline_runs, record)
    try:
        tables = {
            name: path
            for name, path in _tables(lakehouse).items()
            if DeltaTable.isDeltaTable(spark, path)
        }
        files: dict[str, dict[str, int]] = {}
        for name in COMPACTED:
            if name in tables:
                progress(f"compact {name}")
                before, after = compact(spark, tables[name])
                files[name] = {"before": before, "after": after}
        marks = covered_marks(spark, lakehouse, config.batch.keep_generations)
        progress(f"expire speed increments covered by every kept generation {marks or ''}".rstrip())
        expired = expire_increments(spark, lakehouse, marks)
        generation = None
        if DeltaTable.isDeltaTable(spark, lakehouse.generations):
            newest = (
                spark.read.format("delta")
                .load(lakehouse.generations)
                .agg(F.max("generation").alias("g"))
                .first()
            )
            generation = None if newest is None else newest["g"]
        if generation is not None:
            drop_old_generations(spark, lakehouse, generation - config.batch.keep_generations + 1)
        progress(f"vacuum {len(tables)} tables (retention {hours:g} h)")
        _vacuum(spark, list(tables.values()), hours)
        log_entries = expire_logs(tables, hours)
        progress(f"expired {sum(log_entries.values())} log entries older than {hours:g} h")
        for name in COMPACTED:
            if name in files:
                files[name]["now"] = data_files(spark, tables[name])
        record.details = {
            "files": files,
            "expired_increment_rows": expired,
            "covered_marks": marks,
            "vacuum_retention_hours": hours,
            "tables_vacuumed": sorted(tables),
            "log_entries_expired": log_entries,
        }
        record.delta_versions = table_versions(spark, lakehouse)
        record.status, record.ended_at = "succeeded", utcnow()
        save_run(spark, lakehouse.pipeline_runs, record)
        return record
    except Exception as exc:
        record_failure(spark, config, lakehouse, record, exc, what="maintenance run")
        raise


def maintain_summary(record: RunRecord) -> list[tuple[str, str]]:
    """What a maintenance run reports: (item, value) pairs."""
    details = record.details or {}
    items: list[tuple[str, Any]] = [
        ("run", record.run_id),
        ("status", record.status),
        ("expired increment rows", details.get("expired_increment_rows")),
        ("vacuum retention (h)", details.get("vacuum_retention_hours")),
        ("log entries expired", sum((details.get("log_entries_expired") or {}).values())),
    ]
    items += [
        (f"files of {name}", f"{n['before']} -> {n['after']}")
        for name, n in (details.get("files") or {}).items()
    ]
    return [(item, "" if value is None else str(value)) for item, value in items]
