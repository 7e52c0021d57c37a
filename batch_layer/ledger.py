"""The ingest ledger: which landing files and database rows each ingest epoch took.

An epoch is planned (files and database range written as ``planned``), ingested, then
committed (the same entries written as ``ingested``). A file is ingested once, however often
the job runs; an epoch interrupted by a crash is still ``planned`` and the next run finishes
exactly that epoch (same files, same range, same processing time) before planning another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch_layer.landing import LandingFile
from sales_core.lakehouse import LEDGER_SCHEMA, ensure_table


@dataclass(frozen=True)
class JdbcRange:
    table: str
    low: str | None
    high: str


@dataclass(frozen=True)
class IngestPlan:
    epoch: int
    planned_at: datetime
    files: tuple[LandingFile, ...]
    jdbc: JdbcRange | None

    @property
    def tag(self) -> str:
        """The ``ingest_run`` value of every master row this epoch inserts."""
        return f"batch-{self.epoch:08d}"

    @property
    def empty(self) -> bool:
        return not self.files and self.jdbc is None


@dataclass(frozen=True)
class LedgerState:
    ingested_files: frozenset[tuple[str, int, datetime]]
    last_epoch: int
    pending: IngestPlan | None
    jdbc_high: dict[str, str]


def read_ledger(spark: SparkSession, ledger_path: str) -> LedgerState:
    ensure_table(spark, ledger_path, LEDGER_SCHEMA)
    rows = spark.read.format("delta").load(ledger_path).collect()
    ingested_epochs = {r["epoch"] for r in rows if r["state"] == "ingested"}
    planned = [r for r in rows if r["state"] == "planned" and r["epoch"] not in ingested_epochs]
    pending = None
    if planned:
        epoch = min(r["epoch"] for r in planned)
        entries = [r for r in planned if r["epoch"] == epoch]
        jdbc_rows = [r for r in entries if r["source"] == "jdbc"]
        pending = IngestPlan(
            epoch=epoch,
            planned_at=entries[0]["recorded_at"],
            files=tuple(
                LandingFile(r["name"], r["size"], r["modified_at"])
                for r in sorted(entries, key=lambda r: r["name"])
                if r["source"] == "file"
            ),
            jdbc=JdbcRange(
                jdbc_rows[0]["name"], jdbc_rows[0]["watermark_low"], jdbc_rows[0]["watermark_high"]
            )
            if jdbc_rows
            else None,
        )
    jdbc_high: dict[str, str] = {}
    for r in sorted(
        (r for r in rows if r["state"] == "ingested" and r["source"] == "jdbc"),
        key=lambda r: r["epoch"],
    ):
        jdbc_high[r["name"]] = r["watermark_high"]
    return LedgerState(
        ingested_files=frozenset(
            (r["name"], r["size"], r["modified_at"])
            for r in rows
            if r["state"] == "ingested" and r["source"] == "file"
        ),
        last_epoch=max((r["epoch"] for r in rows), default=0),
        pending=pending,
        jdbc_high=jdbc_high,
    )


def new_files(state: LedgerState, listing: Sequence[LandingFile]) -> list[LandingFile]:
    """Files of the listing that no epoch has taken (a rewritten file counts as new)."""
    taken = set(state.ingested_files)
    if state.pending:
        taken |= {(f.path, f.size, f.modified_at) for f in state.pending.files}
    return [f for f in listing if f.format and (f.path, f.size, f.modified_at) not in taken]


def _entries(spark: SparkSession, plan: IngestPlan, state: str, run_id: str, recorded_at: datetime):  # type: ignore[no-untyped-def]
    rows = [
        {
            "epoch": plan.epoch,
            "state": state,
            "source": "file",
            "name": f.path,
            "size": f.size,
            "modified_at": f.modified_at,
            "watermark_low": None,
            "watermark_high": None,
            "run_id": run_id,
            "recorded_at": recorded_at,
        }
        for f in plan.files
    ]
    if plan.jdbc:
        rows.append(
            {
                "epoch": plan.epoch,
                "state": state,
                "source": "jdbc",
                "name": plan.jdbc.table,
                "size": None,
                "modified_at": None,
                "watermark_low": plan.jdbc.low,
                "watermark_high": plan.jdbc.high,
                "run_id": run_id,
                "recorded_at": recorded_at,
            }
        )
    return spark.createDataFrame(rows, LEDGER_SCHEMA)


def record_plan(spark: SparkSession, ledger_path: str, plan: IngestPlan, run_id: str) -> None:
    _entries(spark, plan, "planned", run_id, plan.planned_at).write.format("delta").mode(
        "append"
    ).save(ledger_path)


def record_ingested(
    spark: SparkSession, ledger_path: str, plan: IngestPlan, run_id: str, at: datetime
) -> None:
    # Idempotent per epoch: a retried commit of the same epoch is skipped by Delta.
    (
        _entries(spark, plan, "ingested", run_id, at)
        .write.format("delta")
        .mode("append")
        .option("txnAppId", "lambda-sales-ledger")
        .option("txnVersion", plan.epoch)
        .save(ledger_path)
    )


def ingested_file_count(spark: SparkSession, ledger_path: str) -> int:
    return spark.read.format("delta").load(ledger_path).where(F.col("state") == "ingested").count()
