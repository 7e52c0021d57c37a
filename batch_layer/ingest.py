"""Ingest one epoch: read what its sources planned, validate, quarantine, insert new events.

Every write is idempotent for the epoch, so a run killed anywhere and run again converges:
the quarantine append carries Delta's ``txnAppId``/``txnVersion`` (skipped when already
committed), the master insert is a MERGE on ``event_id`` (a replay inserts nothing), and the
counts are derived afterwards from what the epoch's tag marks in the master dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import reduce

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from batch_layer.ledger import IngestPlan
from batch_layer.sources import Source
from sales_core.errors import IO_FAILURE_PACKAGES, SourceError, one_line, root_cause_class
from sales_core.faults import fault_point
from sales_core.handoff import BATCH_LAYER
from sales_core.lakehouse import Lakehouse, ensure_master_dataset, ensure_quarantine
from sales_core.master import insert_new_events, with_ingest_metadata
from sales_core.quality import QualityReport, quality_report
from sales_core.rules import dedupe_events, quarantine_records, valid_events, validate

log = logging.getLogger(__name__)


@dataclass
class IngestCounts:
    """What an epoch read, and where each record ended (CONTRACT §2)."""

    records_read: int = 0
    valid: int = 0
    duplicates: int = 0
    quarantined: int = 0
    defaulted: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    records_by_source: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: IngestCounts) -> IngestCounts:
        def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in sorted(set(a) | set(b))}

        return IngestCounts(
            self.records_read + other.records_read,
            self.valid + other.valid,
            self.duplicates + other.duplicates,
            self.quarantined + other.quarantined,
            self.defaulted + other.defaulted,
            add(self.rejected_by_reason, other.rejected_by_reason),
            add(self.records_by_source, other.records_by_source),
        )

    @property
    def balanced(self) -> bool:
        return self.records_read == self.valid + self.duplicates + self.quarantined

    def quality(self) -> QualityReport:
        return quality_report(
            records=self.records_read,
            rejected_by_reason=self.rejected_by_reason,
            defaulted=self.defaulted,
            duplicates=self.duplicates,
        )


def read_epoch_sources(
    spark: SparkSession, plan: IngestPlan, sources: Mapping[str, Source]
) -> DataFrame:
    """Envelopes of every record of the epoch: each source reads its own entries."""
    parts = []
    for kind in sorted({e.source for e in plan.entries}):
        source = sources.get(kind)
        if source is None:
            raise ValueError(
                f"epoch {plan.epoch} includes {kind} entries but that source is not enabled "
                f"(sources.{kind}); enable it to finish the epoch"
            )
        parts.append(source.read(spark, plan.of(kind), epoch=plan.epoch))
    return reduce(DataFrame.unionByName, parts)


def _read_summary(validated: DataFrame, plan: IngestPlan) -> list[Row]:
    """Records per (source, reason): the first action, so the one that reads the sources.

    Raises:
        SourceError: a source could not be read (a landing file without read permission or
            gone since it was listed, the database refusing the read).
    """
    try:
        return (
            validated.groupBy("source", "reject_reason")
            .agg(
                F.count(F.lit(1)).alias("records"),
                F.sum(
                    F.when(F.col("reject_reason").isNull() & (F.col("defaulted") > 0), 1).otherwise(
                        0
                    )
                ).alias("defaulted"),
            )
            .collect()
        )
    except Exception as exc:
        if (root_cause_class(exc) or "").startswith(IO_FAILURE_PACKAGES):
            raise SourceError(f"cannot read the sources of {plan.tag}: {one_line(exc)}") from None
        raise


def ingest_epoch(
    spark: SparkSession,
    lakehouse: Lakehouse,
    plan: IngestPlan,
    envelopes: DataFrame,
    *,
    conflict_retries: int,
) -> IngestCounts:
    """Validate the epoch's envelopes and write quarantine and master rows (idempotently)."""
    ensure_master_dataset(spark, lakehouse)
    ensure_quarantine(spark, lakehouse)
    validated = envelopes.transform(validate(now=plan.planned_at)).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        summary = _read_summary(validated, plan)

        (
            validated.transform(quarantine_records(plan.planned_at))
            .withColumns({"ingest_layer": F.lit(BATCH_LAYER), "ingest_run": F.lit(plan.tag)})
            .write.format("delta")
            .mode("append")
            .option("txnAppId", "lambda-sales-batch-quarantine")
            .option("txnVersion", plan.epoch)
            .save(lakehouse.quarantine)
        )
        fault_point("batch.after_quarantine")

        new_rows = (
            valid_events(validated)
            .transform(dedupe_events())
            .drop("copies")
            .transform(
                with_ingest_metadata(
                    layer=BATCH_LAYER, run=plan.tag, batch=None, ingested_at=plan.planned_at
                )
            )
        )
        insert_new_events(spark, lakehouse.master_dataset, new_rows, retries=conflict_retries)
        fault_point("batch.after_master_insert")
    finally:
        validated.unpersist()

    counts = IngestCounts()
    for row in summary:
        counts.records_read += row["records"]
        counts.records_by_source[row["source"]] = (
            counts.records_by_source.get(row["source"], 0) + row["records"]
        )
        if row["reject_reason"] is None:
            counts.defaulted += row["defaulted"]
        else:
            counts.quarantined += row["records"]
            counts.rejected_by_reason[row["reject_reason"]] = (
                counts.rejected_by_reason.get(row["reject_reason"], 0) + row["records"]
            )
    # Derived from the master dataset, so a rerun after a crash counts the same.
    counts.valid = (
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .where(F.col("ingest_run") == plan.tag)
        .count()
    )
    counts.duplicates = counts.records_read - counts.quarantined - counts.valid
    log.info(
        "epoch %d: read %d, valid %d, duplicates %d, quarantined %d",
        plan.epoch,
        counts.records_read,
        counts.valid,
        counts.duplicates,
        counts.quarantined,
    )
    return counts
