"""The quarantine as an operator acts on it: list and show rejected records, replay them.

The quarantine table is append-only: a rejected record stays there as it was received,
whatever happens to it later. A **replay** reads quarantined records again, validates them
with the rules of this release at this moment's processing time (a rule fixed since, a
producer's clock that was ahead and no longer is), and ingests the ones that now pass through
the normal path: de-duplicated by ``event_id`` against the whole master dataset (an
insert-only MERGE, so an event that arrived since through another source counts once), then
a new generation of the views is published. Each replayed quarantine row gets one row in
``meta/quarantine_replays`` (its ``quarantine_id``, the event, ``ingested`` or
``duplicate``, the master row's ``ingest_run`` and the replaying run): that is the mark a
second replay skips, and the lineage from a master row back to its quarantine row. A replay
that inserts takes the next ingest epoch of the ledger (an entry of source ``replay`` named
after its run): its master rows carry that epoch's tag as ``ingest_run`` (``batch-00000042``,
so the speed layer orders them with the batch's epochs, as its de-duplication needs) and the
position of the record as first received.

A record that still fails is left as it is, unmarked (a later replay looks at it again). A
CSV line needs its file's header to be read again; when the file cannot be read any more
its lines are counted as ``unreplayable`` and left alone. Every record a replay considers is
counted once: ``records read = valid + duplicates + quarantined`` as for a batch run.

A replay refuses to start while a batch run is running or an interrupted batch epoch waits
to be finished (both take ledger epochs and publish generations): run it after the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from typing import Any

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from batch_layer.job import publish_views, record_failure, table_versions
from batch_layer.ledger import IngestPlan, read_ledger, record_ingested
from batch_layer.sources.base import Entry
from batch_layer.sources.files import UNDECODABLE, csv_headers, flag_undecodable
from sales_core.config import Config
from sales_core.errors import PipelineError
from sales_core.events import (
    ENVELOPE_COLUMNS,
    POSITION_FIELDS,
    parse_csv_records,
    parse_json_records,
)
from sales_core.handoff import BATCH_LAYER
from sales_core.lakehouse import (
    QUARANTINE_REPLAYS_SCHEMA,
    Lakehouse,
    ensure_master_dataset,
    ensure_table,
)
from sales_core.master import insert_new_events, with_conflict_retry, with_ingest_metadata
from sales_core.rules import dedupe_events, valid_events, validate
from sales_core.runs import RunRecord, new_run_id, save_run, start_run, utcnow

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

REPLAY_JOB = "replay"
# The source of a replay's ingest ledger entry.
REPLAY_SOURCE = "replay"
# What identifies a quarantine row: where the record came from, what it was, why and when it
# was rejected, and by which run.
_ID_COLUMNS = (*POSITION_FIELDS, "raw_record", "reason", "ingest_run")
#: The columns ``lambda-sales quarantine list`` shows, in order.
LIST_COLUMNS = (
    "quarantine_id",
    "rejected_at",
    "reason",
    "source",
    "source_name",
    "source_partition",
    "source_offset",
    "replayed_by",
)
_KEEP = ("quarantine_id", "original_reason")


def quarantine_id() -> Column:
    """A quarantine row's identity: 16 hex digits of a SHA-256 over what identifies it."""
    identity = F.to_json(
        F.struct(
            *[F.col(c) for c in _ID_COLUMNS],
            F.unix_micros("rejected_at").alias("rejected_at"),
        )
    )
    return F.substring(F.sha2(identity, 256), 1, 16)


@dataclass(frozen=True)
class QuarantineFilter:
    """Which quarantine rows: any of ``reasons``, any of ``sources`` (kafka, file, jdbc,
    http), rejected at or after ``since`` and before ``until`` (empty: no condition)."""

    reasons: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def apply(self, rows: DataFrame) -> DataFrame:
        if self.reasons:
            rows = rows.where(F.col("reason").isin(*self.reasons))
        if self.sources:
            rows = rows.where(F.col("source").isin(*self.sources))
        if self.since is not None:
            rows = rows.where(F.col("rejected_at") >= F.lit(self.since))
        if self.until is not None:
            rows = rows.where(F.col("rejected_at") < F.lit(self.until))
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "reasons": list(self.reasons),
            "sources": list(self.sources),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


def read_quarantine(
    spark: SparkSession, lakehouse: Lakehouse, where: QuarantineFilter = QuarantineFilter()
) -> DataFrame | None:
    """The quarantine rows ``where`` selects, with ``quarantine_id`` and, for a replayed row,
    ``replayed_by`` (the run), ``replay_outcome`` and ``replayed_event_id`` (None: nothing
    quarantined yet)."""
    if not DeltaTable.isDeltaTable(spark, lakehouse.quarantine):
        return None
    rows = where.apply(spark.read.format("delta").load(lakehouse.quarantine)).withColumn(
        "quarantine_id", quarantine_id()
    )
    if not DeltaTable.isDeltaTable(spark, lakehouse.quarantine_replays):
        return rows.withColumns(
            {
                "replayed_by": F.lit(None).cast("string"),
                "replay_outcome": F.lit(None).cast("string"),
                "replayed_event_id": F.lit(None).cast("string"),
            }
        )
    marks = (
        spark.read.format("delta")
        .load(lakehouse.quarantine_replays)
        .select(
            "quarantine_id",
            F.col("replay_run").alias("replayed_by"),
            F.col("outcome").alias("replay_outcome"),
            F.col("event_id").alias("replayed_event_id"),
        )
    )
    return rows.join(marks, "quarantine_id", "left")


def list_quarantine(
    spark: SparkSession, lakehouse: Lakehouse, where: QuarantineFilter, limit: int
) -> list[dict[str, Any]] | None:
    """The ``limit`` latest rejected records ``where`` selects, as :data:`LIST_COLUMNS` rows
    (None: nothing quarantined yet)."""
    rows = read_quarantine(spark, lakehouse, where)
    if rows is None:
        return None
    ordered = rows.orderBy(
        F.col("rejected_at").desc(), "source", "source_name", "source_partition", "source_offset"
    )
    return [r.asDict() for r in ordered.select(*LIST_COLUMNS).limit(limit).collect()]


def show_quarantined(
    spark: SparkSession, lakehouse: Lakehouse, record_id: str
) -> list[dict[str, Any]]:
    """Every column of the quarantine row(s) with this ``quarantine_id`` (a prefix of at least
    six digits is enough when it names one row)."""
    if len(record_id) < 6:
        raise PipelineError(f"quarantine id {record_id!r}: give at least 6 of its 16 hex digits")
    rows = read_quarantine(spark, lakehouse)
    if rows is None:
        return []
    found = rows.where(F.col("quarantine_id").startswith(record_id.lower())).limit(20).collect()
    ids = {r["quarantine_id"] for r in found}
    if len(ids) > 1:
        raise PipelineError(
            f"quarantine id {record_id!r} names {len(ids)} records ({', '.join(sorted(ids))}); "
            "give more digits"
        )
    return [r.asDict() for r in found]


# ------------------------------------------------------------------ replay


def _is_csv() -> Column:
    return (F.col("source") == "file") & F.lower(F.col("source_name")).endswith(".csv")


def _as_envelopes(spark: SparkSession, candidates: DataFrame) -> tuple[DataFrame, dict[str, int]]:
    """The candidates as envelopes (plus :data:`_KEEP`), read as their source read them; and
    the count of those that cannot be read again, by cause."""
    positioned = candidates.select(
        *POSITION_FIELDS,
        F.col("raw_record").alias("value"),
        "quarantine_id",
        F.col("reason").alias("original_reason"),
    )
    files = F.col("source") == "file"
    json_rows = (
        positioned.where(~_is_csv())
        .transform(parse_json_records("value", keep=_KEEP))
        # a line a file delivered not as UTF-8 stays malformed, as when it was read
        .withColumn(
            "malformed",
            F.col("malformed")
            | (files & F.coalesce(F.col("raw_record").contains(UNDECODABLE), F.lit(False))),
        )
    )
    parts = [json_rows]
    unreplayable: dict[str, int] = {}
    csv_rows = positioned.where(_is_csv())
    paths = [r["source_name"] for r in csv_rows.select("source_name").distinct().collect()]
    headers: dict[str, tuple[str, ...]] = {}
    for path in paths:
        try:
            headers.update(csv_headers(spark, [path]))
        except PipelineError as exc:
            log.warning("CSV lines of %s cannot be replayed: %s", path, exc)
    lost = [p for p in paths if p not in headers]
    if lost:
        unreplayable["csv_header_unreadable"] = csv_rows.where(
            F.col("source_name").isin(*lost)
        ).count()
    by_header: dict[tuple[str, ...], list[str]] = {}
    for path, header in headers.items():
        by_header.setdefault(header, []).append(path)
    for header, names in by_header.items():
        parts.append(
            csv_rows.where(F.col("source_name").isin(*names))
            .transform(parse_csv_records(header, "value", keep=_KEEP))
            .transform(flag_undecodable)
        )
    envelopes = reduce(DataFrame.unionByName, [p.select(*ENVELOPE_COLUMNS, *_KEEP) for p in parts])
    return envelopes, unreplayable


def _same_position(left: str, right: str) -> Column:
    return reduce(
        Column.__and__,
        [F.col(f"{left}.{c}").eqNullSafe(F.col(f"{right}.{c}")) for c in POSITION_FIELDS],
    )


def _mark_replayed(
    spark: SparkSession,
    lakehouse: Lakehouse,
    passing: DataFrame,
    replay_tags: list[str],
    run_id: str,
    at: datetime,
) -> None:
    """One row per replayed quarantine row: ``ingested`` when the master dataset holds the
    event from this very record (by its position, inserted by a replay's epoch in
    ``replay_tags``: also after a crashed replay's rerun), else ``duplicate``. Insert-only on
    ``quarantine_id``: idempotent."""
    master = (
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .select("event_id", "ingest_run", *POSITION_FIELDS)
    )
    joined = passing.alias("q").join(master.alias("m"), F.col("q.event_id") == F.col("m.event_id"))
    ingested = _same_position("q", "m") & F.col("m.ingest_run").isin(*replay_tags)
    marks = joined.select(
        F.col("q.quarantine_id").alias("quarantine_id"),
        F.col("q.event_id").alias("event_id"),
        F.when(ingested, "ingested").otherwise("duplicate").alias("outcome"),
        F.when(ingested, F.col("m.ingest_run")).alias("ingest_run"),
        F.lit(run_id).alias("replay_run"),
        F.lit(at).cast("timestamp").alias("replayed_at"),
    ).dropDuplicates(["quarantine_id"])
    ensure_table(spark, lakehouse.quarantine_replays, QUARANTINE_REPLAYS_SCHEMA)

    def merge() -> None:
        (
            DeltaTable.forPath(spark, lakehouse.quarantine_replays)
            .alias("r")
            .merge(marks.alias("n"), "r.quarantine_id = n.quarantine_id")
            .whenNotMatchedInsertAll()
            .execute()
        )

    with_conflict_retry(merge, what="mark replayed quarantine rows")


def replay_quarantine(
    spark: SparkSession,
    config: Config,
    where: QuarantineFilter = QuarantineFilter(),
    *,
    dry_run: bool = False,
    progress: Progress = log.info,
) -> RunRecord:
    """Replay the quarantined records ``where`` selects that no replay took yet; returns the
    run's record (saved in ``pipeline_runs`` unless ``dry_run``, which writes nothing)."""
    lakehouse = Lakehouse(config.lakehouse.root)
    record = RunRecord(new_run_id(REPLAY_JOB), REPLAY_JOB, utcnow())
    if not dry_run:
        _check_batch_idle(spark, lakehouse)
        start_run(spark, lakehouse.pipeline_runs, record)
    try:
        rows = read_quarantine(spark, lakehouse, where)
        record.details = {"filter": where.as_dict(), "dry_run": dry_run}
        if rows is None:  # nothing quarantined yet
            _count(record, {}, {}, 0)
        else:
            candidates = rows.where(F.col("replayed_by").isNull())
            _replay(spark, config, lakehouse, record, candidates, dry_run, progress)
        record.status, record.ended_at = "succeeded", utcnow()
        if not dry_run:
            record.delta_versions = table_versions(spark, lakehouse)
            save_run(spark, lakehouse.pipeline_runs, record)
        return record
    except Exception as exc:
        if not dry_run:
            record_failure(spark, config, lakehouse, record, exc, what="quarantine replay")
        raise


def _check_batch_idle(spark: SparkSession, lakehouse: Lakehouse) -> None:
    """Refuse while a batch run is running or its interrupted epoch waits to be finished."""
    state = read_ledger(spark, lakehouse.ingest_ledger)
    if state.pending is not None:
        raise PipelineError(
            f"ingest epoch {state.pending.epoch} was interrupted and is not finished: run "
            "`lambda-sales batch` first (it finishes that epoch), then the replay"
        )
    if DeltaTable.isDeltaTable(spark, lakehouse.pipeline_runs):
        running = (
            spark.read.format("delta")
            .load(lakehouse.pipeline_runs)
            .where((F.col("job") == "batch") & (F.col("status") == "running"))
            .select("run_id")
            .collect()
        )
        if running:
            raise PipelineError(
                f"batch run {running[0]['run_id']} is running (or was killed: the next batch "
                "run marks it interrupted); replay after the batch"
            )


def _take_epoch(
    spark: SparkSession, lakehouse: Lakehouse, record: RunRecord, now: datetime
) -> tuple[IngestPlan, list[str]]:
    """The next ingest epoch, recorded in the ledger for this replay before anything is
    inserted (so no batch run takes it too; an epoch a crashed replay took and filled with
    nothing is harmless), and the tags of every replay epoch so far."""
    state = read_ledger(spark, lakehouse.ingest_ledger)
    entry = Entry.of(REPLAY_SOURCE, record.run_id, {"run_id": record.run_id})
    plan = IngestPlan(state.next_epoch, now, (entry,))
    record_ingested(spark, lakehouse.ingest_ledger, plan, record.run_id, now)
    record.details["epoch"] = plan.epoch
    replay_epochs = {
        r["epoch"]
        for r in spark.read.format("delta")
        .load(lakehouse.ingest_ledger)
        .where(F.col("source") == REPLAY_SOURCE)
        .select("epoch")
        .collect()
    }
    return plan, [IngestPlan(e, now, ()).tag for e in sorted(replay_epochs)]


def _replay(
    spark: SparkSession,
    config: Config,
    lakehouse: Lakehouse,
    record: RunRecord,
    candidates: DataFrame,
    dry_run: bool,
    progress: Progress,
) -> None:
    now = utcnow()
    envelopes, unreplayable = _as_envelopes(spark, candidates)
    validated = envelopes.transform(validate(now=now, keep=_KEEP)).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        outcome = (
            validated.groupBy("original_reason", "reject_reason")
            .agg(F.count(F.lit(1)).alias("records"))
            .collect()
        )
        passed = sum(r["records"] for r in outcome if r["reject_reason"] is None)
        progress(
            f"{passed} of {sum(r['records'] for r in outcome) + sum(unreplayable.values())} "
            "quarantined records pass the rules now"
        )
        valid = 0
        if passed and dry_run:  # what would be new: passing events the master lacks
            ensure_master_dataset(spark, lakehouse)
            valid = (
                valid_events(validated)
                .select("event_id")
                .distinct()
                .join(
                    spark.read.format("delta").load(lakehouse.master_dataset),
                    "event_id",
                    "left_anti",
                )
                .count()
            )
        elif passed:
            ensure_master_dataset(spark, lakehouse)
            plan, replay_tags = _take_epoch(spark, lakehouse, record, now)
            tag = plan.tag
            new_rows = (
                valid_events(validated)
                .transform(dedupe_events())
                .drop("copies")
                .transform(
                    with_ingest_metadata(layer=BATCH_LAYER, run=tag, batch=None, ingested_at=now)
                )
            )
            insert_new_events(
                spark,
                lakehouse.master_dataset,
                new_rows,
                retries=config.batch.max_conflict_retries,
            )
            passing = validated.where(F.col("reject_reason").isNull()).select(
                "quarantine_id", "event_id", *POSITION_FIELDS
            )
            _mark_replayed(spark, lakehouse, passing, replay_tags, record.run_id, now)
            valid = (
                spark.read.format("delta")
                .load(lakehouse.master_dataset)
                .where(F.col("ingest_run") == tag)
                .count()
            )
    finally:
        validated.unpersist()
    _count(
        record,
        {r["original_reason"]: r["records"] for r in outcome if r["reject_reason"] is None},
        _by_reason(outcome),
        valid,
        unreplayable,
    )
    if valid and not dry_run:
        publish_views(spark, config, lakehouse, record, progress)


def _by_reason(outcome: Sequence[Any]) -> dict[str, int]:
    still: dict[str, int] = {}
    for r in outcome:
        if r["reject_reason"] is not None:
            still[r["reject_reason"]] = still.get(r["reject_reason"], 0) + r["records"]
    return still


def _count(
    record: RunRecord,
    passed_by_reason: dict[str, int],
    still_rejected: dict[str, int],
    valid: int,
    unreplayable: dict[str, int] | None = None,
) -> None:
    """The run's counts as a batch run's: read = valid + duplicates + quarantined."""
    unreplayable = unreplayable or {}
    passed = sum(passed_by_reason.values())
    record.valid = valid
    record.duplicates = passed - valid
    record.quarantined = sum(still_rejected.values()) + sum(unreplayable.values())
    record.records_read = passed + record.quarantined
    record.details.update(
        {
            "passed_by_original_reason": dict(sorted(passed_by_reason.items())),
            "rejected_by_reason": dict(sorted(still_rejected.items())),
            "unreplayable": dict(sorted(unreplayable.items())),
        }
    )


def replay_summary(record: RunRecord) -> list[tuple[str, str]]:
    """What a replay reports: (item, value) pairs; its counts add up as a batch run's."""
    details = record.details or {}
    items: list[tuple[str, Any]] = [
        ("run", record.run_id if not details.get("dry_run") else "(dry run: nothing written)"),
        ("status", record.status),
        ("records considered", record.records_read),
        ("  valid now (new events)", record.valid),
        ("  duplicates", record.duplicates),
        ("  still quarantined", record.quarantined),
        ("generation published", record.generation),
    ]
    items += [
        (f"  passed, was {reason}", n)
        for reason, n in (details.get("passed_by_original_reason") or {}).items()
    ]
    items += [
        (f"  still {reason}", n) for reason, n in (details.get("rejected_by_reason") or {}).items()
    ]
    items += [
        (f"  unreplayable: {cause}", n) for cause, n in (details.get("unreplayable") or {}).items()
    ]
    return [(item, "" if value is None else str(value)) for item, value in items]
