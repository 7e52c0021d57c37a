"""Per micro-batch metrics: one JSON log line and one row of the ``stream_metrics`` table,
written off the hot path.

The sink knows where each record ended (new, quarantined) and the freshest message; Spark's
progress report, which comes after its checkpoint commit, knows how many records the query
read (duplicates the state dropped included) and the Kafka lag. :class:`MetricsRecorder`
joins the two (:class:`ProgressListener` feeds it Spark's side) and a background thread
appends the finished rows to ``stream_metrics`` in batches: no Delta commit on the hot path.

A crash can lose rows not yet written; they are rebuilt at the next start from the checkpoint
and the tables (:func:`speed_layer.recovery.recover_metrics`), so ``stream_metrics`` still
ends with one row per committed micro-batch. A row is never appended twice.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.streaming import StreamingQueryListener

from sales_core.faults import fault_point
from sales_core.lakehouse import STREAM_METRICS_SCHEMA
from sales_core.local_rows import local_frame
from sales_core.master import with_conflict_retry
from speed_layer.deltalog import DriverAppends, DriverAppendUnusable

log = logging.getLogger(__name__)

# How often the background writer appends the finished rows (seconds). Each append is a Delta
# commit (written by delta-rs in the process for a local table, by a Spark job that competes
# with the micro-batches for the same cores otherwise); readers that need the newest
# micro-batch at once (``/health``) read the increments commit instead.
FLUSH_SECONDS = 15.0
_METRICS_ARROW = to_arrow_schema(STREAM_METRICS_SCHEMA, timezone="UTC")


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


@dataclass
class StreamTotals:
    """Sums over the micro-batches a sink processed (replays included)."""

    batches: int = 0
    input_rows: int = 0
    valid: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def add(self, metrics: MicroBatchMetrics) -> None:
        self.batches += 1
        self.input_rows += metrics.input_rows
        self.valid += metrics.valid
        self.duplicates += metrics.duplicates
        self.quarantined += metrics.quarantined


def _keys(spark: SparkSession, metrics_path: str, where: Column) -> set[tuple[str, int]]:
    """The ``(stream, batch_id)`` of the ``stream_metrics`` rows that ``where`` selects."""
    return {
        (r["stream"], int(r["batch_id"]))
        for r in spark.read.format("delta")
        .load(metrics_path)
        .where(where)
        .select("stream", "batch_id")
        .collect()
    }


def append_metrics(
    spark: SparkSession,
    metrics_path: str,
    rows: list[MicroBatchMetrics],
    *,
    present: set[tuple[str, int]] | None = None,
    driver: DriverAppends | None = None,
) -> list[MicroBatchMetrics]:
    """Append ``rows`` to ``stream_metrics``, except those whose ``(stream, batch_id)`` is
    there; returns the rows appended. ``present``: the keys known to be there, when the caller
    knows every one (a writer that read the table once and remembers what it wrote since);
    None reads them from the table. ``driver``: append with delta-rs from this process when
    the table is local and delta-rs can write it (no Spark job), else with Spark."""
    if not rows:
        return []
    if present is None:
        present = _keys(spark, metrics_path, F.col("batch_id").isin([m.batch_id for m in rows]))
    new = [m for m in rows if (m.stream, m.batch_id) not in present]
    if not new:
        return []
    as_rows = [m.as_row() for m in new]
    if driver is not None and driver.handles(metrics_path):
        table = pa.Table.from_pylist(as_rows, schema=_METRICS_ARROW)
        first, last = min(m.batch_id for m in new), max(m.batch_id for m in new)
        try:
            driver.append(metrics_path, table, user_metadata=f"stream-metrics:{first}-{last}")
            return new
        except DriverAppendUnusable as exc:
            log.info("delta-rs cannot write stream_metrics (%s): Spark writes it", exc)
    frame = local_frame(spark, as_rows, STREAM_METRICS_SCHEMA)
    with_conflict_retry(
        lambda: frame.write.format("delta").mode("append").save(metrics_path),
        what="append stream metrics",
    )
    return new


Observer = Callable[[MicroBatchMetrics], None]


class MetricsRecorder:
    """Joins the sink's and Spark's halves of each micro-batch's metrics and writes the rows.

    ``background=True`` (the streaming job): a thread appends finished rows every
    :data:`FLUSH_SECONDS`; otherwise :meth:`flush` writes them when called.
    """

    def __init__(
        self,
        spark: SparkSession,
        metrics_path: str,
        *,
        background: bool,
        observe: Observer | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        """``storage_options``: delta-rs's, when the table is on S3 (its appends then go
        from this process too)."""
        self._spark = spark
        self._path = metrics_path
        self._observe = observe
        self._lock = threading.Condition()
        self._partial: dict[int, MicroBatchMetrics] = {}  # sink done, Spark not yet reported
        self._done: list[MicroBatchMetrics] = []  # finished, not yet written
        self.totals = StreamTotals()
        self.last: MicroBatchMetrics | None = None
        self._closed = False
        self._driver = DriverAppends(storage_options)
        # What the table holds of the micro-batches this recorder saw: None until the first
        # append read it (rows a previous process wrote before a crash), then kept up to date
        # here, so a replay is never written twice and no later append reads the table.
        self._written: set[tuple[str, int]] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._run, name="speed-metrics-writer", daemon=True
            )
            self._thread.start()

    def sink_done(self, metrics: MicroBatchMetrics) -> None:
        """The sink's half (``input_rows`` counts only the records the state kept)."""
        with self._lock:
            self._partial[metrics.batch_id] = metrics

    def spark_done(self, batch_id: int, input_rows: int, lag: int | None) -> None:
        """Spark's half, after its checkpoint commit: records read and the Kafka lag."""
        with self._lock:
            partial = self._partial.pop(batch_id, None)
            if partial is None:  # a progress report of a trigger the sink did not write
                return
            self._finish(replace(partial, input_rows=input_rows, kafka_lag=lag))

    def pending(self) -> bool:
        """Whether a micro-batch the sink wrote still waits for Spark's report."""
        with self._lock:
            return bool(self._partial)

    def finish_all(self, input_rows: Callable[[int], int | None]) -> None:
        """Finish micro-batches Spark has not reported, with ``input_rows(batch_id)`` (or the
        sink's own count when that is None)."""
        with self._lock:
            for batch_id in sorted(self._partial):
                partial = self._partial.pop(batch_id)
                read = input_rows(batch_id)
                self._finish(partial if read is None else replace(partial, input_rows=read))

    def _finish(self, partial: MicroBatchMetrics) -> None:
        metrics = replace(
            partial, duplicates=partial.input_rows - partial.valid - partial.quarantined
        )
        log.info(metrics.as_json())
        self._done.append(metrics)
        self.totals.add(metrics)
        self.last = metrics
        if self._observe is not None:
            try:
                self._observe(metrics)
            except Exception as exc:  # an alert must never fail the stream
                log.warning("metrics observer failed: %s", exc)
        self._lock.notify_all()

    def flush(self) -> None:
        """Append the finished rows now."""
        with self._lock:
            rows, self._done = self._done, []
        try:
            if self._written is None and rows:
                # This process runs no micro-batch below the first one it ran (ids only grow;
                # its replays come first): rows of older ones cannot collide with its own.
                first = min(m.batch_id for m in rows)
                self._written = _keys(self._spark, self._path, F.col("batch_id") >= first)
            written = append_metrics(
                self._spark, self._path, rows, present=self._written, driver=self._driver
            )
            if self._written is not None:
                self._written.update((m.stream, m.batch_id) for m in written)
        except Exception:
            with self._lock:
                self._done[:0] = rows  # written next time (append_metrics never doubles)
            raise
        if rows:
            fault_point("speed.after_metrics")

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closed or bool(self._done))
                if self._closed:
                    return
            try:
                self.flush()
            except Exception as exc:  # retried at the next round
                log.warning("could not write stream metrics yet: %s", exc)
            with self._lock:
                self._lock.wait_for(lambda: self._closed, timeout=FLUSH_SECONDS)

    def close(self) -> None:
        """Stop the background writer and write what is left (idempotent)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()


def progress_offsets(text: str | None) -> dict[int, int]:
    """Partition -> offset of the one topic in a progress report's offset JSON."""
    try:
        topics = json.loads(text) if text else None
    except ValueError:  # Spark reports no offset as a non-JSON text
        return {}
    if not isinstance(topics, dict) or len(topics) != 1:
        return {}
    partitions = next(iter(topics.values()))
    if not isinstance(partitions, dict):
        return {}
    return {int(p): int(o) for p, o in partitions.items()}


class ProgressListener(StreamingQueryListener):
    """Hands each progress report of the speed query to the recorder (records read, lag)."""

    def __init__(self, query_name: str, recorder: MetricsRecorder) -> None:
        self._name = query_name
        self._recorder = recorder

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        progress = event.progress
        if progress.name != self._name:
            return
        fault_point("speed.after_checkpoint_commit")
        kafka = [s for s in progress.sources if s.description.startswith("Kafka")]
        if not kafka:
            return
        source = kafka[0]
        lag = kafka_lag(progress_offsets(source.latestOffset), progress_offsets(source.endOffset))
        self._recorder.spark_done(progress.batchId, int(source.numInputRows), lag)

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass
