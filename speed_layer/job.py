"""The streaming job: check the checkpoint against the tables, run the query, stop cleanly.

``run_speed`` runs until the query ends (``available_now``: once everything in the topic
when it started is processed) or until ``stop`` is set (the CLI sets it on SIGTERM). A stop
waits for the running micro-batch to finish, then stops the query; should Spark start the
next micro-batch in between, the sink refuses it before writing anything, so it is simply
planned again on the next start. Either way nothing is half-written, and the exit is clean.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from sales_core.alerts import JOB_FAILED, StreamAlerts, notify
from sales_core.config import Config
from sales_core.errors import PipelineError, one_line
from sales_core.handoff import SPEED_STREAM
from sales_core.lakehouse import Lakehouse, ensure_speed_tables
from sales_core.runs import RunRecord, mark_interrupted, new_run_id, save_run, utcnow
from speed_layer.checkpoint import check_start
from speed_layer.compaction import IncrementsCompactor
from speed_layer.dedup import SPEED_SETTINGS, speed_stream
from speed_layer.kafka_client import ensure_topic
from speed_layer.metrics import MetricsRecorder, MicroBatchMetrics, ProgressListener, StreamTotals
from speed_layer.recovery import records_read, recover_metrics, registered_epoch
from speed_layer.sink import SinkSettings, SpeedSink

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

QUERY_NAME = "lambda-sales-speed"
POLL_SECONDS = 1
# How long a stop waits for the running micro-batch before interrupting it anyway.
STOP_GRACE_SECONDS = 600.0
_TRIGGER = re.compile(
    r"^\s*\d+\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)\s*$", re.IGNORECASE
)


class StopRequested(RuntimeError):
    """Raised by the sink to refuse a micro-batch that started after a stop was requested."""


@dataclass(frozen=True)
class SpeedRun:
    """How a run of the streaming job ended."""

    run_id: str
    status: str  # succeeded (available-now finished) | stopped (SIGTERM / stop requested)
    started_at: datetime
    ended_at: datetime
    totals: StreamTotals

    def summary(self) -> str:
        """One line for the terminal."""
        t = self.totals
        seconds = (self.ended_at - self.started_at).total_seconds()
        return (
            f"speed run {self.run_id} {self.status}: {t.batches} micro-batch(es), read {t.input_rows}, "
            f"new events {t.valid}, duplicates {t.duplicates}, quarantined {t.quarantined} ({seconds:.1f}s)"
        )


def check_trigger(interval: str) -> str:
    """``interval`` if Spark's processing-time trigger accepts it (``"1 second"``, ``"500 ms"``).

    Raises:
        ValueError: a one-line reason, before Spark starts.
    """
    if not _TRIGGER.match(interval):
        raise ValueError(
            f'invalid trigger interval \'{interval}\': use a number and a unit, e.g. "1 second" or "500 milliseconds"'
        )
    return interval.strip()


def stop_on_sigterm() -> threading.Event:
    """An event that SIGTERM sets (instead of killing the process): the job then stops cleanly."""
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        log.warning("SIGTERM: stopping after the running micro-batch")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    return stop


class _GatedSink(SpeedSink):
    """The sink, refusing micro-batches that start after a stop was requested."""

    def __init__(
        self, settings: SinkSettings, stop: threading.Event, metrics: MetricsRecorder
    ) -> None:
        super().__init__(settings, metrics=metrics)
        self._stop = stop
        self.refused: int | None = None

    def write_micro_batch(self, batch_df: DataFrame, batch_id: int) -> None:
        if self._stop.is_set():
            self.refused = batch_id
            raise StopRequested(f"micro-batch {batch_id} refused: the job is stopping")
        super().write_micro_batch(batch_df, batch_id)


def _alert_on(alerts: StreamAlerts) -> Callable[[MicroBatchMetrics], None]:
    def observe(metrics: MicroBatchMetrics) -> None:
        alerts.observe(metrics.batch_id, metrics.kafka_lag, metrics.freshness_ms)

    return observe


def _stop_between_micro_batches(query: StreamingQuery, progress: Progress) -> None:
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    waited = False
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        if not waited:
            progress("stop requested: finishing the running micro-batch")
            waited = True
        time.sleep(0.1)
    query.stop()


def _await(
    query: StreamingQuery, sink: _GatedSink, stop: threading.Event, progress: Progress
) -> bool:
    """Wait for the query to end; True when it ended because a stop was requested."""
    try:
        while not query.awaitTermination(POLL_SECONDS):
            if stop.is_set():
                _stop_between_micro_batches(query, progress)
                break
    except StreamingQueryException:
        if sink.refused is None:
            raise
    if query.exception() is not None and sink.refused is None:
        raise PipelineError(f"the streaming query failed: {one_line(query.exception())}")  # type: ignore[arg-type]
    return stop.is_set()


def run_speed(
    spark: SparkSession,
    config: Config,
    *,
    available_now: bool = False,
    trigger: str | None = None,
    stop: threading.Event | None = None,
    progress: Progress = log.info,
) -> SpeedRun:
    """Run the streaming job until the topic is drained (``available_now``) or ``stop`` is set.

    Raises:
        CheckpointMismatchError: the checkpoint and the tables disagree (nothing started).
        SourceError: Kafka cannot be reached.
        PipelineError: the streaming query failed (the run is recorded as failed).
    """
    lakehouse = Lakehouse(config.lakehouse.root)
    kafka_conf = config.sources.kafka
    interval = check_trigger(trigger or config.speed.trigger_interval)
    stop = stop or threading.Event()

    checkpoint = check_start(spark, lakehouse, stream=SPEED_STREAM, topic=kafka_conf.topic)
    recovered = recover_metrics(spark, lakehouse, checkpoint, stream=SPEED_STREAM)
    if recovered:
        progress(f"rebuilt the metrics of micro-batch(es) {recovered} (lost in a crash)")
    progress(
        f"checkpoint agrees with the tables (last committed micro-batch {checkpoint.last_committed})"
        if checkpoint.exists
        else "new checkpoint: reading the topic from its starting offsets"
    )
    ensure_topic(kafka_conf, kafka_conf.dlq_topic, partitions=1)
    ensure_speed_tables(spark, lakehouse)
    record = RunRecord(new_run_id("speed"), "speed", utcnow())
    save_run(spark, lakehouse.pipeline_runs, record)
    mark_interrupted(spark, lakehouse.pipeline_runs, "speed", except_run=record.run_id)

    alerts = StreamAlerts(config.alerts, SPEED_STREAM)
    recorder = MetricsRecorder(
        spark, lakehouse.stream_metrics, background=True, observe=_alert_on(alerts)
    )
    listener = ProgressListener(QUERY_NAME, recorder)
    compactor = IncrementsCompactor(
        spark,
        lakehouse.speed_increments,
        0 if available_now else config.speed.compact_interval_seconds,
    )
    sink = _GatedSink(
        SinkSettings(
            lakehouse,
            kafka_conf,
            stream=SPEED_STREAM,
            conflict_retries=config.batch.max_conflict_retries,
            replayable_up_to=-1 if checkpoint.last_planned is None else checkpoint.last_planned,
            registered_epoch=registered_epoch(spark, lakehouse, checkpoint),
        ),
        stop,
        recorder,
    )
    saved = {key: spark.conf.get(key, None) for key in SPEED_SETTINGS}
    for key, value in SPEED_SETTINGS.items():
        spark.conf.set(key, value)
    spark.streams.addListener(listener)
    writer = (
        speed_stream(spark, kafka_conf, lakehouse.master_dataset)
        .writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", lakehouse.speed_checkpoint)
        .foreachBatch(sink.write_micro_batch)
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=interval)
    )
    progress(
        f"streaming {kafka_conf.topic} at {kafka_conf.bootstrap_servers} "
        + (
            "until it is drained (available-now)"
            if available_now
            else f"every {interval}; SIGTERM stops cleanly"
        )
    )
    try:
        query = writer.start()
        compactor.start()
        try:
            stopped = _await(query, sink, stop, progress)
        finally:
            if query.isActive:
                query.stop()
    except Exception as exc:
        _finish_metrics(spark, recorder, listener, lakehouse.speed_checkpoint)
        record.status, record.ended_at = "failed", utcnow()
        record.error = one_line(exc)
        _record_totals(record, recorder.totals)
        save_run(spark, lakehouse.pipeline_runs, record)
        notify(
            config,
            JOB_FAILED,
            f"speed run {record.run_id} failed: {record.error}",
            {"run_id": record.run_id, "job": "speed", "error": record.error},
        )
        if isinstance(exc, PipelineError):
            raise
        raise PipelineError(f"the streaming query failed: {record.error}") from exc
    finally:
        compactor.close()
        _finish_metrics(spark, recorder, listener, lakehouse.speed_checkpoint)
        alerts.close()
        for key, previous in saved.items():  # the session may run other jobs after this one
            if previous is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, previous)

    record.status, record.ended_at = ("stopped" if stopped else "succeeded"), utcnow()
    _record_totals(record, recorder.totals)
    save_run(spark, lakehouse.pipeline_runs, record)
    return SpeedRun(
        record.run_id, record.status, record.started_at, record.ended_at, recorder.totals
    )


# How long the end of a run waits for Spark's last progress reports (they come from its
# listener bus, a moment after the query ends); the checkpoint says the rest.
PROGRESS_GRACE_SECONDS = 3.0


def _finish_metrics(
    spark: SparkSession, recorder: MetricsRecorder, listener: ProgressListener, checkpoint: str
) -> None:
    """Finish and write every micro-batch's metrics, then stop listening (idempotent)."""
    deadline = time.monotonic() + PROGRESS_GRACE_SECONDS
    while recorder.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    recorder.finish_all(lambda batch_id: records_read(spark, checkpoint, batch_id))
    recorder.close()
    spark.streams.removeListener(listener)


def _record_totals(record: RunRecord, totals: StreamTotals) -> None:
    record.records_read, record.valid = totals.input_rows, totals.valid
    record.duplicates, record.quarantined = totals.duplicates, totals.quarantined
    record.details = {"micro_batches": totals.batches}
