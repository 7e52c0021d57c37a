"""The hand-off contract between the layers: who wrote a row, and which generation is current.

The batch layer publishes generation *N* of its views with one append to the ``generations``
table; that row carries the **hand-off mark**: per speed stream, the last micro-batch whose
events generation *N* includes. The speed layer tags what it writes with its stream's name
and micro-batch id; the serving layer adds exactly the increments above the mark. All three
layers read these names and this table through this module, and nothing else of each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_core.delta_log import local_path
from sales_core.lakehouse import Lakehouse
from sales_core.views import VIEWS

# ``ingest_layer`` of a master dataset row: which layer inserted it.
BATCH_LAYER = "batch"
SPEED_LAYER = "speed"

# The stream's name: master rows it inserted carry ingest_run = SPEED_STREAM, its increments
# carry stream = SPEED_STREAM, and the hand-off mark is keyed by it.
SPEED_STREAM = "speed"


@dataclass(frozen=True)
class Generation:
    """A published generation of the batch views and its hand-off mark."""

    generation: int
    master_version: int
    handoff: dict[str, int]
    events: int
    published_at: datetime | None = None


def current_generation(
    spark: SparkSession, lakehouse: Lakehouse, *, version: int | None = None
) -> Generation | None:
    """The published generation readers see now, or at ``version`` of the generations table
    (None before the first publish). On a local lakehouse read by delta-rs from the driver
    (milliseconds, where Spark's read is a job of a second or more), elsewhere by Spark."""
    if local_path(lakehouse.generations) is not None:
        return _generation_on_driver(lakehouse.generations, version)
    if not DeltaTable.isDeltaTable(spark, lakehouse.generations):
        return None
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    row = reader.load(lakehouse.generations).orderBy(F.col("generation").desc()).limit(1).first()
    if row is None:
        return None
    return Generation(
        row["generation"],
        row["master_version"],
        dict(row["handoff"]),
        row["events"],
        row["published_at"],
    )


def _generation_on_driver(path: str, version: int | None) -> Generation | None:
    from deltalake import DeltaTable as RsDeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = RsDeltaTable(path, version=version)
    except TableNotFoundError:
        return None
    rows = table.to_pyarrow_table(
        columns=["generation", "master_version", "handoff", "events", "published_at"]
    ).to_pylist()
    if not rows:
        return None
    row = max(rows, key=lambda r: r["generation"])
    published_at = row["published_at"]
    return Generation(
        row["generation"],
        row["master_version"],
        dict(row["handoff"] or []),
        row["events"],
        # as PySpark hands a timestamp out: naive, in the process's time zone
        published_at.astimezone().replace(tzinfo=None) if published_at else None,
    )


def handoff_mark(snapshot: DataFrame) -> dict[str, int]:
    """Per speed stream, the last micro-batch whose events are in ``snapshot``.

    Micro-batches of a stream commit to the master dataset in order, so every batch up to the
    newest one present is in the snapshot too.
    """
    rows = (
        snapshot.where(F.col("ingest_layer") == SPEED_LAYER)
        .groupBy("ingest_run")
        .agg(F.max("ingest_batch").alias("last_batch"))
        .collect()
    )
    return {r["ingest_run"]: int(r["last_batch"]) for r in rows}


def read_batch_view(
    spark: SparkSession, lakehouse: Lakehouse, view_name: str, generation: int
) -> DataFrame:
    """The rows of one published generation of a batch view."""
    view = VIEWS[view_name]
    return (
        spark.read.format("delta")
        .load(lakehouse.batch_view(view_name))
        .where(F.col("generation") == generation)
        .select(*view.columns)
    )
