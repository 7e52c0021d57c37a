"""Per micro-batch metrics: one JSON log line and one row of the ``stream_metrics`` table.

The row is the last write of a micro-batch, and a replayed micro-batch does not append it
again, which makes ``stream_metrics`` the tables' record of how far the stream got (see
:mod:`speed_layer.checkpoint`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sales_core.lakehouse import STREAM_METRICS_SCHEMA
from sales_core.master import with_conflict_retry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MicroBatchMetrics:
    """What one micro-batch read, where each record ended, and how fast and fresh it was.

    ``input_rows == valid + duplicates + quarantined`` (CONTRACT §2).
    """

    stream: str
    batch_id: int
    batch_time: datetime | None
    started_at: datetime
    ended_at: datetime
    input_rows: int
    valid: int
    duplicates: int
    quarantined: int
    kafka_lag: int | None
    newest_message_at: datetime | None
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def duration_ms(self) -> int:
        return max(0, round((self.ended_at - self.started_at).total_seconds() * 1000))

    @property
    def rows_per_second(self) -> float:
        seconds = self.duration_ms / 1000
        return round(self.input_rows / seconds, 1) if seconds > 0 else 0.0

    @property
    def freshness_ms(self) -> int | None:
        if self.newest_message_at is None:
            return None
        return round((self.ended_at - self.newest_message_at).total_seconds() * 1000)

    def as_row(self) -> dict[str, object]:
        """The ``stream_metrics`` row."""
        row = asdict(self)
        row.update(
            duration_ms=self.duration_ms,
            rows_per_second=self.rows_per_second,
            freshness_ms=self.freshness_ms,
        )
        return row

    def as_json(self) -> str:
        """The log line: one JSON object."""
        row = self.as_row()
        return json.dumps(
            {
                "event": "speed_micro_batch",
                **{k: row[k] for k in STREAM_METRICS_SCHEMA.fieldNames()},
            },
            default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v),
        )


def kafka_lag(latest: dict[int, int], processed: dict[int, int]) -> int | None:
    """Messages behind: latest offset minus processed offset, summed over the partitions
    whose processed offset is known (None when none is)."""
    known = [max(0, latest[p] - processed[p]) for p in latest if p in processed]
    return sum(known) if known else None


def record_metrics(
    spark: SparkSession, metrics_path: str, metrics: MicroBatchMetrics, *, replay: bool
) -> None:
    """Log ``metrics`` as one JSON line and append it to ``stream_metrics``.

    Args:
        replay: the micro-batch may have run before: append only if its row is not there.
    """
    log.info(metrics.as_json())
    if replay:
        recorded = (
            spark.read.format("delta")
            .load(metrics_path)
            .where((F.col("stream") == metrics.stream) & (F.col("batch_id") == metrics.batch_id))
            .limit(1)
            .count()
        )
        if recorded:
            return
    row = spark.createDataFrame([metrics.as_row()], STREAM_METRICS_SCHEMA)
    with_conflict_retry(
        lambda: row.write.format("delta").mode("append").save(metrics_path),
        what="append stream metrics",
    )
