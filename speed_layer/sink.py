"""The ``foreachBatch`` sink: one de-duplicated micro-batch into every speed-layer table.

The sink receives what :func:`speed_layer.dedup.speed_stream` kept of micro-batch ``N``: Kafka
records validated and keyed (the state dropped ids seen before) and the batch layer's new
registrations. Spark calls it at least once per micro-batch; after a crash it calls it again
with the same records, the same state and the same ``N``. It then:

1. caches the rows and counts them per reject reason in one job (the only read of Kafka); in
   the steady state that job also brings every record to the driver as Arrow, shaped as a
   master row (a micro-batch of a live stream is thousands of rows);
2. appends the rejects to the quarantine and publishes them to the dead-letter topic, only when
   there are rejects. The dead-letter topic is **at least once**: consumers de-duplicate by the
   ``source_topic``/``source_partition``/``source_offset`` headers;
3. appends the new events to the master dataset, tagged ``ingest_batch = N``: the valid
   records less the ids of batch rows newer than the last registered epoch, which the append
   reads inside its own transaction (a batch insert committed after that read makes the append
   conflict, and it runs again);
4. appends the shared views over exactly those events to the speed increments (one table,
   one commit for the four views), tagged ``batch_id = N``: computed from the cached rows when
   the master append wrote them all (its commit says how many rows it wrote), else from the
   master rows tagged ``N``. In the steady state (every master commit since the stream last
   looked is its own) both appends read nothing and are written and committed from the
   driver, master first (:meth:`SpeedSink._append_direct`), where two Spark jobs writing a
   few thousand rows cost a second on two cores;
5. hands its half of the metrics to the :class:`~speed_layer.metrics.MetricsRecorder`.

Every append is idempotent on ``N``, and each is one Delta commit, so a table holds all of
micro-batch ``N``'s rows or none. The quarantine append uses Delta's ``txnAppId``/
``txnVersion``; the master and increments appends, on the hot path, check instead only when
the micro-batch may have run before (a *replay*: an id the checkpoint had already planned when
the query started), whether their rows tagged ``N`` are there: Delta's own check looks the
version up in the table's state, Spark jobs on every append. A replay after the master append
derives the increments from the master rows tagged ``N``, so a crash between any two commits
loses nothing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from sales_core.config import KafkaSourceConf
from sales_core.delta_log import Commit
from sales_core.faults import fault_point
from sales_core.handoff import BATCH_LAYER, SPEED_LAYER, SPEED_STREAM
from sales_core.lakehouse import (
    INCREMENT_TAG_FIELDS,
    INCREMENT_VIEW,
    INCREMENTS_SCHEMA,
    MASTER_SCHEMA,
    Lakehouse,
    ensure_speed_tables,
    increments_commit_metadata,
    table_version,
)
from sales_core.master import with_conflict_retry, with_ingest_metadata
from sales_core.rules import EVENT_COLUMNS, quarantine_records
from sales_core.runs import utcnow
from sales_core.views import VIEWS, compute_views_together, views_over_arrow
from speed_layer.dedup import DEDUP_KEY, EPOCH, MESSAGE_TIME, REGISTERED, kafka_events
from speed_layer.deltalog import (
    DriverAppends,
    DriverAppendUnusable,
    commits_from,
    prepare_append,
)
from speed_layer.kafka_client import MAX_REQUEST_BYTES
from speed_layer.metrics import MetricsRecorder, MicroBatchMetrics
from speed_layer.source import BATCH_TIME, spark_kafka_options, storable_text

log = logging.getLogger(__name__)

STREAM_COLUMN, BATCH_COLUMN = (f.name for f in INCREMENT_TAG_FIELDS)

_EPOCH_START = datetime(1970, 1, 1, tzinfo=timezone.utc)
_POSITION = ("source", "source_name", "source_partition", "source_offset", "source_key")
_MASTER_ARROW = to_arrow_schema(MASTER_SCHEMA, timezone="UTC")
_INCREMENTS_ARROW = to_arrow_schema(INCREMENTS_SCHEMA, timezone="UTC")
# Columns of the master dataset the views need.
_VIEW_INPUTS = sorted(
    {c for v in VIEWS.values() for c in v.key_names} | {"amount", "quantity", "event_time"}
)


@dataclass(frozen=True)
class SinkSettings:
    """What the sink writes where.

    Attributes:
        lakehouse: table locations.
        kafka: the source topic, the dead-letter topic and how to reach them.
        stream: the stream's name: ``ingest_run`` of its master rows, key of the hand-off mark,
            and the ``txnAppId`` of its appends.
        conflict_retries: retries of a master append that conflicts with the batch layer.
        replayable_up_to: micro-batch ids up to this one may have run before (the last id the
            checkpoint had planned when the query started; -1 for a new checkpoint). Spark
            runs every later id for the first time. None: any id may be a replay.
        registered_epoch: the newest batch epoch whose master rows the state holds ("" for
            none; None: the sink's input carries no registrations, so every batch row counts).
        storage_options: delta-rs's, for a lakehouse on S3 (the driver then reads the master
            log and appends as on a local disk); None: local tables only.
        registered_through: a query whose registrations stop at a master version (an
            available-now run: its Delta source ends where the master dataset was when it
            started): that version. A batch commit after it never reaches the state in this
            run, so once the sink has seen one it stays on its reading path. None: the
            registrations follow the master dataset (a continuous query).
    """

    lakehouse: Lakehouse
    kafka: KafkaSourceConf
    stream: str = SPEED_STREAM
    conflict_retries: int = 10
    replayable_up_to: int | None = None
    registered_epoch: str | None = None
    storage_options: dict[str, str] | None = None
    registered_through: int | None = None


@dataclass(frozen=True)
class _Summary:
    """One micro-batch at a glance (one small aggregation over the cached rows)."""

    kept: int  # Kafka records the state kept
    by_reason: dict[str | None, int]  # None: valid
    batch_time: datetime | None
    newest_message_at: datetime | None
    newest_epoch: str | None  # the newest batch epoch registered in this micro-batch


def _from_micros(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH_START + timedelta(microseconds=int(micros))


def _summarise(rows: DataFrame, registered: Observation) -> _Summary:
    """The micro-batch's Kafka records counted per reject reason (the read of the micro-batch:
    it fills the cache and the ``registered`` observation)."""
    groups = (
        rows.groupBy("reject_reason")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.max(F.unix_micros(MESSAGE_TIME)).alias("newest_us"),
            F.max(F.unix_micros(BATCH_TIME)).alias("batch_us"),
        )
        .collect()
    )
    return _Summary(
        kept=sum(int(g["rows"]) for g in groups),
        by_reason={g["reject_reason"]: int(g["rows"]) for g in groups},
        batch_time=_from_micros(max((g["batch_us"] or 0 for g in groups), default=None) or None),
        newest_message_at=_from_micros(
            max((g["newest_us"] for g in groups if g["newest_us"] is not None), default=None)
        ),
        newest_epoch=registered.get.get("epoch"),
    )


def _summary_of(records: pa.Table, registered: Observation) -> _Summary:
    """:func:`_summarise` of the micro-batch's records on the driver (see
    :meth:`SpeedSink.master_records`)."""
    counts = pc.value_counts(records.column("reject_reason")).to_pylist()
    return _Summary(
        kept=records.num_rows,
        by_reason={c["values"]: int(c["counts"]) for c in counts},
        batch_time=pc.max(records.column("ingested_at")).as_py(),
        newest_message_at=pc.max(records.column(MESSAGE_TIME)).as_py(),
        newest_epoch=registered.get.get("epoch"),
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


def view_increments(events: DataFrame, *, stream: str, batch_id: int) -> DataFrame:
    """Every view over ``events`` in the increments table's row shape, tagged ``(stream,
    batch_id)`` and with its view's name: one Spark job and one small file when written (a
    reader of one view filters its rows; the file is a micro-batch's aggregates).

    The four views are one aggregation over grouping sets, in one partition (a micro-batch is
    thousands of rows, cached): one stage of one task with no shuffle, where four aggregations
    over two partitions and their union were five stages and four times the plan.
    """
    together = events.coalesce(1).transform(
        compute_views_together(list(VIEWS.values()), view_column=INCREMENT_VIEW)
    )
    return together.select(
        F.lit(stream).alias(STREAM_COLUMN),
        F.lit(batch_id).cast("long").alias(BATCH_COLUMN),
        *(f.name for f in INCREMENTS_SCHEMA.fields if f not in INCREMENT_TAG_FIELDS),
    )


def increments_over_arrow(new_events: pa.Table, *, stream: str, batch_id: int) -> pa.Table:
    """The speed increments rows of micro-batch ``batch_id`` (every view, one table) over its
    new events already on the driver (master rows, in the master dataset's Arrow schema):
    :func:`~sales_core.views.views_over_arrow` tagged with the stream and micro-batch."""
    increments = views_over_arrow(
        new_events.select(_VIEW_INPUTS), list(VIEWS.values()), view_column=INCREMENT_VIEW
    )
    tags = {
        STREAM_COLUMN: pa.array([stream] * increments.num_rows, pa.string()),
        BATCH_COLUMN: pa.array([batch_id] * increments.num_rows, pa.int64()),
    }
    return pa.table(
        [tags[n] if n in tags else increments.column(n) for n in _INCREMENTS_ARROW.names],
        schema=_INCREMENTS_ARROW,
    )


def prepare_records(kafka_records: DataFrame) -> DataFrame:
    """Static Kafka records (with ``batch_time``) shaped as the streaming query hands them to
    the sink: validated, keyed, duplicates within them dropped (no state: a sink called
    outside a query, by tests and tools)."""
    return (
        kafka_records.transform(kafka_events)
        .dropDuplicates([DEDUP_KEY])
        .withColumns({REGISTERED: F.lit(None).cast("boolean"), EPOCH: F.lit(None).cast("string")})
    )


class SpeedSink:
    """The speed layer's ``foreachBatch`` sink: pass :meth:`write_micro_batch` to Spark.

    Holds no SparkSession (each micro-batch brings its own). What it keeps (the newest
    registered epoch, where it last read the master dataset's log, the ids it was called
    with) makes it cheaper or more careful, never less right.
    """

    def __init__(self, settings: SinkSettings, *, metrics: MetricsRecorder | None = None) -> None:
        """``metrics``: where the sink's half of each micro-batch's metrics goes (the job's
        recorder); without one, the sink writes each micro-batch's row itself."""
        self.settings = settings
        self._metrics = metrics
        self._epoch = settings.registered_epoch
        self._attempted: set[int] = set()
        self._log_version: int | None = None  # the master log version to read from next
        self._unregistered = False  # a batch commit the state will not see in this run
        self._driver = DriverAppends(settings.storage_options)
        self._tables_ready = False

    @property
    def app_id(self) -> str:
        """The ``txnAppId`` of every append of this stream."""
        return f"lambda-sales-speed-{self.settings.stream}"

    def _may_be_replay(self, batch_id: int) -> bool:
        limit = self.settings.replayable_up_to
        return limit is None or batch_id <= limit or batch_id in self._attempted

    def close(self) -> None:
        """Nothing to release (kept for callers that close what they open)."""

    def write_micro_batch(self, batch_df: DataFrame, batch_id: int) -> None:
        """Write micro-batch ``batch_id`` idempotently.

        ``batch_df`` is the streaming query's (see the module docstring), or static Kafka
        records with ``batch_time`` (a sink called outside a query): these are shaped like
        the query's rows first, and their metrics row is written before returning.
        """
        spark = batch_df.sparkSession
        started_at = utcnow()
        standalone = DEDUP_KEY not in batch_df.columns
        read = batch_df.count() if standalone else None
        if standalone:
            batch_df = batch_df.transform(prepare_records)
        replay = self._may_be_replay(batch_id)
        self._attempted.add(batch_id)
        if not self._tables_ready:
            ensure_speed_tables(spark, self.settings.lakehouse)
            self._tables_ready = True

        # Registrations (the batch layer's ids) only feed the state upstream and tell the
        # newest epoch registered, observed on the way: they are not cached (the first
        # micro-batch of a checkpoint registers every id of the master dataset).
        registered = Observation(f"speed-registrations-{uuid.uuid4().hex}")
        rows = (
            batch_df.observe(
                registered, F.max(F.when(F.col(REGISTERED), F.col(EPOCH))).alias("epoch")
            )
            .where(F.col(REGISTERED).isNull())
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            version = self._steady_version(replay)
            records = None
            if version is None:
                summary = _summarise(rows, registered)
            else:
                records, summary = self._collect(rows, registered)
            batch_time = summary.batch_time or started_at
            rejected = {str(r): n for r, n in summary.by_reason.items() if r is not None}
            if rejected:
                self._quarantine(rows, batch_id, batch_time)
            fault_point("speed.after_quarantine")
            if rejected:
                publish_dead_letters(
                    rows.where(F.col("reject_reason").isNotNull()), self.settings.kafka
                )
            valid = summary.by_reason.get(None, 0)
            if valid:
                if (
                    records is None
                    or version is None
                    or not self._append_direct(
                        spark,
                        records,
                        rows,
                        batch_id,
                        version=version,
                        newest_message_at=summary.newest_message_at,
                    )
                ):
                    valid = self._append_reading(
                        spark,
                        self._master_rows(rows, batch_id),
                        batch_id,
                        count=valid,
                        replay=replay,
                        newest_message_at=summary.newest_message_at,
                    )
            fault_point("speed.after_increments")
        finally:
            rows.unpersist()
        if summary.newest_epoch is not None and (
            self._epoch is None or summary.newest_epoch > self._epoch
        ):
            self._epoch = summary.newest_epoch

        metrics = MicroBatchMetrics(
            stream=self.settings.stream,
            batch_id=batch_id,
            batch_time=summary.batch_time,
            started_at=started_at,
            ended_at=utcnow(),
            input_rows=summary.kept if read is None else read,
            valid=valid,
            duplicates=0,
            quarantined=sum(rejected.values()),
            kafka_lag=None,
            newest_message_at=summary.newest_message_at,
            rejected_by_reason=rejected,
        )
        if self._metrics is None:  # called outside a query: metrics written right away
            self._metrics = MetricsRecorder(
                spark, self.settings.lakehouse.stream_metrics, background=False
            )
        self._metrics.sink_done(metrics)
        if standalone:
            self._metrics.finish_all(lambda _batch: None)
            self._metrics.flush()
        fault_point("speed.before_checkpoint_commit")

    def _quarantine(self, rows: DataFrame, batch_id: int, batch_time: datetime) -> None:
        settings = self.settings
        quarantine_rows = rows.transform(quarantine_records(batch_time)).withColumns(
            {
                "source_key": storable_text(F.col("source_key")),
                "raw_record": storable_text(F.col("raw_record")),
                "ingest_layer": F.lit(SPEED_LAYER),
                "ingest_run": F.lit(settings.stream),
            }
        )
        with_conflict_retry(
            lambda: (
                quarantine_rows.write.format("delta")
                .mode("append")
                .option("txnAppId", self.app_id)
                .option("txnVersion", batch_id)
                .save(settings.lakehouse.quarantine)
            ),
            what="append to quarantine",
        )

    def _tagged(
        self, rows: DataFrame, batch_id: int | None, keep: tuple[str, ...] = ()
    ) -> DataFrame:
        """Kafka records as master rows, ingested at the micro-batch's timestamp (followed by
        the columns in ``keep``); ``ingest_batch`` null when ``batch_id`` is None."""
        return (
            rows.select(*EVENT_COLUMNS, *_POSITION, BATCH_TIME, *keep)
            .withColumn("source_key", storable_text(F.col("source_key")))
            .transform(
                with_ingest_metadata(
                    layer=SPEED_LAYER,
                    run=self.settings.stream,
                    batch=batch_id,
                    ingested_at=F.col(BATCH_TIME),
                    keep=keep,
                )
            )
        )

    def _master_rows(self, rows: DataFrame, batch_id: int) -> DataFrame:
        """The micro-batch's valid records as master rows (from the cache)."""
        return self._tagged(rows.where(F.col("reject_reason").isNull()), batch_id)

    def master_records(self, rows: DataFrame) -> DataFrame:
        """Every Kafka record of the micro-batch as a master row, with its reject reason and
        its Kafka timestamp (what the summary needs). ``ingest_batch`` is left null, to be
        set on the driver: a micro-batch id in the plan is a literal in the code Spark
        generates, so every micro-batch would compile (and the JVM compile again) code that
        differs only in that number."""
        return self._tagged(rows, None, keep=("reject_reason", MESSAGE_TIME))

    def _collect(self, rows: DataFrame, registered: Observation) -> tuple[pa.Table, _Summary]:
        """The steady state's one job: the micro-batch read, de-duplicated and cached, and
        its Kafka records brought to the driver (:meth:`master_records`)."""
        records = self.master_records(rows).toArrow()
        return records, _summary_of(records, registered)

    def newer_batch_rows(self, spark: SparkSession) -> DataFrame:
        """Event ids of batch rows of epochs newer than the last registered one. Read inside
        the master append's transaction, this is the bounded read that settles what the state
        cannot see. A sink whose input carries no registrations (called outside a query: no
        de-duplication state before it) compares with every row of the master dataset."""
        master = spark.read.format("delta").load(self.settings.lakehouse.master_dataset)
        if self._epoch is None:
            return master.select("event_id")
        newer = (F.col("ingest_layer") == BATCH_LAYER) & (F.col("ingest_run") > F.lit(self._epoch))
        return master.where(newer).select("event_id")

    def _append_master(
        self,
        spark: SparkSession,
        new_events: DataFrame,
        batch_id: int,
        *,
        expected: int,
        replay: bool,
    ) -> int | None:
        """Append the new events; the rows written, when they are all of ``new_events``
        (``expected`` of them), else None (some were the batch layer's, or a replay wrote
        nothing): the caller then reads the rows tagged ``batch_id`` back."""
        master = self.settings.lakehouse.master_dataset
        if self._log_version is None:
            through = self.settings.registered_through
            # From the registrations' end when they stop there: the log read after this
            # append then meets any batch commit the state will not see.
            self._log_version = table_version(spark, master) + 1 if through is None else through + 1

        tag = f"{self.app_id}:{batch_id}"

        def append() -> None:
            # Built anew for each attempt: the read of newer batch rows happens inside the
            # append's transaction, so Delta checks later commits against it.
            (
                new_events.join(self.newer_batch_rows(spark), on="event_id", how="left_anti")
                .write.format("delta")
                .mode("append")
                .option("userMetadata", tag)
                .save(master)
            )

        if replay and self._tagged_master_rows(spark, batch_id).limit(1).count():
            return None  # a previous attempt appended them
        with_conflict_retry(
            append, what="append to master dataset", retries=self.settings.conflict_retries
        )
        commits = self._read_log()
        if commits is None:
            return None
        ours = [c for c in commits if c.user_metadata == tag]
        if len(ours) == 1 and ours[0].output_rows == expected:
            return expected
        return None

    def _append_reading(
        self,
        spark: SparkSession,
        new_events: DataFrame,
        batch_id: int,
        *,
        count: int,
        replay: bool,
        newest_message_at: datetime | None,
    ) -> int:
        """Every other case: the master append (reading what it must, see
        :meth:`_append_master`), then the increments over the rows it wrote (from the cache
        when it wrote all ``count`` of them, else read back). Returns the events written."""
        inserted = self._append_master(spark, new_events, batch_id, expected=count, replay=replay)
        fault_point("speed.after_master_insert")
        from_cache = inserted is not None and not replay
        return self._write_increments(
            spark,
            new_events if from_cache else self._tagged_master_rows(spark, batch_id),
            batch_id,
            count=inserted if from_cache else None,
            replay=replay,
            newest_message_at=newest_message_at,
        )

    def _steady_version(self, replay: bool) -> int | None:
        """The master dataset's version the steady state's append must follow, when this is
        the steady state (else None): not a replay, the state upstream holds the batch
        layer's ids (registrations), and every master commit since the stream last looked is
        its own, so no batch row can exist that the state has not seen. The stream has seen
        every commit below where it last looked before this micro-batch was planned (the
        previous micro-batch ended after reading the log up to it, and the query read the
        batch layer's inserts up to at least there when it planned this one). A batch
        insert committing after this check takes the version the append needs, and the
        append fails instead of committing (:meth:`_append_direct`).
        """
        since = None if replay or self.settings.registered_epoch is None else self._log_version
        if since is None or not self._driver.usable or self._unregistered:
            return None
        commits = commits_from(
            self.settings.lakehouse.master_dataset, since, self.settings.storage_options
        )
        self._note_unregistered(commits or [])
        if commits is None or any(
            not (c.user_metadata or "").startswith(f"{self.app_id}:") for c in commits
        ):
            return None
        return since - 1 + len(commits)

    def _append_direct(
        self,
        spark: SparkSession,
        records: pa.Table,
        rows: DataFrame,
        batch_id: int,
        *,
        version: int,
        newest_message_at: datetime | None,
    ) -> bool:
        """The steady state: the valid records (on the driver, :meth:`_collect`) appended to
        the master dataset as its next version after ``version``, then their views to the
        speed increments, each written and committed from the driver (delta-rs): no Spark
        job, no read.

        False, with nothing committed, when another writer took that version (a batch
        insert racing the micro-batch) or delta-rs cannot write the master dataset: the
        caller takes the reading path, which sees the batch's rows.
        """
        settings = self.settings
        valid = records.filter(pc.is_null(records.column("reject_reason")))
        valid = valid.set_column(
            valid.schema.get_field_index("ingest_batch"),
            "ingest_batch",
            pa.array([batch_id] * valid.num_rows, pa.int64()),
        )
        new_events = valid.select(_MASTER_ARROW.names).cast(_MASTER_ARROW)
        increments = increments_over_arrow(new_events, stream=settings.stream, batch_id=batch_id)
        try:
            if not self._driver.append(
                settings.lakehouse.master_dataset,
                new_events,
                user_metadata=f"{self.app_id}:{batch_id}",
                expected_version=version,
            ):
                return False
        except DriverAppendUnusable as exc:
            log.info("delta-rs cannot write the master dataset (%s): Spark writes it", exc)
            return False
        # Every master commit up to ``version`` was this stream's, and its own is the next:
        # the log is known up to there without reading it again.
        self._log_version = version + 2
        fault_point("speed.after_master_insert")
        metadata = increments_commit_metadata(settings.stream, batch_id, newest_message_at)
        try:
            self._driver.append(
                settings.lakehouse.speed_increments, increments, user_metadata=metadata
            )
        except DriverAppendUnusable:
            self._write_increments(
                spark,
                self._master_rows(rows, batch_id),
                batch_id,
                count=new_events.num_rows,
                replay=False,
                newest_message_at=newest_message_at,
            )
        return True

    def _read_log(self) -> list[Commit] | None:
        """The master commits from where the stream last looked on; the stream has now looked
        past them (None, and it looks again from the table's version next time: not a local
        table)."""
        assert self._log_version is not None
        commits = commits_from(
            self.settings.lakehouse.master_dataset, self._log_version, self.settings.storage_options
        )
        self._note_unregistered(commits or [])
        if commits is None:
            self._log_version = None
        elif commits:
            self._log_version = commits[-1].version + 1
        return commits

    def _note_unregistered(self, commits: list[Commit]) -> None:
        """Remember a commit of another writer past where the registrations stop."""
        through = self.settings.registered_through
        if through is not None and any(
            c.version > through and not (c.user_metadata or "").startswith(f"{self.app_id}:")
            for c in commits
        ):
            self._unregistered = True

    def _written(self, spark: SparkSession, path: str, batch_id: int) -> bool:
        """Whether the table holds rows of this stream's micro-batch ``batch_id`` (replays)."""
        return bool(
            spark.read.format("delta")
            .load(path)
            .where((F.col("stream") == self.settings.stream) & (F.col("batch_id") == batch_id))
            .limit(1)
            .count()
        )

    def _tagged_master_rows(self, spark: SparkSession, batch_id: int) -> DataFrame:
        """The master rows this micro-batch inserted (files of other micro-batches and of the
        batch layer are skipped by their statistics)."""
        return (
            spark.read.format("delta")
            .load(self.settings.lakehouse.master_dataset)
            .where(
                (F.col("ingest_layer") == SPEED_LAYER)
                & (F.col("ingest_run") == self.settings.stream)
                & (F.col("ingest_batch") == batch_id)
            )
        )

    def _write_increments(
        self,
        spark: SparkSession,
        events: DataFrame,
        batch_id: int,
        *,
        count: int | None,
        replay: bool,
        newest_message_at: datetime | None,
    ) -> int:
        """Append the views over ``events`` to the speed increments; returns how many events.

        ``count``: how many ``events`` there are, when known (they come from the cache); else
        they are read back from the master dataset, cached and counted here. The commit says
        which micro-batch it is and when its newest Kafka record was published (readers such
        as ``/health`` learn it from the log, before the metrics are written).
        """
        settings = self.settings
        inputs = events.select(*_VIEW_INPUTS)
        if count is None:
            inputs = inputs.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            inserted = inputs.count() if count is None else count
            if not inserted:
                return 0
            path = settings.lakehouse.speed_increments
            if replay and self._written(spark, path, batch_id):
                return inserted
            increments = view_increments(inputs, stream=settings.stream, batch_id=batch_id)
            metadata = increments_commit_metadata(settings.stream, batch_id, newest_message_at)

            def append() -> None:
                # A blind append: through Delta's transaction API when reachable (no
                # DataFrame writer around the job), else the DataFrame writer.
                prepared = prepare_append(spark, path, increments, user_metadata=metadata)
                if prepared is not None:
                    prepared.commit()
                else:
                    (
                        increments.write.format("delta")
                        .mode("append")
                        .option("userMetadata", metadata)
                        .save(path)
                    )

            with_conflict_retry(append, what="append to the speed increments")
        finally:
            if count is None:
                inputs.unpersist()
        return inserted
