"""The nightly batch job: ingest what is new, recompute every view, publish atomically."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from batch_layer.ingest import IngestCounts, ingest_epoch, read_epoch_sources
from batch_layer.ledger import IngestPlan, read_ledger, record_ingested, record_plan
from batch_layer.publish import recompute_and_publish
from batch_layer.reconcile import reconcile_handoff, reconciliation_drift_alert
from batch_layer.sources import Entry, Source, configured_sources
from batch_layer.sources.files import missing_local_landing
from sales_core.alerts import JOB_FAILED, QUALITY_BELOW_THRESHOLD, notify
from sales_core.config import Config
from sales_core.errors import PipelineError, QualityGateError, SourceError, one_line
from sales_core.faults import fault_point
from sales_core.handoff import Generation, current_generation
from sales_core.lakehouse import Lakehouse, table_version
from sales_core.object_store import storage_options
from sales_core.quality import EMPTY, QualityReport
from sales_core.runs import RunRecord, job_runs, new_run_id, save_run, start_run, utcnow

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BatchOptions:
    accept_low_quality: bool = False


def check_before_spark(config: Config) -> None:
    """What can be found wrong before a JVM starts: a local landing location that does not
    exist fails here in a second, with the same line and alert as a run would after Spark's
    start (no run is recorded: nothing ran).

    Raises:
        SourceError: the landing location does not exist.
    """
    landing = config.sources.files.landing
    if missing_local_landing(landing, config.spark):
        error = f"landing location does not exist: {landing}"
        notify(
            config,
            JOB_FAILED,
            f"batch failed before it started: {error}",
            {"job": "batch", "error": error},
        )
        raise SourceError(error)


def _plans(
    spark: SparkSession, sources: Mapping[str, Source], lakehouse: Lakehouse, progress: Progress
) -> list[tuple[IngestPlan, bool]]:
    """The interrupted epoch (if any) then a new epoch for whatever is new; (plan, is new)."""
    state = read_ledger(spark, lakehouse.ingest_ledger)
    plans = [(state.pending, False)] if state.pending else []
    if state.pending:
        progress(
            f"resuming interrupted ingest epoch {state.pending.epoch} ({state.pending.summary})"
        )
    entries: list[Entry] = []
    for source in sources.values():
        planned = source.plan(spark, state.taken_from(source.kind), epoch=state.next_epoch)
        progress(planned.summary)
        entries.extend(planned.entries)
    if entries:
        plans.append((IngestPlan(state.next_epoch, utcnow(), tuple(entries)), True))
    return plans


def _quality_since_last_publish(spark: SparkSession, runs_path: str, run_id: str) -> QualityReport:
    """Quality of batch runs refused since the last publish: their data is still unpublished."""
    runs = [
        r
        for r in job_runs(spark, runs_path, "batch", ["run_id", "status", "started_at", "quality"])
        if r["run_id"] != run_id
    ]
    last_ok = max((r["started_at"] for r in runs if r["status"] == "succeeded"), default=None)
    total = EMPTY
    for row in runs:
        if row["status"] != "quality_failed" or (
            last_ok is not None and row["started_at"] <= last_ok
        ):
            continue
        data = json.loads(row["quality"] or "{}")
        total = total + QualityReport(
            data.get("records", 0),
            data.get("completeness_issues", 0),
            data.get("validity_issues", 0),
            data.get("consistency_issues", 0),
        )
    return total


def run_batch(
    spark: SparkSession,
    config: Config,
    *,
    options: BatchOptions = BatchOptions(),
    progress: Progress = log.info,
) -> RunRecord:
    """Run the batch job once; returns its run record (also saved in ``pipeline_runs``).

    Raises:
        QualityGateError: the data-quality score is below ``quality.min_score``.
        PipelineError: a source or write failed (the run is recorded as failed).
    """
    lakehouse = Lakehouse(config.lakehouse.root)
    record = RunRecord(new_run_id("batch"), "batch", utcnow())
    interrupted = start_run(spark, lakehouse.pipeline_runs, record)
    if interrupted:
        progress(f"{interrupted} earlier batch run(s) had been interrupted; recovering")
    try:
        counts = IngestCounts()
        sources = configured_sources(config.sources, lakehouse)
        epochs = []
        for plan, is_new in _plans(spark, sources, lakehouse, progress):
            if is_new:
                record_plan(spark, lakehouse.ingest_ledger, plan, record.run_id)
                fault_point("batch.after_plan")
            progress(f"ingest epoch {plan.epoch}: {plan.summary}")
            envelopes = read_epoch_sources(spark, plan, sources)
            epoch_counts = ingest_epoch(
                spark,
                lakehouse,
                plan,
                envelopes,
                conflict_retries=config.batch.max_conflict_retries,
            )
            record_ingested(spark, lakehouse.ingest_ledger, plan, record.run_id, utcnow())
            fault_point("batch.after_ledger_commit")
            counts = counts + epoch_counts
            epochs.append(plan.epoch)
        record.records_read, record.valid = counts.records_read, counts.valid
        record.duplicates, record.quarantined = counts.duplicates, counts.quarantined
        record.details = {
            "epochs": epochs,
            "records_by_source": counts.records_by_source,
            "rejected_by_reason": counts.rejected_by_reason,
            "defaulted": counts.defaulted,
        }
        if not counts.balanced:
            raise PipelineError(f"record counts do not balance: {counts}")

        report = counts.quality()
        gate = report + _quality_since_last_publish(spark, lakehouse.pipeline_runs, record.run_id)
        record.quality, record.quality_score = report.as_dict(), report.score
        if gate.score < config.quality.min_score and not options.accept_low_quality:
            record.status, record.ended_at = "quality_failed", utcnow()
            record.error = (
                f"data-quality score {gate.score:.2f} is below the threshold {config.quality.min_score:.2f}; "
                "the previous generation stays published"
            )
            record.delta_versions = table_versions(spark, lakehouse)
            save_run(spark, lakehouse.pipeline_runs, record)
            notify(
                config,
                QUALITY_BELOW_THRESHOLD,
                f"batch run {record.run_id} refused to publish: {record.error}",
                {
                    "run_id": record.run_id,
                    "job": "batch",
                    "quality_score": gate.score,
                    "min_score": config.quality.min_score,
                    "quality": gate.as_dict(),
                },
            )
            raise QualityGateError(record.error)

        publish_views(spark, config, lakehouse, record, progress)
        record.delta_versions = table_versions(spark, lakehouse)
        record.status, record.ended_at = "succeeded", utcnow()
        save_run(spark, lakehouse.pipeline_runs, record)
        return record
    except QualityGateError:
        raise
    except Exception as exc:
        record_failure(spark, config, lakehouse, record, exc, what="batch run")
        raise


def record_failure(
    spark: SparkSession,
    config: Config,
    lakehouse: Lakehouse,
    record: RunRecord,
    exc: BaseException,
    *,
    what: str,
) -> None:
    """Record ``record`` as failed with ``exc``'s one line and send the ``job_failed`` alert
    (``"<what> <run id> failed: ..."``); a failure to record it is logged, never raised."""
    record.status, record.ended_at = "failed", utcnow()
    record.error = one_line(exc)
    try:
        save_run(spark, lakehouse.pipeline_runs, record)
    except Exception:  # the original failure matters more than recording it
        log.exception("could not record the failed run")
    notify(
        config,
        JOB_FAILED,
        f"{what} {record.run_id} failed: {record.error}",
        {"run_id": record.run_id, "job": record.job, "error": record.error},
    )


def publish_views(
    spark: SparkSession, config: Config, lakehouse: Lakehouse, record: RunRecord, progress: Progress
) -> None:
    """Recompute every view from a pinned snapshot of the master dataset, publish it as the
    next generation, reconcile the speed increments it absorbed; noted in ``record``."""
    progress("recompute views from a pinned snapshot of the master dataset")
    previous = current_generation(spark, lakehouse)
    generation = recompute_and_publish(
        spark,
        lakehouse,
        previous=previous,
        run_id=record.run_id,
        published_at=utcnow(),
        keep_generations=config.batch.keep_generations,
        progress=progress,
        storage_options=storage_options(config.lakehouse.s3, config.lakehouse.root),
    )
    record.generation = generation.generation
    record.details["master_version"] = generation.master_version
    record.details["handoff"] = generation.handoff
    record.details["events_in_views"] = generation.events
    record.details["reconciliation"] = _reconcile(
        spark, config, lakehouse, generation, previous.handoff if previous else {}, progress
    )


def _reconcile(
    spark: SparkSession,
    config: Config,
    lakehouse: Lakehouse,
    generation: Generation,
    previous_handoff: dict[str, int],
    progress: Progress,
) -> dict[str, Any]:
    """Compare the speed increments this publish absorbed with the batch's numbers for them.

    The generation is published whatever this finds (its numbers come from the master
    dataset); drift is recorded and alerted on, and a failure to compare is recorded too.
    """
    try:
        result = reconcile_handoff(
            spark,
            lakehouse,
            master_version=generation.master_version,
            previous=previous_handoff,
            current=generation.handoff,
        )
    except Exception as exc:  # the publish stands; say why the check is missing
        log.exception("reconciliation failed")
        return {"error": one_line(exc)}
    if result.absorbed:
        progress(
            f"reconciled absorbed speed micro-batches {result.compared_batches}: "
            + ("DRIFT" if result.drift else "no drift")
        )
    if result.drift:
        log.error(
            "reconciliation drift after publishing generation %d: %s",
            generation.generation,
            result.as_dict()["views"],
        )
        reconciliation_drift_alert(config, result)
    return result.as_dict()


def table_versions(spark: SparkSession, lakehouse: Lakehouse) -> dict[str, int]:
    from sales_core.views import VIEWS

    paths = {
        "master_dataset": lakehouse.master_dataset,
        "quarantine": lakehouse.quarantine,
        "ingest_ledger": lakehouse.ingest_ledger,
        "generations": lakehouse.generations,
        **{name: lakehouse.batch_view(name) for name in VIEWS},
    }
    return {
        name: table_version(spark, path)
        for name, path in paths.items()
        if DeltaTable.isDeltaTable(spark, path)
    }
