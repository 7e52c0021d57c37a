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
from sales_core.lakehouse import Lakehouse, ensure_speed_tables, table_version
from sales_core.object_store import delta_rs_table
from sales_core.runs import RunRecord, new_run_id, save_run, start_run, utcnow
from speed_layer.checkpoint import check_start
from speed_layer.compaction import StreamCompactor
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


# Kafka client failures that mean "the cluster cannot be reached right now" (a broker down or
# restarting, a partition leader moving), in the failed query's Java cause chain.
_KAFKA_UNREACHABLE = re.compile(
    r"org\.apache\.kafka\.common\.errors\.(TimeoutException|DisconnectException|NetworkException"
    r"|NotLeaderOrFollowerException|LeaderNotAvailableException|NotEnoughReplicas\w*Exception)"
    r"|Timed out waiting for a node assignment|Timeout of \d+ms expired"
)


def kafka_unreachable(error: BaseException) -> bool:
    """Whether a failed query failed because Kafka could not be reached (not bad data, not a
    lost offset: ``failOnDataLoss`` failures are never retried)."""
    text = str(error)
    trace = getattr(error, "getStackTrace", None)
    if callable(trace):
        text += str(trace() or "")
    return bool(_KAFKA_UNREACHABLE.search(text))


class KafkaOutage:
    """How long the job keeps starting its query again while Kafka cannot be reached.

    A failed query starts again from its checkpoint (the micro-batch it was in is replayed,
    exactly once), after 1, 2, 4 … 30 s, until ``window`` seconds have passed since the first
    failure with no micro-batch finished; an outage that outlasts the window fails the run.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._since: float | None = None
        self._attempts = 0
        self._batches = -1

    def retry_after(self, error: BaseException, batches_done: int) -> float | None:
        """Seconds to wait before starting the query again, or None: fail the run."""
        if self.window <= 0 or not kafka_unreachable(error):
            return None
        now = time.monotonic()
        if self._since is None or batches_done != self._batches:  # a new outage
            self._since, self._attempts, self._batches = now, 0, batches_done
        left = self.window - (now - self._since)
        if left <= 0:
            return None
        self._attempts += 1
        return min(2.0 ** (self._attempts - 1), 30.0, left)

    def failure(self, error: BaseException, bootstrap: str) -> PipelineError:
        """The run's error once the window has passed."""
        return PipelineError(
            f"Kafka at {bootstrap} could not be reached for {self.window:.0f}s "
            f"(speed.broker_outage_seconds): {one_line(error)}"
        )


class StopRequested(RuntimeError):
    """Raised by the sink to refuse a micro-batch that started after a stop was requested."""


class _QuietRefusals(logging.Filter):
    """Drops py4j's ERROR traceback for a refused micro-batch: the refusal is how a requested
    stop keeps a micro-batch that started too late from writing anything (it runs again at the
    next start), not an error. Any other exception of a micro-batch is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, StopRequested)


_QUIET_REFUSALS = _QuietRefusals()


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
            # py4j logs every exception of a Python callback with its traceback (idempotent)
            logging.getLogger("py4j.clientserver").addFilter(_QUIET_REFUSALS)
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
    start_run(spark, lakehouse.pipeline_runs, record)

    alerts_root, options = delta_rs_table(config.lakehouse.s3, config.lakehouse.root)
    alerts = StreamAlerts(
        config.alerts, SPEED_STREAM, lakehouse_root=alerts_root, storage_options=options
    )
    recorder = MetricsRecorder(
        spark,
        lakehouse.stream_metrics,
        background=True,
        observe=_alert_on(alerts),
        storage_options=options,
    )
    listener = ProgressListener(QUERY_NAME, recorder)
    compactor = StreamCompactor(
        spark,
        (lakehouse.speed_increments, lakehouse.master_dataset),
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
            storage_options=options,
            # available-now: the Delta source of the registrations ends about here.
            registered_through=(
                table_version(spark, lakehouse.master_dataset) if available_now else None
            ),
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
        outage = KafkaOutage(config.speed.broker_outage_seconds)
        try:
            while True:
                try:
                    stopped = _await(query, sink, stop, progress)
                    break
                except Exception as exc:
                    delay = outage.retry_after(exc, recorder.totals.batches)
                    if delay is None:
                        if outage.window > 0 and kafka_unreachable(exc):
                            raise outage.failure(exc, kafka_conf.bootstrap_servers) from exc
                        raise
                    progress(
                        f"Kafka cannot be reached ({one_line(exc)[:200]}); the query starts "
                        f"again from its checkpoint in {delay:.0f}s"
                    )
                if stop.wait(delay):
                    stopped = True
                    break
                query = writer.start()
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
