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

On a local lakehouse the ledger is read and written by delta-rs from the driver (a read or a
commit in milliseconds, where each of Spark's cost one to two seconds of every run);
elsewhere (object storage) by Spark. Both write the same Delta actions, the commit of an
epoch's ``ingested`` entries carrying the same application transaction, so either writer
continues a ledger the other wrote.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyspark.sql import SparkSession

from batch_layer.sources.base import Entry, utc_text
from sales_core.delta_log import local_path
from sales_core.lakehouse import LEDGER_SCHEMA, ensure_table
from sales_core.local_rows import local_frame

LEGACY_POSITION_COLUMNS = ("size", "modified_at", "watermark_low", "watermark_high")
# The application transaction of an epoch's ``ingested`` commit: its version is the epoch, so
# a retried commit of an epoch already recorded is skipped.
LEDGER_APP_ID = "lambda-sales-ledger"


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
    rows = _rows(spark, ledger_path)
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


def _rows(spark: SparkSession, ledger_path: str) -> list[dict[str, Any]]:
    """Every ledger row (timestamps as UTC instants with delta-rs, naive as PySpark's)."""
    if local_path(ledger_path) is not None:
        from deltalake import DeltaTable as RsDeltaTable

        return RsDeltaTable(ledger_path).to_pyarrow_table().to_pylist()
    return [r.asDict() for r in spark.read.format("delta").load(ledger_path).collect()]


def _order(row: Mapping[str, Any]) -> tuple[int, str, str]:
    return (row["epoch"], row["source"], row["name"])


def _entry_rows(
    plan: IngestPlan, state: str, run_id: str, recorded_at: datetime
) -> list[dict[str, Any]]:
    return [
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


def _append(
    spark: SparkSession, ledger_path: str, rows: list[dict[str, Any]], *, epoch: int | None = None
) -> None:
    """Append ``rows`` in one commit; with ``epoch``, as that epoch's application transaction
    (skipped when the ledger has recorded it already). A ledger of the older schema gains
    ``position`` (schema evolution)."""
    if local_path(ledger_path) is not None:
        import pyarrow as pa
        from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
        from pyspark.sql.pandas.types import to_arrow_schema

        table = DeltaTable(ledger_path)
        properties = None
        if epoch is not None:
            recorded = table.transaction_version(LEDGER_APP_ID)
            if recorded is not None and recorded >= epoch:
                return
            properties = CommitProperties(app_transactions=[Transaction(LEDGER_APP_ID, epoch)])
        write_deltalake(
            table,
            pa.Table.from_pylist(rows, schema=to_arrow_schema(LEDGER_SCHEMA, timezone="UTC")),
            mode="append",
            schema_mode="merge",
            commit_properties=properties,
        )
        return
    writer = (
        local_frame(spark, rows, LEDGER_SCHEMA)
        .write.format("delta")
        .mode("append")
        .option("mergeSchema", "true")
    )
    if epoch is not None:
        # Idempotent per epoch: a retried commit of the same epoch is skipped by Delta.
        writer = writer.option("txnAppId", LEDGER_APP_ID).option("txnVersion", epoch)
    writer.save(ledger_path)


def record_plan(spark: SparkSession, ledger_path: str, plan: IngestPlan, run_id: str) -> None:
    _append(spark, ledger_path, _entry_rows(plan, "planned", run_id, plan.planned_at))


def record_ingested(
    spark: SparkSession, ledger_path: str, plan: IngestPlan, run_id: str, at: datetime
) -> None:
    _append(spark, ledger_path, _entry_rows(plan, "ingested", run_id, at), epoch=plan.epoch)
