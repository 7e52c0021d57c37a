"""What the speed job works out at start and at the end of a run from the checkpoint and tables.

- :func:`registered_epoch`: the newest batch epoch whose master rows the de-duplication state
  holds (the registrations of every master version the checkpoint's last committed
  micro-batch had read), so the sink's bounded read starts after it.
- :func:`records_read`: how many Kafka records micro-batch ``N`` read, from its offset range
  in the checkpoint (used when Spark's progress report of it never came).
- :func:`recover_metrics`: the ``stream_metrics`` rows a crash lost (they are written off the
  hot path, after Spark's checkpoint commit), rebuilt from the checkpoint and the tables.
"""

from __future__ import annotations

import json
import logging

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sales_core.delta_log import local_path
from sales_core.handoff import BATCH_LAYER, SPEED_LAYER
from sales_core.lakehouse import Lakehouse
from sales_core.runs import utcnow
from speed_layer.checkpoint import (
    MAX_UNWRITTEN,
    CheckpointState,
    parse_offsets,
    read_text,
)
from speed_layer.metrics import MicroBatchMetrics, append_metrics
from speed_layer.tables import last_metrics_batch

log = logging.getLogger(__name__)


def _offsets_file(spark: SparkSession, checkpoint: str, batch_id: int) -> str | None:
    return read_text(spark, f"{checkpoint.rstrip('/')}/offsets/{batch_id}")


def _delta_offset(text: str) -> dict[str, object] | None:
    """The Delta source's offset in an offset-log file (None: no Delta source there)."""
    for line in text.splitlines()[2:]:
        try:
            offset = json.loads(line)
        except ValueError:
            continue
        if isinstance(offset, dict) and "reservoirVersion" in offset:
            return offset
    return None


def registered_epoch(spark: SparkSession, lakehouse: Lakehouse, state: CheckpointState) -> str:
    """The newest batch epoch (``ingest_run`` tag) registered in the state; "" for none.

    Every master version before the Delta source's end offset in the last committed
    micro-batch has been read into the state. One scan of the batch rows' tags at start.
    """
    if state.last_committed is None:
        return ""
    text = _offsets_file(spark, state.location, state.last_committed)
    offset = None if text is None else _delta_offset(text)
    if offset is None or offset.get("isStartingVersion"):
        return ""
    version = int(str(offset["reservoirVersion"])) - 1  # fully read, whatever the index says
    if version < 0 or not DeltaTable.isDeltaTable(spark, lakehouse.master_dataset):
        return ""
    row = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(lakehouse.master_dataset)
        .where(F.col("ingest_layer") == BATCH_LAYER)
        .agg(F.max("ingest_run").alias("epoch"))
        .first()
    )
    return "" if row is None or row["epoch"] is None else str(row["epoch"])


def _initial_offsets(spark: SparkSession, checkpoint: str) -> dict[int, int] | None:
    """The Kafka source's starting offsets, which Spark keeps in ``sources/<i>/0``."""
    base = local_path(checkpoint)
    if base is None:
        return None
    sources = base / "sources"
    for source in sorted(sources.iterdir()) if sources.is_dir() else []:
        text = read_text(spark, str(source / "0"))
        if text is None:
            continue
        for line in text.lstrip("\x00").splitlines():
            try:
                offsets = json.loads(line)
            except ValueError:
                continue
            if isinstance(offsets, dict) and len(offsets) == 1:
                partitions = next(iter(offsets.values()))
                if isinstance(partitions, dict):
                    return {int(p): int(o) for p, o in partitions.items()}
    return None


def offset_range(
    spark: SparkSession, checkpoint: str, batch_id: int
) -> tuple[dict[int, int], dict[int, int]] | None:
    """Micro-batch ``batch_id``'s Kafka offsets: (start, end) per partition (None: unknown)."""
    text = _offsets_file(spark, checkpoint, batch_id)
    ends = parse_offsets(text or "")
    if len(ends) != 1:
        return None
    end = next(iter(ends.values()))
    if batch_id == 0:
        start = _initial_offsets(spark, checkpoint)
    else:
        before = parse_offsets(_offsets_file(spark, checkpoint, batch_id - 1) or "")
        start = next(iter(before.values())) if len(before) == 1 else None
    if start is None:
        return None
    return {p: start.get(p, 0) for p in end}, end


def records_read(spark: SparkSession, checkpoint: str, batch_id: int) -> int | None:
    """How many Kafka records micro-batch ``batch_id`` read (None: unknown)."""
    span = offset_range(spark, checkpoint, batch_id)
    if span is None:
        return None
    start, end = span
    return sum(max(0, end[p] - start[p]) for p in end)


def _rebuilt(
    spark: SparkSession, lakehouse: Lakehouse, state: CheckpointState, stream: str, batch_id: int
) -> MicroBatchMetrics | None:
    span = offset_range(spark, state.location, batch_id)
    if span is None:
        return None
    start, end = span
    in_range = F.lit(False)
    for partition, last in end.items():
        in_range = in_range | (
            (F.col("source_partition") == partition)
            & (F.col("source_offset") >= start[partition])
            & (F.col("source_offset") < last)
        )
    topic = next(iter(state.topics)) if len(state.topics) == 1 else None
    rejects = {
        str(r["reason"]): int(r["records"])
        for r in spark.read.format("delta")
        .load(lakehouse.quarantine)
        .where(
            (F.col("ingest_layer") == SPEED_LAYER)
            & (F.col("ingest_run") == stream)
            & (F.col("source_name") == topic)
            & in_range
        )
        .groupBy("reason")
        .agg(F.count(F.lit(1)).alias("records"))
        .collect()
    }
    valid = (
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .where(
            (F.col("ingest_layer") == SPEED_LAYER)
            & (F.col("ingest_run") == stream)
            & (F.col("ingest_batch") == batch_id)
        )
        .count()
    )
    read = sum(max(0, end[p] - start[p]) for p in end)
    quarantined = sum(rejects.values())
    now = utcnow()
    return MicroBatchMetrics(
        stream=stream,
        batch_id=batch_id,
        batch_time=None,
        started_at=now,
        ended_at=now,
        input_rows=read,
        valid=valid,
        duplicates=read - valid - quarantined,
        quarantined=quarantined,
        kafka_lag=None,
        newest_message_at=None,
        rejected_by_reason=rejects,
    )


def recover_metrics(
    spark: SparkSession, lakehouse: Lakehouse, state: CheckpointState, *, stream: str
) -> list[int]:
    """Write the ``stream_metrics`` rows of committed micro-batches that lack one; returns
    their ids. Nothing is written when the table is missing or the gap is larger than
    :data:`MAX_UNWRITTEN` (the checkpoint check then refuses to start)."""
    committed = state.last_committed
    if committed is None or not DeltaTable.isDeltaTable(spark, lakehouse.stream_metrics):
        return []
    logged = last_metrics_batch(spark, lakehouse, stream)
    missing = list(range(-1 if logged is None else logged, committed + 1))[1:]
    if not missing or len(missing) > MAX_UNWRITTEN:
        return []
    rows = [_rebuilt(spark, lakehouse, state, stream, b) for b in missing]
    if any(r is None for r in rows):
        log.warning("cannot rebuild the metrics of micro-batches %s from the checkpoint", missing)
        return []
    append_metrics(spark, lakehouse.stream_metrics, [r for r in rows if r is not None])
    return missing
