"""Reconciliation: what the speed layer counted against what the batch recomputed.

When a batch publishes a generation whose hand-off mark absorbs speed micro-batches (ids in
``(previous mark, new mark]``), the serving layer stops adding their increments and serves the
batch's numbers instead. Both describe the same events, so they must agree exactly: per view,
the increments of those micro-batches merged (what users were shown until now) must equal the
view computed over exactly the master rows those micro-batches inserted, read from the
snapshot the batch used. A difference means the two code paths or the tables drifted apart
(a bug, a lost or replayed write, a hand-edited table): it is recorded in the run record and
alerted on; it never blocks the publish, whose numbers come from the master dataset.

Only micro-batches that finished (their ``stream_metrics`` row, a micro-batch's last write,
exists) are compared: a micro-batch still running, or killed between its master insert and
its increments, has not shown its events to anyone yet (see ``pending_batches``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from functools import reduce
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sales_core.config import Config
from sales_core.handoff import SPEED_LAYER
from sales_core.lakehouse import Lakehouse, read_view_increments
from sales_core.local_rows import local_frame
from sales_core.views import VIEWS, ViewDef, compute_view, merge_partials

log = logging.getLogger(__name__)
# The micro-batches a reconciliation compares (stream, batch id).
_PAIRS = T.StructType(
    [T.StructField("stream", T.StringType()), T.StructField("batch_id", T.LongType())]
)


@dataclass(frozen=True)
class ViewDrift:
    """Speed minus batch for one view over the absorbed events."""

    differing_groups: int
    events_diff: int
    revenue_diff: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {
            "differing_groups": self.differing_groups,
            "events_diff": self.events_diff,
            "revenue_diff": str(self.revenue_diff),
        }


@dataclass(frozen=True)
class Reconciliation:
    """The comparison for one publish.

    Attributes:
        absorbed: per stream, the micro-batch ids the new mark absorbed: ``(after, through]``.
        compared_batches: per stream, how many of those micro-batches were compared.
        pending_batches: per stream, absorbed micro-batch ids not compared (not finished).
        views: per view, the drift (all zero when the layers agree).
    """

    absorbed: dict[str, tuple[int, int]]
    compared_batches: dict[str, int] = field(default_factory=dict)
    pending_batches: dict[str, list[int]] = field(default_factory=dict)
    views: dict[str, ViewDrift] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        return any(
            v.differing_groups or v.events_diff or v.revenue_diff for v in self.views.values()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "absorbed": {s: {"after": a, "through": t} for s, (a, t) in self.absorbed.items()},
            "compared_batches": self.compared_batches,
            "pending_batches": self.pending_batches,
            "views": {name: v.as_dict() for name, v in self.views.items()},
            "drift": self.drift,
        }


def absorbed_ranges(
    previous: dict[str, int], current: dict[str, int]
) -> dict[str, tuple[int, int]]:
    """Per stream, ``(previous mark, new mark)`` where the new mark moved on (-1: no mark yet)."""
    return {
        s: (previous.get(s, -1), m) for s, m in sorted(current.items()) if m > previous.get(s, -1)
    }


def _in_ranges(stream_col: str, batch_col: str, ranges: dict[str, tuple[int, int]]):  # type: ignore[no-untyped-def]
    return reduce(
        lambda a, b: a | b,
        [
            (F.col(stream_col) == s) & (F.col(batch_col) > after) & (F.col(batch_col) <= through)
            for s, (after, through) in ranges.items()
        ],
    )


def compare_views(view: ViewDef, speed: DataFrame, batch: DataFrame) -> DataFrame:
    """One row: groups whose measures differ and the event / revenue totals speed minus batch."""
    s = speed.select(*view.key_names, *[F.col(m.name).alias(f"s_{m.name}") for m in view.measures])
    b = batch.select(*view.key_names, *[F.col(m.name).alias(f"b_{m.name}") for m in view.measures])
    joined = s.join(b, on=list(view.key_names), how="full_outer")
    differs = reduce(
        lambda x, y: x | y,
        [~F.col(f"s_{m.name}").eqNullSafe(F.col(f"b_{m.name}")) for m in view.measures],
    )
    return joined.agg(
        F.lit(view.name).alias("view"),
        F.count(F.when(differs, 1)).alias("differing_groups"),
        (F.coalesce(F.sum("s_events"), F.lit(0)) - F.coalesce(F.sum("b_events"), F.lit(0)))
        .cast("long")
        .alias("events_diff"),
        (F.coalesce(F.sum("s_revenue"), F.lit(0)) - F.coalesce(F.sum("b_revenue"), F.lit(0)))
        .cast("decimal(20,2)")
        .alias("revenue_diff"),
    )


def reconcile_handoff(
    spark: SparkSession,
    lakehouse: Lakehouse,
    *,
    master_version: int,
    previous: dict[str, int],
    current: dict[str, int],
) -> Reconciliation:
    """Compare, per view, the absorbed speed increments with the batch's view of their events."""
    ranges = absorbed_ranges(previous, current)
    if not ranges:
        return Reconciliation({})
    snapshot = (
        spark.read.format("delta")
        .option("versionAsOf", master_version)
        .load(lakehouse.master_dataset)
    )
    absorbed_rows = snapshot.where(
        (F.col("ingest_layer") == SPEED_LAYER) & _in_ranges("ingest_run", "ingest_batch", ranges)
    )
    in_master = {
        (r["ingest_run"], int(r["ingest_batch"]))
        for r in absorbed_rows.select("ingest_run", "ingest_batch").distinct().collect()
    }
    finished: set[tuple[str, int]] = set()
    if DeltaTable.isDeltaTable(spark, lakehouse.stream_metrics):
        finished = {
            (r["stream"], int(r["batch_id"]))
            for r in spark.read.format("delta")
            .load(lakehouse.stream_metrics)
            .where(_in_ranges("stream", "batch_id", ranges))
            .select("stream", "batch_id")
            .distinct()
            .collect()
        }
    compared = sorted(in_master & finished)
    result = Reconciliation(
        ranges,
        {s: sum(1 for stream, _ in compared if stream == s) for s in ranges},
        {s: sorted(b for stream, b in in_master - finished if stream == s) for s in ranges},
    )
    if not compared:
        return result
    # The increments are read after the metrics: a finished micro-batch's increments are there.
    pairs = local_frame(spark, compared, _PAIRS)
    events = absorbed_rows.join(
        F.broadcast(pairs.withColumnsRenamed({"stream": "ingest_run", "batch_id": "ingest_batch"})),
        on=["ingest_run", "ingest_batch"],
    )
    summaries = []
    for name, view in VIEWS.items():
        increments = (
            read_view_increments(spark, lakehouse, name)
            .join(F.broadcast(pairs), on=["stream", "batch_id"])
            .select(*view.columns)
            .transform(merge_partials(view))
        )
        summaries.append(compare_views(view, increments, events.transform(compute_view(view))))
    rows = reduce(DataFrame.unionByName, summaries).collect()
    views = {
        r["view"]: ViewDrift(
            int(r["differing_groups"]), int(r["events_diff"]), Decimal(r["revenue_diff"])
        )
        for r in rows
    }
    return Reconciliation(result.absorbed, result.compared_batches, result.pending_batches, views)


def reconciliation_drift_alert(config: Config, drift: Reconciliation) -> None:
    """Tell someone that the speed and batch layers disagreed on the events a publish absorbed.

    Logs a warning and sends a ``reconciliation_drift`` webhook alert (``[alerts]``; never
    raises, so the publish it follows stands).
    """
    from sales_core.alerts import RECONCILIATION_DRIFT, notify

    drifted = {
        name: v.as_dict()
        for name, v in drift.views.items()
        if v.differing_groups or v.events_diff or v.revenue_diff
    }
    log.warning(
        "reconciliation drift: the speed layer and the batch disagree on absorbed micro-batches %s: %s",
        {s: f"({a}, {t}]" for s, (a, t) in drift.absorbed.items()},
        drifted,
        extra={
            "fields": {
                "event": "reconciliation_drift",
                "lakehouse": config.lakehouse.root,
                "views": drifted,
            }
        },
    )
    notify(
        config,
        RECONCILIATION_DRIFT,
        f"speed and batch layers disagree on {len(drifted)} view(s) of the absorbed micro-batches",
        {"absorbed": {s: [a, t] for s, (a, t) in drift.absorbed.items()}, "views": drifted},
    )
