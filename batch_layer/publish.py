"""Recompute every batch view from one pinned snapshot and publish them atomically.

Each view table holds generations side by side (partitioned by ``generation``). Each view's
new generation is computed by an aggregation of its own over the snapshot and written by an
overwrite of its partition (so a rerun after a crash overwrites its own half-written rows; the
same commit drops the generations older than the kept ones): from the driver by delta-rs when
the view is small, as aggregates are (:mod:`batch_layer.view_writes`), else by Spark. The four
views and the hand-off mark are computed side by side. The new generation becomes visible
only when one row is appended to the ``generations`` table: a single Delta commit that also
carries the hand-off mark. Readers resolve the current generation first and read only its
rows, so they see the old generation or the new one, never a mix.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from delta.tables import DeltaTable
from pyspark import StorageLevel, inheritable_thread_target
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch_layer.view_writes import (
    DRIVER_WRITE_MAX_ROWS,
    DriverWriteUnusable,
    as_table_rows,
    driver_writable,
    overwrite_on_driver,
    overwrite_with_spark,
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
from sales_core.local_rows import local_frame
from sales_core.views import VIEWS, compute_view

log = logging.getLogger(__name__)


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

    # Each view is its own aggregation over the snapshot, scanning only the columns it needs
    # (one aggregation of the four over grouping sets measured 1.2x slower at 10M events), its
    # result kept on the executors until written. The four and the hand-off mark side by
    # side: the driver's fixed costs of each overlap the others' work.
    paths = [lakehouse.batch_view(name) for name in VIEWS]
    driver = {"usable": driver_writable(paths, storage_options)}

    def on_driver(path: str, rows: DataFrame, name: str) -> bool:
        """Write ``rows`` by delta-rs from the driver; False: delta-rs cannot (from now on)."""
        try:
            overwrite_on_driver(
                path,
                as_table_rows(rows.toArrow(), name),
                predicate=replaced,
                storage_options=storage_options,
            )
        except DriverWriteUnusable as exc:
            log.info("delta-rs cannot write %s (%s): Spark writes the views", path, exc)
            driver["usable"] = False
            return False
        return True

    def write_view(index: int, name: str) -> None:
        path = lakehouse.batch_view(name)
        rows = (
            snapshot.transform(compute_view(VIEWS[name]))
            .select(F.lit(generation).cast("long").alias("generation"), *VIEWS[name].columns)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            small = driver["usable"] and rows.count() <= DRIVER_WRITE_MAX_ROWS
            if not (small and on_driver(path, rows, name)):
                overwrite_with_spark(rows, path, predicate=replaced)
        finally:
            rows.unpersist()
        if progress:
            progress(f"view {index}/{len(VIEWS)} written: {name}")
        fault_point(f"batch.after_view_{index}")

    if progress:
        progress(f"write the {len(VIEWS)} views side by side, with the hand-off mark")
    with ThreadPoolExecutor(len(VIEWS) + 1, thread_name_prefix="view-write") as pool:
        in_thread = inheritable_thread_target(spark)
        handoff = pool.submit(in_thread(handoff_mark), snapshot)
        writes = [
            pool.submit(in_thread(write_view), index, name)
            for index, name in enumerate(VIEWS, start=1)
        ]
        for write in writes:
            write.result()
        mark = handoff.result()
    if progress:
        progress(f"publish generation {generation}")
    published = Generation(generation, master_version, mark, total, published_at)
    # The publish: one atomic append. Idempotent per generation, should this commit be retried.
    (
        local_frame(
            spark,
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
