"""Recompute every batch view from one pinned snapshot and publish them atomically.

Each view table holds generations side by side (partitioned by ``generation``). The four views
are computed in one pass over the snapshot; each view's new generation is written by an
overwrite of its partition (so a rerun after a crash overwrites its own half-written rows; the
same commit drops the generations older than the kept ones), from the driver by delta-rs when
the views are small (:mod:`batch_layer.view_writes`), else by Spark. The new generation
becomes visible only when one row is appended to the
``generations`` table: a single Delta commit that also carries the hand-off mark. Readers
resolve the current generation first and read only its rows, so they see the old
generation or the new one, never a mix.
"""

from __future__ import annotations

import logging
from datetime import datetime

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch_layer.view_writes import (
    DRIVER_WRITE_MAX_ROWS,
    DriverWriteUnusable,
    driver_writable,
    overwrite_on_driver,
    overwrite_with_spark,
    view_frame,
    view_rows,
)
from sales_core.faults import fault_point
from sales_core.handoff import Generation, handoff_mark
from sales_core.lakehouse import (
    GENERATIONS_SCHEMA,
    Lakehouse,
    ensure_master_dataset,
    ensure_serving_tables,
    table_version,
)
from sales_core.views import VIEWS, compute_views_together

log = logging.getLogger(__name__)

VIEW_COLUMN = "view"  # the one-pass aggregation's column naming each row's view


def recompute_and_publish(
    spark: SparkSession,
    lakehouse: Lakehouse,
    *,
    run_id: str,
    published_at: datetime,
    previous: Generation | None,
    keep_generations: int,
    progress=None,  # type: ignore[no-untyped-def]
    storage_options: dict[str, str] | None = None,
) -> Generation:
    """Recompute the four views from a pinned master snapshot and publish a new generation
    after ``previous`` (the current one, None before the first). ``storage_options``:
    delta-rs's, for a lakehouse on S3 (without them the views there are written by Spark)."""
    ensure_master_dataset(spark, lakehouse)
    ensure_serving_tables(spark, lakehouse)
    master_version = table_version(spark, lakehouse.master_dataset)
    snapshot = (
        spark.read.format("delta")
        .option("versionAsOf", master_version)
        .load(lakehouse.master_dataset)
    )
    generation = (previous.generation if previous else 0) + 1

    # The count comes from the Delta log's file statistics.
    total = snapshot.count()
    # The generations older than the kept ones leave in the same commit as the new one comes
    # in (the overwrite replaces what its condition matches): one commit per view.
    oldest_kept = generation - keep_generations
    replaced = f"generation = {generation}" + (
        f" OR generation < {oldest_kept}" if oldest_kept > 1 else ""
    )

    # The four views in one pass over the snapshot (one scan, one aggregation over grouping
    # sets), kept on the executors: small, since they are aggregates.
    if progress:
        progress(f"compute the {len(VIEWS)} views in one pass")
    together = snapshot.transform(
        compute_views_together(list(VIEWS.values()), view_column=VIEW_COLUMN)
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows = together.count()
        paths = [lakehouse.batch_view(name) for name in VIEWS]
        on_driver = rows <= DRIVER_WRITE_MAX_ROWS and driver_writable(paths, storage_options)
        collected = together.toArrow() if on_driver else None
        for index, name in enumerate(VIEWS, start=1):
            path = lakehouse.batch_view(name)
            if collected is not None:
                try:
                    overwrite_on_driver(
                        path,
                        view_rows(collected, name, view_column=VIEW_COLUMN, generation=generation),
                        predicate=replaced,
                        storage_options=storage_options,
                    )
                except DriverWriteUnusable as exc:
                    log.info("delta-rs cannot write %s (%s): Spark writes the views", path, exc)
                    collected = None
            if collected is None:
                frame = view_frame(together, name, view_column=VIEW_COLUMN, generation=generation)
                overwrite_with_spark(frame, path, predicate=replaced)
            if progress:
                progress(f"view {index}/{len(VIEWS)} written: {name}")
            fault_point(f"batch.after_view_{index}")
    finally:
        together.unpersist()
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
    return published


def drop_old_generations(spark: SparkSession, lakehouse: Lakehouse, oldest_kept: int) -> None:
    """Delete view rows of generations older than ``oldest_kept`` (readers use recent ones)."""
    if oldest_kept <= 1:
        return
    for name in VIEWS:
        DeltaTable.forPath(spark, lakehouse.batch_view(name)).delete(
            F.col("generation") < oldest_kept
        )
