"""What the speed layer has written so far: its newest micro-batch in the master dataset and in
the stream metrics (the checkpoint check at start compares these with Spark's checkpoint).

The tables' schemas live in :mod:`sales_core.lakehouse` (the serving layer reads them too).
"""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sales_core.handoff import SPEED_LAYER
from sales_core.lakehouse import Lakehouse


def last_master_batch(spark: SparkSession, lakehouse: Lakehouse, stream: str) -> int | None:
    """The highest micro-batch id of ``stream`` in the master dataset (None: no rows)."""
    if not DeltaTable.isDeltaTable(spark, lakehouse.master_dataset):
        return None
    row = (
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .where((F.col("ingest_layer") == SPEED_LAYER) & (F.col("ingest_run") == stream))
        .agg(F.max("ingest_batch").alias("last"))
        .first()
    )
    return None if row is None or row["last"] is None else int(row["last"])


def last_metrics_batch(spark: SparkSession, lakehouse: Lakehouse, stream: str) -> int | None:
    """The highest micro-batch id of ``stream`` in ``stream_metrics`` (None: no rows)."""
    if not DeltaTable.isDeltaTable(spark, lakehouse.stream_metrics):
        return None
    row = (
        spark.read.format("delta")
        .load(lakehouse.stream_metrics)
        .where(F.col("stream") == stream)
        .agg(F.max("batch_id").alias("last"))
        .first()
    )
    return None if row is None or row["last"] is None else int(row["last"])
