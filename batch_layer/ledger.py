"""The ingest ledger: what each ingest epoch took from each source.

An epoch is planned (its sources' entries written as ``planned``), ingested, then committed
(the same entries written as ``ingested``). Entries are what the sources say
(:mod:`batch_layer.sources`): a kind, a name and a position only the source reads. What an
epoch took is never taken again, however often the job runs; an epoch interrupted by a crash
is still ``planned`` and the next run finishes exactly that epoch (same entries, same
processing time) before planning another.

Ledgers written before sources kept their own positions hold them in typed columns
(``size``, ``modified_at``, ``watermark_low``, ``watermark_high``); such rows are read as if
those columns were the position's JSON, which is the JSON the files and JDBC sources write.
The first write to such a ledger adds the ``position`` column (Delta schema evolution).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from batch_layer.sources.base import Entry, utc_text
from sales_core.lakehouse import LEDGER_SCHEMA, ensure_table

LEGACY_POSITION_COLUMNS = ("size", "modified_at", "watermark_low", "watermark_high")


@dataclass(frozen=True)
class IngestPlan:
    epoch: int
    planned_at: datetime
    entries: tuple[Entry, ...]

    @property
    def tag(self) -> str:
        """The ``ingest_run`` value of every master row this epoch inserts."""
        return f"batch-{self.epoch:08d}"

    def of(self, kind: str) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.source == kind)

    @property
    def summary(self) -> str:
        """Entries by source, e.g. ``file 3, http 1``."""
        counts = Counter(e.source for e in self.entries)
        return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))


@dataclass(frozen=True)
class LedgerState:
    last_epoch: int
    pending: IngestPlan | None
    # Entries of every ingested epoch, then of the pending one: what a new epoch must not take.
    taken: tuple[Entry, ...]

    def taken_from(self, kind: str) -> tuple[Entry, ...]:
        return tuple(e for e in self.taken if e.source == kind)

    @property
    def next_epoch(self) -> int:
        return max(self.last_epoch, self.pending.epoch if self.pending else 0) + 1


def entry_of(row: Mapping[str, Any]) -> Entry:
    """The entry a ledger row holds, whichever schema wrote it."""
    if row.get("position") is not None:
        return Entry(row["source"], row["name"], row["position"])
    legacy = {
        column: utc_text(value) if isinstance(value, datetime) else value
        for column in LEGACY_POSITION_COLUMNS
        if (value := row.get(column)) is not None
    }
    return Entry.of(row["source"], row["name"], legacy)


def read_ledger(spark: SparkSession, ledger_path: str) -> LedgerState:
    ensure_table(spark, ledger_path, LEDGER_SCHEMA)
    rows = [r.asDict() for r in spark.read.format("delta").load(ledger_path).collect()]
    ingested = {r["epoch"] for r in rows if r["state"] == "ingested"}
    planned = {r["epoch"] for r in rows if r["state"] == "planned"} - ingested
    pending = None
    if planned:
        epoch = min(planned)
        entries = [r for r in rows if r["state"] == "planned" and r["epoch"] == epoch]
        pending = IngestPlan(
            epoch=epoch,
            planned_at=entries[0]["recorded_at"],
            entries=tuple(entry_of(r) for r in sorted(entries, key=_order)),
        )
    taken = [r for r in rows if r["state"] == "ingested"]
    return LedgerState(
        last_epoch=max((r["epoch"] for r in rows), default=0),
        pending=pending,
        taken=tuple(entry_of(r) for r in sorted(taken, key=_order))
        + (pending.entries if pending else ()),
    )


def _order(row: Mapping[str, Any]) -> tuple[int, str, str]:
    return (row["epoch"], row["source"], row["name"])


def _entries(
    spark: SparkSession, plan: IngestPlan, state: str, run_id: str, recorded_at: datetime
) -> DataFrame:
    rows = [
        {
            "epoch": plan.epoch,
            "state": state,
            "source": e.source,
            "name": e.name,
            "position": e.position,
            "run_id": run_id,
            "recorded_at": recorded_at,
        }
        for e in plan.entries
    ]
    return spark.createDataFrame(rows, LEDGER_SCHEMA)


def record_plan(spark: SparkSession, ledger_path: str, plan: IngestPlan, run_id: str) -> None:
    (
        _entries(spark, plan, "planned", run_id, plan.planned_at)
        .write.format("delta")
        .mode("append")
        .option("mergeSchema", "true")  # a ledger of the older schema gains `position`
        .save(ledger_path)
    )


def record_ingested(
    spark: SparkSession, ledger_path: str, plan: IngestPlan, run_id: str, at: datetime
) -> None:
    # Idempotent per epoch: a retried commit of the same epoch is skipped by Delta.
    (
        _entries(spark, plan, "ingested", run_id, at)
        .write.format("delta")
        .mode("append")
        .option("mergeSchema", "true")
        .option("txnAppId", "lambda-sales-ledger")
        .option("txnVersion", plan.epoch)
        .save(ledger_path)
    )
