"""What the console shows, computed from rows already read: pure functions, no I/O.

Time windows cut into at most :data:`MAX_BUCKETS` buckets aligned on the epoch (so a poll a
few seconds later gets the same buckets), the stream metrics, quarantine and pipeline runs of
a window summarised per bucket or per run, and the judgement of the stream's state from its
last micro-batch's age. Inputs are Arrow tables in the Delta tables' own columns
(``sales_core.lakehouse``); outputs are JSON-ready (times as UTC ISO text).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from serving_layer.rows import to_text

MAX_BUCKETS = 120
# Runs listed at most per answer (newest first), reasons charted at most (the rest: "other"),
# characters of a quarantined record's raw text shown at most.
MAX_RUNS = 200
MAX_REASONS = 20
OTHER_REASONS = "other"
MAX_RAW_CHARS = 400

RUNNING, STALLED, STOPPED = "running", "stalled", "stopped"
STREAM_STATES = (RUNNING, STALLED, STOPPED)


@dataclass(frozen=True)
class Window:
    """A look back from now: ``seconds`` long, cut into buckets of ``bucket_seconds``."""

    name: str
    seconds: int
    bucket_seconds: int


WINDOWS: dict[str, Window] = {
    w.name: w
    for w in (
        Window("hour", 3600, 30),
        Window("day", 86400, 720),
        Window("week", 7 * 86400, 5040),
    )
}
DEFAULT_WINDOW = "hour"


def window_range(window: Window, now: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` of ``window`` at ``now``: whole buckets aligned on the epoch, the last
    one holding ``now``, at most ``seconds / bucket_seconds`` of them."""
    step = window.bucket_seconds
    current = int(now.timestamp()) // step * step
    count = window.seconds // step
    start = current - (count - 1) * step
    return _utc(start), _utc(current + step)


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, timezone.utc)


def bucket_starts(times: pa.Array | pa.ChunkedArray, bucket_seconds: int) -> pa.Array:
    """Per timestamp, the start of its bucket in epoch seconds (int64; null stays null)."""
    micros = pc.cast(pc.cast(times, pa.timestamp("us", tz="UTC")), pa.int64())
    step = bucket_seconds * 1_000_000
    # Integer floor division (the timestamps of these tables are after 1970).
    return pc.multiply(pc.divide(micros, pa.scalar(step, pa.int64())), bucket_seconds)


def in_window(table: pa.Table, column: str, start: datetime, end: datetime) -> pa.Table:
    """The rows of ``table`` whose ``column`` lies in ``[start, end)``."""
    if table.num_rows == 0:
        return table
    times = pc.cast(table.column(column), pa.timestamp("us", tz="UTC"))
    low = pa.scalar(start, pa.timestamp("us", tz="UTC"))
    high = pa.scalar(end, pa.timestamp("us", tz="UTC"))
    return table.filter(pc.and_(pc.greater_equal(times, low), pc.less(times, high)))


def _window_header(window: Window, start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "window": window.name,
        "from": to_text(start),
        "to": to_text(end),
        "bucket_seconds": window.bucket_seconds,
    }


def _number(value: Any) -> Any:
    """A JSON number (floats rounded for the wire), or None."""
    if value is None:
        return None
    return round(value, 3) if isinstance(value, float) else int(value)


def stream_series(metrics: pa.Table, window: Window, now: datetime) -> dict[str, Any]:
    """The stream's micro-batches of ``window`` per bucket: micro-batches, records read,
    events per second (records read over the bucket's elapsed seconds), mean and max
    micro-batch duration, the highest Kafka lag and the worst freshness, and the window's
    totals. ``metrics``: ``stream_metrics`` rows (at least the columns used here)."""
    start, end = window_range(window, now)
    rows = in_window(metrics, "ended_at", start, end)
    header = _window_header(window, start, end)
    totals = {
        "micro_batches": rows.num_rows,
        **{
            name: int(pc.sum(rows.column(name)).as_py() or 0)
            for name in ("input_rows", "valid", "duplicates", "quarantined")
        },
    }
    if rows.num_rows == 0:
        return {**header, "totals": totals, "points": []}
    keyed = rows.select(
        ["input_rows", "duration_ms", "kafka_lag", "freshness_ms", "batch_id"]
    ).append_column("bucket", bucket_starts(rows.column("ended_at"), window.bucket_seconds))
    grouped = keyed.group_by("bucket").aggregate(
        [
            ("batch_id", "count"),
            ("input_rows", "sum"),
            ("duration_ms", "mean"),
            ("duration_ms", "max"),
            ("kafka_lag", "max"),
            ("freshness_ms", "max"),
        ]
    )
    points = []
    now_s = now.timestamp()
    for row in sorted(grouped.to_pylist(), key=lambda r: r["bucket"]):
        elapsed = max(1.0, min(window.bucket_seconds, now_s - row["bucket"]))
        points.append(
            {
                "t": to_text(_utc(row["bucket"])),
                "micro_batches": int(row["batch_id_count"]),
                "input_rows": int(row["input_rows_sum"] or 0),
                "events_per_second": round((row["input_rows_sum"] or 0) / elapsed, 3),
                "duration_ms_mean": _number(row["duration_ms_mean"]),
                "duration_ms_max": _number(row["duration_ms_max"]),
                "kafka_lag_max": _number(row["kafka_lag_max"]),
                "freshness_ms_max": _number(row["freshness_ms_max"]),
            }
        )
    return {**header, "totals": totals, "points": points}


def quarantine_series(
    rejects: pa.Table, window: Window, now: datetime, *, samples: int
) -> dict[str, Any]:
    """The quarantine's rejects of ``window``: counts per reason (the :data:`MAX_REASONS`
    commonest, the rest as ``other``), per bucket and reason, and the newest ``samples``
    records of each reason with their source position. ``rejects``: quarantine rows (reason,
    rejected_at, the position columns, raw_record)."""
    start, end = window_range(window, now)
    rows = in_window(rejects, "rejected_at", start, end)
    header = _window_header(window, start, end)
    if rows.num_rows == 0:
        return {**header, "total": 0, "reasons": [], "points": [], "samples": {}}
    counted = rows.group_by("reason").aggregate([("reason", "count")]).to_pylist()
    counted.sort(key=lambda r: (-r["reason_count"], r["reason"]))
    kept = [r["reason"] for r in counted[:MAX_REASONS]]
    reasons = [{"reason": r["reason"], "count": r["reason_count"]} for r in counted[:MAX_REASONS]]
    folded = sum(r["reason_count"] for r in counted[MAX_REASONS:])
    if folded:
        reasons.append({"reason": OTHER_REASONS, "count": folded})
    label = pc.if_else(
        pc.is_in(rows.column("reason"), value_set=pa.array(kept, pa.string())),
        rows.column("reason"),
        pa.scalar(OTHER_REASONS),
    )
    keyed = pa.table(
        {
            "reason": label,
            "bucket": bucket_starts(rows.column("rejected_at"), window.bucket_seconds),
        }
    )
    per_bucket: dict[int, dict[str, int]] = {}
    for row in keyed.group_by(["bucket", "reason"]).aggregate([("reason", "count")]).to_pylist():
        per_bucket.setdefault(row["bucket"], {})[row["reason"]] = row["reason_count"]
    points = [
        {"t": to_text(_utc(bucket)), "counts": dict(sorted(counts.items()))}
        for bucket, counts in sorted(per_bucket.items())
    ]
    return {
        **header,
        "total": rows.num_rows,
        "reasons": reasons,
        "points": points,
        "samples": newest_samples(rows, kept, samples),
    }


POSITION_COLUMNS = ("source", "source_name", "source_partition", "source_offset", "source_key")


def newest_samples(rows: pa.Table, reasons: list[str], per_reason: int) -> dict[str, Any]:
    """Per reason, its ``per_reason`` newest rejects (newest first): when, where from (the
    quarantine's position columns), and the raw record (at most :data:`MAX_RAW_CHARS`)."""
    if per_reason <= 0:
        return {}
    order = pc.sort_indices(rows, sort_keys=[("rejected_at", "descending")])
    newest = rows.take(order)
    out: dict[str, list[dict[str, Any]]] = {}
    for reason in reasons:
        picked = newest.filter(pc.equal(newest.column("reason"), reason)).slice(0, per_reason)
        entries = []
        for row in picked.to_pylist():
            raw = row.get("raw_record")
            entries.append(
                {
                    "rejected_at": to_text(row["rejected_at"]),
                    **{c: row.get(c) for c in POSITION_COLUMNS},
                    "raw_record": None if raw is None else raw[:MAX_RAW_CHARS],
                    "raw_truncated": raw is not None and len(raw) > MAX_RAW_CHARS,
                }
            )
        out[reason] = entries
    return out


def reconciliation_summary(details: str | None) -> dict[str, Any] | None:
    """A run's reconciliation (``details.reconciliation`` of ``pipeline_runs``) in a few
    numbers: whether it drifted, groups that differ and the events and revenue difference
    summed over the views, micro-batches compared; None when the run reconciled nothing."""
    try:
        recon = json.loads(details or "{}").get("reconciliation")
    except (ValueError, AttributeError):
        return None
    if not isinstance(recon, dict):
        return None
    if "error" in recon:
        return {"error": str(recon["error"])}
    views = recon.get("views") or {}
    revenue = 0.0
    for view in views.values():
        try:
            revenue += float(view.get("revenue_diff", 0))
        except (TypeError, ValueError):
            pass
    return {
        "drift": bool(recon.get("drift", False)),
        "differing_groups": sum(int(v.get("differing_groups", 0)) for v in views.values()),
        "events_diff": sum(int(v.get("events_diff", 0)) for v in views.values()),
        "revenue_diff": round(revenue, 2),
        "compared_batches": sum(int(n) for n in (recon.get("compared_batches") or {}).values()),
    }


def run_entries(runs: pa.Table, window: Window, now: datetime) -> dict[str, Any]:
    """The pipeline runs that started in ``window`` or are still running, newest first (at
    most :data:`MAX_RUNS`): counts (read = valid + duplicates + quarantined), duration,
    quality score and the reconciliation's drift."""
    start, end = window_range(window, now)
    header = _window_header(window, start, end)
    entries = []
    for row in runs.to_pylist():
        started, ended = row["started_at"], row["ended_at"]
        if started is None or (started < start and row["status"] != "running"):
            continue
        entries.append(
            {
                "run_id": row["run_id"],
                "job": row["job"],
                "status": row["status"],
                "started_at": to_text(started),
                "ended_at": to_text(ended) if ended else None,
                "duration_seconds": round((ended - started).total_seconds(), 3) if ended else None,
                **{
                    c: _number(row[c])
                    for c in (
                        "records_read",
                        "valid",
                        "duplicates",
                        "quarantined",
                        "quality_score",
                        "generation",
                    )
                },
                "error": row["error"],
                "reconciliation": reconciliation_summary(row["details"]),
            }
        )
    entries.sort(key=lambda e: (e["started_at"], e["run_id"]), reverse=True)
    return {**header, "truncated": len(entries) > MAX_RUNS, "runs": entries[:MAX_RUNS]}


_INTERVAL = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)\s*$",
    re.IGNORECASE,
)


def trigger_seconds(interval: str) -> float:
    """A processing-time trigger (``speed.trigger_interval``: ``"1 second"``, ``"500 ms"``) in
    seconds.

    Raises:
        ValueError: not a number and a unit.
    """
    match = _INTERVAL.match(interval)
    if not match:
        raise ValueError(f"invalid trigger interval {interval!r}")
    unit = match[2].lower()
    if unit == "ms" or unit.startswith("milli"):
        scale = 0.001
    elif unit.startswith("m"):
        scale = 60.0
    elif unit.startswith("h"):
        scale = 3600.0
    else:
        scale = 1.0
    return float(match[1]) * scale


@dataclass(frozen=True)
class StreamThresholds:
    """When a stream's last micro-batch is too old: see :func:`classify_stream`."""

    trigger_seconds: float = 1.0
    stalled_after_seconds: float = 60.0
    stopped_after_seconds: float = 900.0

    @property
    def stalled_after(self) -> float:
        return max(self.stalled_after_seconds, 3 * self.trigger_seconds)

    @property
    def stopped_after(self) -> float:
        return max(self.stopped_after_seconds, self.stalled_after)


@dataclass(frozen=True)
class SpeedRun:
    """The newest ``speed`` run of ``pipeline_runs``."""

    run_id: str
    status: str
    ended_at: datetime | None


def classify_stream(
    now: datetime,
    last_micro_batch_at: datetime | None,
    thresholds: StreamThresholds,
    last_run: SpeedRun | None = None,
) -> tuple[str, str]:
    """The stream's state and why: ``stopped`` when its newest speed run has ended since its
    last micro-batch (a run records its end: succeeded, failed) or when it never ran a
    micro-batch; otherwise by the last micro-batch's age: ``running`` up to
    ``stalled_after`` (at least three trigger intervals), ``stalled`` up to
    ``stopped_after``, then ``stopped`` (a killed job records no end)."""
    if (
        last_run is not None
        and last_run.status != "running"
        and last_run.ended_at is not None
        and (last_micro_batch_at is None or last_run.ended_at >= last_micro_batch_at)
    ):
        return STOPPED, f"speed run {last_run.run_id} ended ({last_run.status})"
    if last_micro_batch_at is None:
        return STOPPED, "no micro-batch yet"
    age = (now - last_micro_batch_at).total_seconds()
    said = f"last micro-batch {age:.0f}s ago (trigger every {thresholds.trigger_seconds:g}s)"
    if age <= thresholds.stalled_after:
        return RUNNING, said
    if age <= thresholds.stopped_after:
        return STALLED, f"{said}; stalled after {thresholds.stalled_after:g}s"
    return STOPPED, f"{said}; stopped after {thresholds.stopped_after:g}s"


def age_seconds(now: datetime, then: datetime | None) -> float | None:
    """Seconds from ``then`` to ``now`` (None stays None)."""
    return None if then is None else round((now - then).total_seconds(), 3)
