"""The start-up check: the streaming checkpoint and the lakehouse tables must agree.

Spark's checkpoint decides which Kafka offsets come next; the tables record which
micro-batches were written. If they disagree, starting would silently reprocess or skip data,
so the job refuses to start with a one-line reason.

What is read from the checkpoint (Spark's documented layout, files named by batch id):
``offsets/<id>`` is written when micro-batch ``id`` is planned (its last line names the
topic and end offset of every partition), ``commits/<id>`` when it is done. A checkpoint on a
local path is read with the file system; elsewhere (``s3a://``, ``abfss://``…) through
Spark's file listing, so nothing here depends on Spark internals beyond that layout.

What the tables say: the highest micro-batch id of the stream in the master dataset (``M``)
and in ``stream_metrics`` (``L``). With ``C`` the last committed and ``P`` the last planned
micro-batch (-1 for none; ``P`` is ``C`` or ``C + 1``), a consistent state has ``M <= P``
and ``C <= L <= P``. Tables ahead of the last commit are fine only for the micro-batch the
offset log holds: the restart replays exactly its logged offsets, so its idempotent writes
line up; anything further ahead means the checkpoint is older than the tables. Metrics rows
are written off the hot path, after Spark's commit, so a crash may leave the last few
committed micro-batches without one (``L < C``): up to :data:`MAX_UNWRITTEN` of them count
as agreement when ``stream_metrics`` exists, and the job rebuilds them
(:mod:`speed_layer.recovery`).

The de-duplication state lives in the checkpoint (``state/``): a checkpoint that committed a
micro-batch but has no state lost every id the stream had seen, and is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from sales_core.delta_log import local_path
from sales_core.errors import PipelineError
from sales_core.lakehouse import Lakehouse
from speed_layer.tables import last_master_batch, last_metrics_batch

# At most this many committed micro-batches may lack their metrics row after a crash.
MAX_UNWRITTEN = 100


class CheckpointMismatchError(PipelineError):
    """The checkpoint and the tables disagree; starting would reprocess or skip data."""


@dataclass(frozen=True)
class CheckpointState:
    """What a streaming checkpoint says about its micro-batches.

    Attributes:
        location: the checkpoint's path or URI.
        exists: True when the checkpoint has planned at least one micro-batch.
        last_committed: the last micro-batch Spark committed (None: none yet).
        last_planned: the last micro-batch in the offset log (None: none yet).
        topics: topics named by the last planned micro-batch's offsets.
        end_offsets: the last planned micro-batch's end offset per partition.
    """

    location: str
    exists: bool
    last_committed: int | None
    last_planned: int | None
    topics: frozenset[str]
    end_offsets: dict[int, int]


def _batch_ids(spark: SparkSession, directory: str) -> list[int]:
    """The numeric file names in ``directory`` (missing directory: none)."""
    path = local_path(directory)
    if path is not None:
        names = os.listdir(path) if path.is_dir() else []
    else:
        try:
            rows = spark.read.format("binaryFile").load(directory).select("path").collect()
        except AnalysisException:
            return []
        names = [r["path"].rstrip("/").rsplit("/", 1)[-1] for r in rows]
    return sorted(int(n) for n in names if n.isdigit())


def read_text(spark: SparkSession, file: str) -> str | None:
    path = local_path(file)
    if path is not None:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    try:
        row = spark.read.text(file, wholetext=True).select(F.col("value")).first()
    except AnalysisException:
        return None
    return None if row is None else str(row["value"])


def parse_offsets(text: str) -> dict[str, dict[int, int]]:
    """Topic → partition → end offset, from an offset-log file (``v1``, metadata, sources)."""
    offsets: dict[str, dict[int, int]] = {}
    for line in text.splitlines()[2:]:
        try:
            source = json.loads(line)
        except ValueError:
            continue
        if isinstance(source, dict):
            for topic, partitions in source.items():
                if isinstance(partitions, dict):
                    offsets[topic] = {int(p): int(o) for p, o in partitions.items()}
    return offsets


def batch_end_offsets(spark: SparkSession, checkpoint: str, batch_id: int) -> dict[int, int] | None:
    """The end offset per partition of micro-batch ``batch_id`` (None when unreadable).

    Only local checkpoints are read (cheap); the caller falls back to the batch's own data.
    """
    path = local_path(checkpoint)
    if path is None:
        return None
    try:
        text = read_text(spark, str(path / "offsets" / str(batch_id)))
    except (OSError, UnicodeDecodeError):
        return None
    if text is None:
        return None
    offsets = parse_offsets(text)
    return next(iter(offsets.values())) if len(offsets) == 1 else None


def read_checkpoint_state(spark: SparkSession, location: str) -> CheckpointState:
    """Read ``location``'s offset and commit logs (a missing checkpoint reads as empty)."""
    base = location.rstrip("/")
    planned = _batch_ids(spark, f"{base}/offsets")
    committed = _batch_ids(spark, f"{base}/commits")
    offsets: dict[str, dict[int, int]] = {}
    if planned:
        text = read_text(spark, f"{base}/offsets/{planned[-1]}")
        offsets = parse_offsets(text or "")
    return CheckpointState(
        location=location,
        exists=bool(planned),
        last_committed=committed[-1] if committed else None,
        last_planned=planned[-1] if planned else None,
        topics=frozenset(offsets),
        end_offsets=next(iter(offsets.values())) if len(offsets) == 1 else {},
    )


def disagreement(
    state: CheckpointState,
    *,
    topic: str,
    stream: str,
    master_batch: int | None,
    metrics_batch: int | None,
) -> str | None:
    """Why the checkpoint and the tables disagree, in one line; None when they agree."""
    where = f"speed checkpoint {state.location}"
    recorded = max((b for b in (master_batch, metrics_batch) if b is not None), default=None)
    if not state.exists:
        if recorded is None:
            return None
        return (
            f"{where} is missing or empty, but the lakehouse already holds micro-batches of stream "
            f"'{stream}' up to {recorded}; restore the checkpoint (a new one would reprocess or skip "
            "data) or start from an empty lakehouse"
        )
    if state.topics and state.topics != {topic}:
        return (
            f"{where} reads topic(s) {', '.join(sorted(state.topics))}, not the configured topic "
            f"'{topic}': it belongs to another stream"
        )
    committed = -1 if state.last_committed is None else state.last_committed
    planned = max(committed, -1 if state.last_planned is None else state.last_planned)
    if master_batch is not None and master_batch > planned:
        return (
            f"{where} has planned micro-batches up to {planned}, but the master dataset holds "
            f"micro-batch {master_batch} of stream '{stream}': the checkpoint is older than the "
            "tables (restored from a backup, or another stream's)"
        )
    logged = -1 if metrics_batch is None else metrics_batch
    if logged > planned:
        return (
            f"{where} has planned micro-batches up to {planned}, but stream_metrics records "
            f"micro-batch {logged} of stream '{stream}': the checkpoint is older than the tables"
        )
    if logged < committed:
        return (
            f"{where} has committed micro-batches up to {committed}, but the lakehouse records "
            f"micro-batches of stream '{stream}' only up to {logged}: the tables are older than the "
            "checkpoint (deleted or restored?) and starting would skip data"
        )
    return None


def check_start(
    spark: SparkSession, lakehouse: Lakehouse, *, stream: str, topic: str
) -> CheckpointState:
    """Refuse to start when the checkpoint and the tables disagree.

    Returns:
        The checkpoint's state, when they agree.

    Raises:
        CheckpointMismatchError: with the reason, in one line.
    """
    state = read_checkpoint_state(spark, lakehouse.speed_checkpoint)
    metrics_batch = last_metrics_batch(spark, lakehouse, stream)
    committed = state.last_committed
    if (
        committed is not None
        and DeltaTable.isDeltaTable(spark, lakehouse.stream_metrics)
        and 0 < committed - (-1 if metrics_batch is None else metrics_batch) <= MAX_UNWRITTEN
    ):
        metrics_batch = committed  # rows lost in a crash, rebuilt before the query starts
    reason = disagreement(
        state,
        topic=topic,
        stream=stream,
        master_batch=last_master_batch(spark, lakehouse, stream),
        metrics_batch=metrics_batch,
    ) or missing_state(spark, state)
    if reason is not None:
        raise CheckpointMismatchError(reason)
    return state


def missing_state(spark: SparkSession, state: CheckpointState) -> str | None:
    """Why the checkpoint's de-duplication state is unusable, in one line; None when it is
    there (or nothing was committed yet)."""
    if state.last_committed is None:
        return None
    base = state.location.rstrip("/")
    path = local_path(f"{base}/state/0")
    if path is not None:
        present = path.is_dir() and any(path.iterdir())
    else:
        try:
            present = bool(
                spark.read.format("binaryFile")
                .option("recursiveFileLookup", "true")
                .load(f"{base}/state/0")
                .limit(1)
                .count()
            )
        except AnalysisException:
            present = False
    if present:
        return None
    return (
        f"speed checkpoint {state.location} has committed micro-batches up to "
        f"{state.last_committed} but no de-duplication state (state/ was deleted): starting "
        "would accept events the stream already took; restore the whole checkpoint"
    )
