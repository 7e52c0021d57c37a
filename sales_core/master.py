"""Writing to the master dataset: the one way both layers add events.

An event enters the master dataset once, whoever brings it first: an insert-only MERGE on
``event_id``. The table's Serializable isolation makes two concurrent MERGEs conflict, and
:func:`with_conflict_retry` runs the loser again, which then sees the winner's rows; so a
race between batch and speed layer never double-inserts and never fails the job.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from delta.exceptions import DeltaConcurrentModificationException
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_core.errors import PipelineError
from sales_core.lakehouse import MASTER_SCHEMA

log = logging.getLogger(__name__)

T = TypeVar("T")


_CONFLICT_MARKERS = (
    "DELTA_CONCURRENT_",
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "MetadataChangedException",
    "ProtocolChangedException",
)


def is_conflict(exc: BaseException) -> bool:
    """True for a Delta optimistic-concurrency conflict (retrying the whole write is safe).

    delta-spark maps the JVM's conflict exceptions to ``DeltaConcurrentModificationException``
    in most paths, but not all (a conflict may surface as a generic Py4J or Spark error
    carrying the ``DELTA_CONCURRENT_*`` error class), so the error class is checked too.
    A delta-rs commit beaten to the table's next version by another writer is one as well.
    """
    if isinstance(exc, DeltaConcurrentModificationException):
        return True
    from deltalake.exceptions import CommitFailedError  # a delta-rs commit losing its version

    if isinstance(exc, CommitFailedError):
        return True
    text = str(exc)
    return any(marker in text for marker in _CONFLICT_MARKERS)


def with_conflict_retry(action: Callable[[], T], *, what: str, retries: int = 10) -> T:
    """Run ``action``; on a Delta concurrent-modification conflict, back off and rerun it."""
    for attempt in range(retries + 1):
        try:
            return action()
        except Exception as exc:
            if not is_conflict(exc):
                raise
            if attempt == retries:
                raise PipelineError(
                    f"{what}: still conflicting with concurrent writers after {retries} retries"
                ) from exc
            delay = min(30.0, 0.5 * 2**attempt) * (0.5 + random.random())
            log.warning(
                "%s conflicted with a concurrent write (%s); retry %d in %.1fs",
                what,
                type(exc).__name__,
                attempt + 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def with_ingest_metadata(
    *, layer: str, run: str, batch: int | None, ingested_at: object, keep: tuple[str, ...] = ()
) -> Callable[[DataFrame], DataFrame]:
    """Tag events with who ingested them, shaped as the master dataset's rows (followed by
    the columns named in ``keep``)."""

    def transform(events: DataFrame) -> DataFrame:
        tagged = events.withColumns(
            {
                "ingest_layer": F.lit(layer),
                "ingest_run": F.lit(run),
                "ingest_batch": F.lit(batch).cast("long"),
                "ingested_at": F.lit(ingested_at).cast("timestamp"),
            }
        )
        return tagged.select(*MASTER_SCHEMA.fieldNames(), *keep)

    return transform


def insert_new_events(
    spark: SparkSession, master_path: str, rows: DataFrame, *, retries: int
) -> None:
    """Insert the rows whose ``event_id`` is not in the master dataset yet (idempotent)."""

    def merge() -> None:
        (
            DeltaTable.forPath(spark, master_path)
            .alias("master")
            .merge(rows.alias("new"), "master.event_id = new.event_id")
            .whenNotMatchedInsertAll()
            .execute()
        )

    with_conflict_retry(merge, what="insert into master dataset", retries=retries)
