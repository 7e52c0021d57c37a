"""The ``foreachBatch`` sink: one micro-batch of Kafka records into every speed-layer table.

For micro-batch ``N`` (Spark calls the sink at least once per micro-batch; after a crash it
calls it again with the same records and the same ``N``):

1. validate with the shared rules, judged against the micro-batch's own timestamp;
2. append the rejects to the quarantine and publish them to the dead-letter topic. The
   dead-letter topic is **at least once**: a replayed micro-batch publishes its rejects
   again; consumers de-duplicate by the ``source_topic``/``source_partition``/
   ``source_offset`` headers;
3. insert the new events into the master dataset, tagged ``ingest_batch = N`` (an insert-only
   MERGE on ``event_id``: a replay, or an event the batch layer brought first, inserts
   nothing; Delta conflicts with a concurrent batch run are retried);
4. compute the shared views over exactly the master rows tagged ``N`` and append them to the
   speed increments, tagged ``batch_id = N``. Because they are derived from the master
   dataset, a crash between 3 and 4 loses nothing: the replay derives the same increments;
5. record the metrics (one JSON log line, one ``stream_metrics`` row).

Idempotence is keyed on the micro-batch id. Each append is one Delta commit, so a table holds
all of micro-batch ``N``'s rows or none. A micro-batch that may have run before (a *replay*:
an id the checkpoint had already planned when the query started, see
:attr:`SinkSettings.replayable_up_to`) appends only what is not there yet: quarantine rows
whose Kafka position is absent, increments and metrics whose ``(stream, batch_id)`` is
absent. First attempts append blindly. (Delta's ``txnAppId``/``txnVersion`` would do the
same, but it looks the version up in the table's full state: three Spark jobs per table per
micro-batch, most of a micro-batch's time on a small cluster.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pyspark import StorageLevel, inheritable_thread_target
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_core.config import KafkaSourceConf
from sales_core.faults import fault_point
from sales_core.handoff import SPEED_LAYER, SPEED_STREAM
from sales_core.lakehouse import Lakehouse, ensure_speed_tables
from sales_core.master import insert_new_events, with_conflict_retry, with_ingest_metadata
from sales_core.rules import dedupe_events, quarantine_records, valid_events, validate
from sales_core.runs import utcnow
from sales_core.views import VIEWS, ViewDef, compute_view
from speed_layer.checkpoint import batch_end_offsets
from speed_layer.kafka_client import MAX_REQUEST_BYTES, LatestOffsets
from speed_layer.metrics import MicroBatchMetrics, kafka_lag, record_metrics
from speed_layer.source import (
    BATCH_TIME,
    KAFKA_COLUMNS,
    kafka_envelopes,
    spark_kafka_options,
    storable_text,
)

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_POSITION = ["source_name", "source_partition", "source_offset"]
# Columns of the master dataset the views need.
_VIEW_INPUTS = sorted(
    {c for v in VIEWS.values() for c in v.key_names} | {"amount", "quantity", "event_time"}
)

LatestOffsetsFn = Callable[[str, Iterable[int]], dict[int, int]]


@dataclass(frozen=True)
class SinkSettings:
    """What the sink writes where.

    Attributes:
        lakehouse: table locations.
        kafka: the source topic, the dead-letter topic and how to reach them.
        stream: the stream's name: ``ingest_run`` of its master rows, key of the hand-off mark.
        checkpoint: the query's checkpoint (read for the exact per-partition end offsets of a
            micro-batch, for the lag metric); None for a sink called outside a query.
        conflict_retries: retries of a master insert that conflicts with the batch layer.
        replayable_up_to: micro-batch ids up to this one may have run before (the last id the
            checkpoint had planned when the query started; -1 for a new checkpoint). Spark
            runs every later id for the first time. None: any id may be a replay.
    """

    lakehouse: Lakehouse
    kafka: KafkaSourceConf
    stream: str = SPEED_STREAM
    checkpoint: str | None = None
    conflict_retries: int = 10
    replayable_up_to: int | None = None


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


@dataclass(frozen=True)
class _Received:
    """A first look at a micro-batch's Kafka records (one small aggregation)."""

    rows: int
    batch_time: datetime | None
    newest_message_at: datetime | None
    next_offsets: dict[int, int]  # partition -> last offset read + 1


def _from_micros(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + timedelta(microseconds=int(micros))


def _look_at(received: DataFrame) -> _Received:
    rows = (
        received.groupBy("partition")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.max("offset").alias("last_offset"),
            F.max(F.unix_micros("timestamp")).alias("newest_us"),
            F.max(F.unix_micros(BATCH_TIME)).alias("batch_us"),
        )
        .collect()
    )
    return _Received(
        rows=sum(int(r["rows"]) for r in rows),
        batch_time=_from_micros(
            max((r["batch_us"] for r in rows if r["batch_us"] is not None), default=None)
        ),
        newest_message_at=_from_micros(
            max((r["newest_us"] for r in rows if r["newest_us"] is not None), default=None)
        ),
        next_offsets={int(r["partition"]): int(r["last_offset"]) + 1 for r in rows},
    )


def publish_dead_letters(rejected: DataFrame, conf: KafkaSourceConf) -> None:
    """Publish rejected records to ``conf.dlq_topic`` with Spark's Kafka writer.

    Key and value are the original bytes; headers ``reason``, ``source_topic``,
    ``source_partition`` and ``source_offset`` say why and where from. At least once.
    """

    def header(name: str, value: Column) -> Column:
        return F.struct(
            F.lit(name).alias("key"), value.cast("string").cast("binary").alias("value")
        )

    (
        rejected.select(
            F.col("source_key").cast("binary").alias("key"),
            F.col("raw_record").cast("binary").alias("value"),
            F.array(
                header("reason", F.col("reject_reason")),
                header("source_topic", F.col("source_name")),
                header("source_partition", F.col("source_partition")),
                header("source_offset", F.col("source_offset")),
            ).alias("headers"),
        )
        .write.format("kafka")
        .options(**spark_kafka_options(conf))
        .option("topic", conf.dlq_topic)
        .option("kafka.acks", "all")
        .option("kafka.max.request.size", str(MAX_REQUEST_BYTES))
        .save()
    )


class SpeedSink:
    """The speed layer's ``foreachBatch`` sink: pass :meth:`write_micro_batch` to Spark.

    Holds no SparkSession (each micro-batch brings its own) and no state a replay depends
    on: what it keeps (totals, last known partition offsets, a Kafka client for the lag, the
    ids it was called with, so that a second call with one counts as a replay) feeds the
    metrics or makes it more careful, never less.
    """

    def __init__(
        self, settings: SinkSettings, *, latest_offsets: LatestOffsetsFn | None = None
    ) -> None:
        self.settings = settings
        self.totals = StreamTotals()
        self.last_metrics: MicroBatchMetrics | None = None
        self._latest_offsets: LatestOffsetsFn = latest_offsets or LatestOffsets(settings.kafka)
        self._positions: dict[int, int] = {}
        self._tables_ready = False
        self._attempted: set[int] = set()

    def _may_be_replay(self, batch_id: int) -> bool:
        limit = self.settings.replayable_up_to
        return limit is None or batch_id <= limit or batch_id in self._attempted

    def close(self) -> None:
        """Release the Kafka client used for the lag metric."""
        close = getattr(self._latest_offsets, "close", None)
        if callable(close):
            close()

    def write_micro_batch(self, batch_df: DataFrame, batch_id: int) -> None:
        """Write micro-batch ``batch_id`` (Kafka records plus ``batch_time``) idempotently."""
        spark = batch_df.sparkSession
        settings = self.settings
        started_at = utcnow()
        replay = self._may_be_replay(batch_id)
        self._attempted.add(batch_id)
        if not self._tables_ready:
            ensure_speed_tables(spark, settings.lakehouse)
            self._tables_ready = True

        received_df = batch_df.select(*KAFKA_COLUMNS, BATCH_TIME).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        try:
            received = _look_at(received_df)
            batch_time = received.batch_time or started_at
            by_reason = self._write_records(spark, received_df, batch_id, batch_time, replay=replay)
        finally:
            received_df.unpersist()

        valid = (
            self._write_increments(spark, batch_id, replay=replay) if by_reason.get(None, 0) else 0
        )
        fault_point("speed.after_increments")

        rejected = {str(reason): n for reason, n in by_reason.items() if reason is not None}
        quarantined = sum(rejected.values())
        metrics = MicroBatchMetrics(
            stream=settings.stream,
            batch_id=batch_id,
            batch_time=received.batch_time,
            started_at=started_at,
            ended_at=utcnow(),
            input_rows=received.rows,
            valid=valid,
            duplicates=received.rows - quarantined - valid,
            quarantined=quarantined,
            kafka_lag=self._lag(spark, batch_id, received.next_offsets),
            newest_message_at=received.newest_message_at,
            rejected_by_reason=rejected,
        )
        record_metrics(spark, settings.lakehouse.stream_metrics, metrics, replay=replay)
        fault_point("speed.after_metrics")  # every write done; Spark has not committed yet
        self.totals.add(metrics)
        self.last_metrics = metrics

    def _write_records(
        self,
        spark: SparkSession,
        received: DataFrame,
        batch_id: int,
        batch_time: datetime,
        *,
        replay: bool,
    ) -> dict[str | None, int]:
        """Quarantine, dead-letter topic and master dataset; returns records per reject reason
        (``None``: valid, duplicates included)."""
        settings = self.settings
        validated = (
            received.transform(kafka_envelopes)
            .transform(validate(now=batch_time))
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            by_reason: dict[str | None, int] = {
                r["reject_reason"]: int(r["records"])
                for r in validated.groupBy("reject_reason")
                .agg(F.count(F.lit(1)).alias("records"))
                .collect()
            }
            if any(reason is not None for reason in by_reason):
                quarantine_rows = validated.transform(quarantine_records(batch_time)).withColumns(
                    {
                        "source_key": storable_text(F.col("source_key")),
                        "raw_record": storable_text(F.col("raw_record")),
                        "ingest_layer": F.lit(SPEED_LAYER),
                        "ingest_run": F.lit(settings.stream),
                    }
                )
                if replay:
                    quarantine_rows = quarantine_rows.join(
                        self._quarantined_positions(spark), on=_POSITION, how="left_anti"
                    )
                with_conflict_retry(
                    lambda: (
                        quarantine_rows.write.format("delta")
                        .mode("append")
                        .save(settings.lakehouse.quarantine)
                    ),
                    what="append to quarantine",
                )
            fault_point("speed.after_quarantine")
            if any(reason is not None for reason in by_reason):
                publish_dead_letters(
                    validated.where(F.col("reject_reason").isNotNull()), settings.kafka
                )

            if by_reason.get(None, 0):
                new_events = (
                    valid_events(validated)
                    .transform(dedupe_events())
                    .drop("copies")
                    .withColumn("source_key", storable_text(F.col("source_key")))
                    .transform(
                        with_ingest_metadata(
                            layer=SPEED_LAYER,
                            run=settings.stream,
                            batch=batch_id,
                            ingested_at=batch_time,
                        )
                    )
                )
                insert_new_events(
                    spark,
                    settings.lakehouse.master_dataset,
                    new_events,
                    retries=settings.conflict_retries,
                )
            fault_point("speed.after_master_insert")
        finally:
            validated.unpersist()
        return by_reason

    def _quarantined_positions(self, spark: SparkSession) -> DataFrame:
        """Kafka positions this stream already quarantined (for a replay)."""
        return (
            spark.read.format("delta")
            .load(self.settings.lakehouse.quarantine)
            .where(
                (F.col("ingest_layer") == SPEED_LAYER)
                & (F.col("ingest_run") == self.settings.stream)
                & (F.col("source_name") == self.settings.kafka.topic)
            )
            .select(*_POSITION)
        )

    def _write_increments(self, spark: SparkSession, batch_id: int, *, replay: bool) -> int:
        """Append the views over the master rows this micro-batch inserted; returns their count."""
        settings = self.settings
        tagged = (
            spark.read.format("delta")
            .load(settings.lakehouse.master_dataset)
            .where(
                (F.col("ingest_layer") == SPEED_LAYER)
                & (F.col("ingest_run") == settings.stream)
                & (F.col("ingest_batch") == batch_id)
            )
            .select(*_VIEW_INPUTS)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            inserted = tagged.count()
            if inserted:

                def append(number: int, name: str, view: ViewDef) -> None:
                    increment = (
                        tagged.transform(compute_view(view))
                        .select(
                            F.lit(settings.stream).alias("stream"),
                            F.lit(batch_id).cast("long").alias("batch_id"),
                            *view.columns,
                        )
                        .coalesce(1)  # one micro-batch's aggregates: one small file per view
                    )
                    self._append_increment(
                        spark,
                        increment,
                        settings.lakehouse.speed_increments(name),
                        batch_id,
                        replay=replay,
                    )
                    fault_point(f"speed.after_increment_{number}")

                # The four tables are independent and each append is idempotent on its own, so
                # they run side by side: most of an append is Delta log and job latency, not
                # CPU, and one after another they were a quarter of a small micro-batch. The
                # threads carry this one's Spark local properties (the query's job group and
                # SQL execution), as the appends would in the micro-batch's own thread.
                in_query = inheritable_thread_target(spark)(append)
                with ThreadPoolExecutor(
                    max_workers=len(VIEWS), thread_name_prefix="speed-increment"
                ) as pool:
                    appends = [
                        pool.submit(in_query, number, name, view)
                        for number, (name, view) in enumerate(VIEWS.items(), start=1)
                    ]
                    for done in appends:
                        done.result()  # the first failure, after every append has ended
        finally:
            tagged.unpersist()
        return inserted

    def _append_increment(
        self, spark: SparkSession, increment: DataFrame, path: str, batch_id: int, *, replay: bool
    ) -> None:
        if replay:
            written = (
                spark.read.format("delta")
                .load(path)
                .where((F.col("stream") == self.settings.stream) & (F.col("batch_id") == batch_id))
                .limit(1)
                .count()
            )
            if written:
                return
        with_conflict_retry(
            lambda: increment.write.format("delta").mode("append").save(path),
            what=f"append speed increments to {path.rsplit('/', 1)[-1]}",
        )

    def _lag(self, spark: SparkSession, batch_id: int, next_offsets: dict[int, int]) -> int | None:
        """Kafka lag after this micro-batch; None when the brokers do not answer (best effort)."""
        checkpoint = self.settings.checkpoint
        exact = batch_end_offsets(spark, checkpoint, batch_id) if checkpoint else None
        self._positions = exact if exact is not None else {**self._positions, **next_offsets}
        try:
            latest = self._latest_offsets(self.settings.kafka.topic, self._positions)
        except Exception as exc:  # a metric must never fail the micro-batch
            log.warning("could not read the latest Kafka offsets for the lag metric: %s", exc)
            return None
        return kafka_lag(latest, self._positions)
