"""The speed layer's own Delta tables: speed increments and stream metrics.

Locations come from :class:`sales_core.lakehouse.Lakehouse`; the schemas live here because
only the speed layer writes these tables (the serving layer reads the increments).

A speed increment row is one view row computed over the events one micro-batch inserted into
the master dataset, tagged ``(stream, batch_id)``: the batch layer's hand-off mark names,
per stream, the last micro-batch its views include, so the serving layer adds exactly the
increments with ``batch_id`` above the mark.
"""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sales_core.lakehouse import Lakehouse, ensure_master_dataset, ensure_quarantine, ensure_table
from sales_core.views import VIEWS

INCREMENT_TAG_FIELDS: tuple[T.StructField, ...] = (
    T.StructField("stream", T.StringType(), False),
    T.StructField("batch_id", T.LongType(), False),
)

STREAM_METRICS_SCHEMA = T.StructType(
    [
        T.StructField("stream", T.StringType(), False),
        T.StructField("batch_id", T.LongType(), False),
        # Spark's micro-batch timestamp: the processing time validation judged against.
        T.StructField("batch_time", T.TimestampType(), True),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("ended_at", T.TimestampType(), False),
        T.StructField("duration_ms", T.LongType(), False),
        T.StructField("input_rows", T.LongType(), False),
        T.StructField("rows_per_second", T.DoubleType(), False),
        T.StructField("valid", T.LongType(), False),  # new events inserted into the master dataset
        T.StructField("duplicates", T.LongType(), False),
        T.StructField("quarantined", T.LongType(), False),
        T.StructField("kafka_lag", T.LongType(), True),  # latest offsets minus processed, summed
        T.StructField("newest_message_at", T.TimestampType(), True),
        T.StructField("freshness_ms", T.LongType(), True),  # end of batch minus newest_message_at
        T.StructField("rejected_by_reason", T.MapType(T.StringType(), T.LongType()), True),
    ]
)


def increments_schema(view_name: str) -> T.StructType:
    """A speed increments table: ``(stream, batch_id)`` plus the view's columns."""
    return T.StructType([*INCREMENT_TAG_FIELDS, *VIEWS[view_name].schema.fields])


def ensure_speed_tables(spark: SparkSession, lakehouse: Lakehouse) -> None:
    """Create every table the speed layer writes, unless it exists (safe to race)."""
    ensure_master_dataset(spark, lakehouse)
    ensure_quarantine(spark, lakehouse)
    for name in VIEWS:
        ensure_table(spark, lakehouse.speed_increments(name), increments_schema(name))
    ensure_table(spark, lakehouse.stream_metrics, STREAM_METRICS_SCHEMA)


def last_master_batch(spark: SparkSession, lakehouse: Lakehouse, stream: str) -> int | None:
    """The highest micro-batch id of ``stream`` in the master dataset (None: no rows)."""
    if not DeltaTable.isDeltaTable(spark, lakehouse.master_dataset):
        return None
    row = (
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .where((F.col("ingest_layer") == "speed") & (F.col("ingest_run") == stream))
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
