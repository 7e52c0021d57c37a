"""Building blocks of the serving-layer tests: micro-batches through the real speed sink,
expected DataFrames from the independent oracle, and comparisons of both engines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from sales_core.config import Config
from sales_core.handoff import current_generation, read_batch_view
from sales_core.lakehouse import Lakehouse
from sales_core.views import VIEWS
from speed_layer.sink import SinkSettings, SpeedSink
from speed_layer.source import BATCH_TIME
from tests.oracle import VIEW_KEYS, compute_views, raw_json, rows_to_view

KAFKA_RECORD = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
        T.StructField(BATCH_TIME, T.TimestampType()),
    ]
)


def speed_micro_batch(
    spark: SparkSession,
    config: Config,
    batch_id: int,
    records: Iterable[dict[str, Any]],
    *,
    first_offset: int,
    batch_time: datetime | None = None,
) -> None:
    """Run micro-batch ``batch_id`` of Kafka-shaped ``records`` through the real speed sink
    (the ``foreachBatch`` function of the streaming job), without a broker: the records are
    valid, so nothing goes to the dead-letter topic, and the lag metric is skipped."""
    now = batch_time or datetime.now(timezone.utc)
    rows = [
        (
            r["event_id"].encode(),
            json.dumps(r).encode(),
            config.sources.kafka.topic,
            0,
            first_offset + i,
            now,
            now,
        )
        for i, r in enumerate(records)
    ]
    sink = SpeedSink(SinkSettings(Lakehouse(config.lakehouse.root), config.sources.kafka))
    try:
        sink.write_micro_batch(spark.createDataFrame(rows, KAFKA_RECORD), batch_id)
    finally:
        sink.close()


def raw(events: Iterable[dict[str, Any]], **overrides: Any) -> list[dict[str, Any]]:
    return [{**raw_json(e), **overrides} for e in events]


def expected_df(spark: SparkSession, name: str, events: list[dict[str, Any]]) -> DataFrame:
    """The oracle's view ``name`` over ``events`` as a DataFrame of the view's schema."""
    view = VIEWS[name]
    rows = []
    for key, measures in compute_views(events)[name].items():
        row = dict(zip(VIEW_KEYS[name], key, strict=True)) | measures
        rows.append(tuple(row[c] for c in view.columns))
    return spark.createDataFrame(rows, view.schema)


def totals(rows: list[dict[str, Any]]) -> tuple[int, Any]:
    """(events, revenue) summed over a view's rows."""
    return sum(r["events"] for r in rows), sum((r["revenue"] for r in rows), start=0)


def published_views(spark: SparkSession, lakehouse: Lakehouse) -> dict[str, Any]:
    """The current generation's batch views, each in the oracle's shape (``rows_to_view``)."""
    generation = current_generation(spark, lakehouse)
    assert generation is not None
    return {
        name: rows_to_view(
            [
                r.asDict()
                for r in read_batch_view(spark, lakehouse, name, generation.generation).collect()
            ],
            name,
        )
        for name in VIEWS
    }
