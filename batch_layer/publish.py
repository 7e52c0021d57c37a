"""Recompute every batch view from one pinned snapshot and publish them atomically.

Each view table holds generations side by side (partitioned by ``generation``). A new
generation is written with ``replaceWhere`` (so a rerun after a crash overwrites its own
half-written rows) and becomes visible only when one row is appended to the
``generations`` table: a single Delta commit that also carries the hand-off mark. Readers
resolve the current generation first and read only its rows, so they see the old
generation or the new one, never a mix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_core.faults import fault_point
from sales_core.lakehouse import (
    GENERATIONS_SCHEMA,
    Lakehouse,
    ensure_master_dataset,
    ensure_serving_tables,
    table_version,
)
from sales_core.views import VIEWS, compute_view

log = logging.getLogger(__name__)

# The stream's name in the hand-off mark: master rows it inserted carry ingest_run = SPEED_STREAM.
SPEED_STREAM = "speed"


@dataclass(frozen=True)
class Generation:
    generation: int
    master_version: int
    handoff: dict[str, int]
    events: int
    published_at: datetime | None = None


def current_generation(
    spark: SparkSession, lakehouse: Lakehouse, *, version: int | None = None
) -> Generation | None:
    """The published generation readers see now, or at ``version`` of the generations table
    (None before the first publish)."""
    if not DeltaTable.isDeltaTable(spark, lakehouse.generations):
        return None
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    row = reader.load(lakehouse.generations).orderBy(F.col("generation").desc()).limit(1).first()
    if row is None:
        return None
    return Generation(
        row["generation"],
        row["master_version"],
        dict(row["handoff"]),
        row["events"],
        row["published_at"],
    )


def handoff_mark(snapshot: DataFrame) -> dict[str, int]:
    """Per speed stream, the last micro-batch whose events are in ``snapshot``.

    Micro-batches of a stream commit to the master dataset in order, so every batch up to the
    newest one present is in the snapshot too.
    """
    rows = (
        snapshot.where(F.col("ingest_layer") == "speed")
        .groupBy("ingest_run")
        .agg(F.max("ingest_batch").alias("last_batch"))
        .collect()
    )
    return {r["ingest_run"]: int(r["last_batch"]) for r in rows}


def recompute_and_publish(
    spark: SparkSession,
    lakehouse: Lakehouse,
    *,
    run_id: str,
    published_at: datetime,
    keep_generations: int,
    progress=None,  # type: ignore[no-untyped-def]
) -> Generation:
    """Recompute the four views from a pinned master snapshot and publish a new generation."""
    ensure_master_dataset(spark, lakehouse)
    ensure_serving_tables(spark, lakehouse)
    master_version = table_version(spark, lakehouse.master_dataset)
    snapshot = (
        spark.read.format("delta")
        .option("versionAsOf", master_version)
        .load(lakehouse.master_dataset)
    )
    previous = current_generation(spark, lakehouse)
    generation = (previous.generation if previous else 0) + 1

    # No cache: each view scans only the Parquet columns it needs from the pinned snapshot,
    # which measured twice as fast as caching the snapshot once (BENCHMARKS.md), and the
    # count comes from the Delta log's file statistics.
    total = snapshot.count()
    for index, (name, view) in enumerate(VIEWS.items(), start=1):
        if progress:
            progress(f"view {index}/{len(VIEWS)}: {name}")
        (
            snapshot.transform(compute_view(view))
            .select(F.lit(generation).cast("long").alias("generation"), *view.columns)
            .write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"generation = {generation}")
            .save(lakehouse.batch_view(name))
        )
        fault_point(f"batch.after_view_{index}")
    mark = handoff_mark(snapshot)
    published = Generation(generation, master_version, mark, total, published_at)
    # The publish: one atomic append. Idempotent per generation, should this commit be retried.
    (
        spark.createDataFrame(
            [
                {
                    "generation": generation,
                    "published_at": published_at,
                    "run_id": run_id,
                    "master_version": master_version,
                    "handoff": mark,
                    "events": total,
                }
            ],
            GENERATIONS_SCHEMA,
        )
        .write.format("delta")
        .mode("append")
        .option("txnAppId", "lambda-sales-publish")
        .option("txnVersion", generation)
        .save(lakehouse.generations)
    )
    fault_point("batch.after_publish")
    log.info(
        "published generation %d (master version %d, %d events, hand-off %s)",
        generation,
        master_version,
        total,
        mark,
    )
    _drop_old_generations(spark, lakehouse, generation - keep_generations)
    return published


def _drop_old_generations(spark: SparkSession, lakehouse: Lakehouse, oldest_kept: int) -> None:
    """Delete view rows of generations older than ``oldest_kept`` (readers use recent ones)."""
    if oldest_kept <= 1:
        return
    for name in VIEWS:
        DeltaTable.forPath(spark, lakehouse.batch_view(name)).delete(
            F.col("generation") < oldest_kept
        )


def read_batch_view(
    spark: SparkSession, lakehouse: Lakehouse, view_name: str, generation: int
) -> DataFrame:
    """The rows of one published generation of a batch view."""
    view = VIEWS[view_name]
    return (
        spark.read.format("delta")
        .load(lakehouse.batch_view(view_name))
        .where(F.col("generation") == generation)
        .select(*view.columns)
    )
