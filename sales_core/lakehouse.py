"""Where every Delta table lives under ``lakehouse.root``, and their schemas.

One place for table locations and schemas, so the batch, speed and serving layers agree on
them. Table creation is idempotent and safe to race: version 0 of a table is written once,
whoever wins (put if absent by the driver on a local lakehouse, ``createIfNotExists`` elsewhere).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sales_core.delta_log import commit_file, empty_histogram, local_path, write_checksum
from sales_core.events import POSITION_FIELDS
from sales_core.rules import EVENT_SCHEMA, QUARANTINE_SCHEMA
from sales_core.views import VIEWS

log = logging.getLogger(__name__)

INGEST_FIELDS = T.StructType(
    [
        T.StructField("ingest_layer", T.StringType(), False),  # batch | speed
        T.StructField("ingest_run", T.StringType(), False),  # batch epoch tag / speed stream
        T.StructField("ingest_batch", T.LongType(), True),  # speed micro-batch id
        T.StructField("ingested_at", T.TimestampType(), False),
    ]
)
_POSITION_SCHEMA = T.StructType([f for f in QUARANTINE_SCHEMA.fields if f.name in POSITION_FIELDS])

MASTER_SCHEMA = T.StructType(EVENT_SCHEMA.fields + _POSITION_SCHEMA.fields + INGEST_FIELDS.fields)

QUARANTINE_TABLE_SCHEMA = T.StructType(
    QUARANTINE_SCHEMA.fields
    + [
        T.StructField("ingest_layer", T.StringType(), False),
        T.StructField("ingest_run", T.StringType(), False),
    ]
)

# Quarantined records a replay let through (the quarantine itself stays append-only): which
# quarantine row (``quarantine_id``, see batch_layer.quarantine), the event it became, whether
# the master dataset took it from this row or already had the event, and the run that did it.
QUARANTINE_REPLAYS_SCHEMA = T.StructType(
    [
        T.StructField("quarantine_id", T.StringType(), False),
        T.StructField("event_id", T.StringType(), False),
        T.StructField("outcome", T.StringType(), False),  # ingested | duplicate
        T.StructField("ingest_run", T.StringType(), True),  # the master row's, when ingested
        T.StructField("replay_run", T.StringType(), False),
        T.StructField("replayed_at", T.TimestampType(), False),
    ]
)

LEDGER_SCHEMA = T.StructType(
    [
        T.StructField("epoch", T.LongType(), False),
        T.StructField("state", T.StringType(), False),  # planned | ingested
        T.StructField("source", T.StringType(), False),  # the source's kind: file, jdbc, http...
        T.StructField("name", T.StringType(), False),  # what it took: a file, a table, an API URL
        T.StructField("position", T.StringType(), True),  # JSON, the source's own
        T.StructField("run_id", T.StringType(), False),
        T.StructField("recorded_at", T.TimestampType(), False),
    ]
)

GENERATIONS_SCHEMA = T.StructType(
    [
        T.StructField("generation", T.LongType(), False),
        T.StructField("published_at", T.TimestampType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("master_version", T.LongType(), False),
        # The hand-off mark: per speed stream, the last micro-batch whose events this
        # generation's batch views include.
        T.StructField("handoff", T.MapType(T.StringType(), T.LongType()), False),
        T.StructField("events", T.LongType(), False),
    ]
)

RUNS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("job", T.StringType(), False),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("ended_at", T.TimestampType(), True),
        T.StructField("status", T.StringType(), False),
        T.StructField("records_read", T.LongType(), True),
        T.StructField("valid", T.LongType(), True),
        T.StructField("duplicates", T.LongType(), True),
        T.StructField("quarantined", T.LongType(), True),
        T.StructField("quality_score", T.DoubleType(), True),
        T.StructField("quality", T.StringType(), True),  # JSON: the checks behind the score
        T.StructField("generation", T.LongType(), True),
        T.StructField("delta_versions", T.MapType(T.StringType(), T.LongType()), True),
        T.StructField("error", T.StringType(), True),
        T.StructField("details", T.StringType(), True),  # JSON: per-source counts, files...
    ]
)


# Every alert a job sent (sales_core.alerts.notify), appended by delta-rs from the sending
# process: what it was (``kind``, one line, ``details`` as JSON), when, and whether a webhook
# was configured (``webhook``) and took it (``delivered``). The console shows the newest.
ALERTS_SCHEMA = T.StructType(
    [
        T.StructField("alert_id", T.StringType(), False),
        T.StructField("kind", T.StringType(), False),
        T.StructField("summary", T.StringType(), False),
        T.StructField("details", T.StringType(), True),  # JSON
        T.StructField("at", T.TimestampType(), False),
        T.StructField("webhook", T.BooleanType(), False),
        T.StructField("delivered", T.BooleanType(), False),
    ]
)


def view_table_schema(view_name: str) -> T.StructType:
    """A published batch view: the view's columns plus its generation (partition column)."""
    return T.StructType(
        [T.StructField("generation", T.LongType(), False)] + VIEWS[view_name].schema.fields
    )


@dataclass(frozen=True)
class Lakehouse:
    """Locations of the pipeline's tables under one root (local path or URI)."""

    root: str

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @property
    def spark_warehouse(self) -> str:
        """Spark's warehouse directory (``spark.sql.warehouse.dir``: where a schema that
        ``sql-views`` creates has its location) under the root, not in the working
        directory of whichever process started the session: on a cluster the driver's disk
        holds nothing of the pipeline's."""
        return self._path("spark-warehouse")

    @property
    def master_dataset(self) -> str:
        return self._path("bronze", "master_dataset")

    @property
    def quarantine(self) -> str:
        return self._path("bronze", "quarantine")

    def pulled(self, source: str) -> str:
        """Records a pull source (a paged API) fetched, pinned by epoch so a rerun reads them."""
        return self._path("bronze", "pulled", source)

    @property
    def quarantine_replays(self) -> str:
        return self._path("meta", "quarantine_replays")

    @property
    def ingest_ledger(self) -> str:
        return self._path("meta", "ingest_ledger")

    @property
    def pipeline_runs(self) -> str:
        return self._path("meta", "pipeline_runs")

    @property
    def alerts(self) -> str:
        return self._path("meta", "alerts")

    @property
    def generations(self) -> str:
        return self._path("serving", "generations")

    def batch_view(self, view_name: str) -> str:
        return self._path("gold", view_name)

    @property
    def speed_increments(self) -> str:
        """The speed increments of every view, one table (rows tagged with their view)."""
        return self._path("speed", "view_increments")

    @property
    def stream_metrics(self) -> str:
        return self._path("meta", "stream_metrics")

    @property
    def speed_checkpoint(self) -> str:
        return self._path("speed", "_checkpoint")


def ensure_table(
    spark: SparkSession,
    path: str,
    schema: T.StructType,
    *,
    partitioned_by: tuple[str, ...] = (),
    properties: dict[str, str] | None = None,
) -> None:
    """Create the Delta table at ``path`` with ``schema`` unless it exists.

    On a local lakehouse the driver writes the table's first commit itself (the same
    protocol, schema, partitioning and properties Spark's builder writes, in milliseconds;
    Spark's builder costs a query plan and a snapshot, most of a second each time, the first
    table of a cold JVM several seconds); on object stores and DBFS, Spark's builder.
    """
    location = local_path(path)
    if location is not None:
        _create_on_driver(str(location), schema, partitioned_by, properties or {})
        return
    if DeltaTable.isDeltaTable(spark, path):
        return
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    if partitioned_by:
        builder = builder.partitionedBy(*partitioned_by)
    for key, value in (properties or {}).items():
        builder = builder.property(key, value)
    builder.execute()
    log.info("created Delta table %s", path)


def _create_on_driver(
    path: str, schema: T.StructType, partitioned_by: tuple[str, ...], properties: dict[str, str]
) -> None:
    """:func:`ensure_table` on a local path: the table's first commit (its protocol and
    metadata, as Spark's builder writes them) written by the driver, put only if absent (a hard
    link, which fails if the name exists: Delta's own local log store renames likewise). A
    create that loses the race for version 0 finds the table there, which is all it wanted."""
    log_dir = Path(path) / "_delta_log"
    if log_dir.is_dir() and any(
        name.endswith((".json", ".checkpoint.parquet")) or name == "_last_checkpoint"
        for name in os.listdir(log_dir)
    ):
        return  # a table (its first commits may be long cleaned up, after a checkpoint)
    log_dir.mkdir(parents=True, exist_ok=True)
    now = int(time.time() * 1000)
    protocol = {"minReaderVersion": 1, "minWriterVersion": 2}
    metadata = {
        "id": str(uuid.uuid4()),
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema.json(),  # Delta's schema string is Spark's StructType JSON
        "partitionColumns": list(partitioned_by),
        "configuration": properties,
        "createdTime": now,
    }
    commit_info = {
        "timestamp": now,
        "operation": "CREATE TABLE",
        "operationParameters": {
            "partitionBy": json.dumps(list(partitioned_by)),
            "description": None,
            "isManaged": "false",
            "properties": json.dumps(properties),
        },
        "isBlindAppend": True,
        "engineInfo": "lambda-sales",
    }
    actions = [{"commitInfo": commit_info}, {"protocol": protocol}, {"metaData": metadata}]
    first = Path(path) / commit_file(0)
    staged = log_dir / f".{first.name}.{uuid.uuid4()}.tmp"
    staged.write_text("".join(json.dumps(action) + "\n" for action in actions))
    try:
        os.link(staged, first)
    except FileExistsError:
        return  # another writer's create won
    finally:
        staged.unlink()
    # The version's checksum, as Delta writes after its commit: readers take the protocol and
    # schema from it, and the driver's appends carry it forward (speed_layer.deltalog).
    checksum = {
        "txnId": str(uuid.uuid4()),
        "tableSizeBytes": 0,
        "numFiles": 0,
        "numMetadata": 1,
        "numProtocol": 1,
        "setTransactions": [],
        "domainMetadata": [],
        "metadata": metadata,
        "protocol": protocol,
        "fileSizeHistogram": empty_histogram(),
        "allFiles": [],
    }
    write_checksum(Path(path), 0, checksum)
    log.info("created Delta table %s", path)


# Inserts race between the layers: Serializable makes any concurrent commit to the master
# dataset conflict with a MERGE that read it, so one side retries instead of double-inserting.
MASTER_PROPERTIES = {"delta.isolationLevel": "Serializable", "delta.appendOnly": "true"}


def ensure_master_dataset(spark: SparkSession, lakehouse: Lakehouse) -> None:
    ensure_table(spark, lakehouse.master_dataset, MASTER_SCHEMA, properties=MASTER_PROPERTIES)


def ensure_quarantine(spark: SparkSession, lakehouse: Lakehouse) -> None:
    ensure_table(
        spark,
        lakehouse.quarantine,
        QUARANTINE_TABLE_SCHEMA,
        properties={"delta.appendOnly": "true"},
    )


def ensure_serving_tables(spark: SparkSession, lakehouse: Lakehouse) -> None:
    ensure_table(spark, lakehouse.generations, GENERATIONS_SCHEMA)
    for name in VIEWS:
        ensure_table(
            spark,
            lakehouse.batch_view(name),
            view_table_schema(name),
            partitioned_by=("generation",),
        )


# A speed increment row is one view row computed over the events one micro-batch inserted into
# the master dataset, tagged (stream, batch_id): the serving layer adds exactly the increments
# above the hand-off mark (sales_core.handoff).
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


def _increments_schema() -> T.StructType:
    fields: dict[str, T.StructField] = {}
    for view in VIEWS.values():
        for field in view.schema.fields:
            known = fields.setdefault(field.name, T.StructField(field.name, field.dataType, True))
            if known.dataType != field.dataType:
                raise TypeError(f"views disagree on the type of column {field.name}")
    return T.StructType(
        [
            *INCREMENT_TAG_FIELDS,
            T.StructField(INCREMENT_VIEW, T.StringType(), False),
            *fields.values(),
        ]
    )


# The column of the speed increments that names the view a row belongs to. The table's other
# columns are every view's columns (a column two views share has one type), null where a view
# has no such column: one row shape for all views, so a micro-batch is one commit.
INCREMENT_VIEW = "view"
INCREMENTS_SCHEMA = _increments_schema()

# A hot table (a commit a second): statistics only on the columns readers prune on (the tags,
# and the view for files that hold one view), and a log checkpoint (a Spark job in the
# committing micro-batch) every 100 commits, not every 10.
INCREMENTS_PROPERTIES = {
    "delta.dataSkippingStatsColumns": ",".join(
        [*(f.name for f in INCREMENT_TAG_FIELDS), INCREMENT_VIEW]
    ),
    "delta.checkpointInterval": "100",
}


def ensure_speed_tables(spark: SparkSession, lakehouse: Lakehouse) -> None:
    """Create every table the speed layer writes, unless it exists (safe to race)."""
    ensure_master_dataset(spark, lakehouse)
    ensure_quarantine(spark, lakehouse)
    ensure_speed_increments(spark, lakehouse)
    ensure_table(spark, lakehouse.stream_metrics, STREAM_METRICS_SCHEMA)


def ensure_speed_increments(spark: SparkSession, lakehouse: Lakehouse) -> None:
    """Create the (empty) speed increments table unless it exists (safe to race)."""
    ensure_table(
        spark, lakehouse.speed_increments, INCREMENTS_SCHEMA, properties=INCREMENTS_PROPERTIES
    )


def increment_rows(view_name: str) -> Callable[[DataFrame], DataFrame]:
    """Rows of one view tagged ``(stream, batch_id)`` in the increments table's row shape:
    the view's name, and null in the columns of the other views."""
    columns = set(VIEWS[view_name].columns)

    def transform(rows: DataFrame) -> DataFrame:
        return rows.select(
            *(
                F.lit(view_name).alias(f.name)
                if f.name == INCREMENT_VIEW
                else F.col(f.name)
                if f.name in columns or f in INCREMENT_TAG_FIELDS
                else F.lit(None).cast(f.dataType).alias(f.name)
                for f in INCREMENTS_SCHEMA.fields
            )
        )

    return transform


@dataclass(frozen=True)
class IncrementsCommit:
    """What a speed increments commit says of itself (its ``userMetadata``)."""

    stream: str
    batch_id: int
    newest_message_at: datetime | None  # the newest Kafka record's publish time (UTC)


def increments_commit_metadata(
    stream: str, batch_id: int, newest_message_at: datetime | None
) -> str:
    """The ``userMetadata`` of a speed increments commit (see :func:`read_increments_commit`)."""
    return json.dumps(
        {
            "stream": stream,
            "batch_id": batch_id,
            "newest_message_at": newest_message_at.isoformat() if newest_message_at else None,
        }
    )


def read_increments_commit(user_metadata: str | None) -> IncrementsCommit | None:
    """The micro-batch a speed increments commit wrote (None: another kind of commit, such as
    a compaction or a maintenance delete)."""
    try:
        data = json.loads(user_metadata or "")
        newest = data["newest_message_at"]
        return IncrementsCommit(
            str(data["stream"]),
            int(data["batch_id"]),
            datetime.fromisoformat(newest).astimezone(timezone.utc) if newest else None,
        )
    except (ValueError, TypeError, KeyError):
        return None


def read_view_increments(spark: SparkSession, lakehouse: Lakehouse, view_name: str) -> DataFrame:
    """One view's rows of the speed increments: ``(stream, batch_id)`` and the view's columns."""
    return (
        spark.read.format("delta")
        .load(lakehouse.speed_increments)
        .where(F.col(INCREMENT_VIEW) == view_name)
        .select(*(f.name for f in INCREMENT_TAG_FIELDS), *VIEWS[view_name].columns)
    )


def table_version(spark: SparkSession, path: str) -> int:
    """The latest committed version of the Delta table at ``path``.

    On a classic (py4j) session Delta's transaction log is asked directly: a listing of the
    log on the driver, about 10 ms, where the newest ``DESCRIBE HISTORY`` entry is a Spark job
    (0.1–0.2 s; three of them were most of a warm serving answer). Where that API is not
    there (Spark Connect, a Delta build with other internals), the history is read.
    """
    if DELTA_LOG_API["usable"]:
        try:
            jvm = spark._jvm  # absent on Spark Connect
            assert jvm is not None
            none = jvm.scala.Option.empty()
            delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
            version = int(delta_log.update(False, none, none).version())
        except Exception as exc:  # noqa: BLE001 - any failure: the public API below, from now on
            log.info(
                "Delta's log API is not usable here (%s); table versions come from the history",
                type(exc).__name__,
            )
            DELTA_LOG_API["usable"] = False
        else:
            if version >= 0:
                return version
            # not a Delta table (-1): the public API below says so in its own words
    row = DeltaTable.forPath(spark, path).history(1).select("version").first()
    assert row is not None
    return int(row["version"])


# Whether DeltaLog can be reached through py4j in this process (see table_version); it turns
# False on the first failure, and setting it False makes versions come from the history alone.
DELTA_LOG_API = {"usable": True}
