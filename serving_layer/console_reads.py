"""The console's reads: the operations tables (stream metrics, pipeline runs, quarantine,
alerts, generations) with delta-rs, no JVM, summarised by :mod:`serving_layer.console_series`.

What a long-lived reader keeps between polls, keyed by things that never change once
written, as :class:`~serving_layer.duckdb_engine.FastServing` does: each data file's rows (Delta
data files are immutable; only the columns the console uses, raw records cut short), and
each table's rows at a pinned version. A poll with no new commit reads nothing but one stat
per table (the next log version's file). Tables that grow with every micro-batch
(``stream_metrics``) or every reject (``quarantine``) are read only in the files whose
statistics reach into the longest window; files no longer live (compacted, vacuumed) are
forgotten.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sales_core.lakehouse import Lakehouse
from serving_layer.console_series import (
    MAX_RAW_CHARS,
    POSITION_COLUMNS,
    WINDOWS,
    SpeedRun,
    StreamThresholds,
    Window,
    age_seconds,
    classify_stream,
    quarantine_series,
    run_entries,
    stream_series,
)
from serving_layer.delta_files import DeltaTables, Pinned, check_readable, read_files
from serving_layer.duckdb_engine import FastServing
from serving_layer.query import normalise_value
from serving_layer.rows import to_text

METRICS_COLUMNS = (
    "stream",
    "batch_id",
    "ended_at",
    "duration_ms",
    "input_rows",
    "valid",
    "duplicates",
    "quarantined",
    "kafka_lag",
    "newest_message_at",
    "freshness_ms",
)
QUARANTINE_COLUMNS = (*POSITION_COLUMNS, "raw_record", "reason", "rejected_at")
RUNS_COLUMNS = (
    "run_id",
    "job",
    "status",
    "started_at",
    "ended_at",
    "records_read",
    "valid",
    "duplicates",
    "quarantined",
    "quality_score",
    "generation",
    "error",
    "details",
)
ALERTS_COLUMNS = ("alert_id", "kind", "summary", "details", "at", "webhook", "delivered")
GENERATIONS_COLUMNS = ("generation", "published_at", "run_id", "events", "handoff")
# The longest window: older files of the growing tables are never read.
LONGEST = max(WINDOWS.values(), key=lambda w: w.seconds)


class ConsoleReader:
    """Answers the console's questions from the Delta tables of ``serving``'s lakehouse.

    Thread-safe: pinning and the caches are guarded by one lock (the reads are small).
    """

    def __init__(self, serving: FastServing, thresholds: StreamThresholds) -> None:
        self.serving = serving
        self.thresholds = thresholds
        self.lakehouse: Lakehouse = serving.lakehouse
        self._storage_options = serving.storage_options
        self._lock = threading.Lock()
        self._tables = DeltaTables(serving.storage_options)
        self._files: dict[str, dict[str, pa.Table]] = {}
        self._rows: dict[str, tuple[tuple[str | None, int | None], pa.Table]] = {}

    # ------------------------------------------------------------------ reading

    def _read(
        self,
        path: str,
        columns: tuple[str, ...],
        *,
        newer_than: tuple[str, datetime] | None = None,
    ) -> pa.Table | None:
        """The table's rows (``columns``) at its latest version, None when there is no table.
        ``newer_than``: only the files whose statistics show a ``column`` value at or after
        the time (the other rows of what is read are kept: filter them). Call under the lock."""
        pinned = self._tables.latest(path)
        if pinned.table is None:
            self._files.pop(path, None)
            self._rows.pop(path, None)
            return None
        key = (pinned.table_id, pinned.version)
        known = self._rows.get(path)
        if known is not None and known[0] == key:
            return known[1]
        rows = self._read_files(path, pinned, columns, newer_than)
        self._rows[path] = (key, rows)
        return rows

    def _read_files(
        self,
        path: str,
        pinned: Pinned,
        columns: tuple[str, ...],
        newer_than: tuple[str, datetime] | None,
    ) -> pa.Table:
        table = pinned.table
        assert table is not None
        check_readable(table)
        schema = pa.schema(table.schema().to_arrow())
        actions = pa.table(table.get_add_actions(flatten=True))
        live = actions.column("path").to_pylist()
        if newer_than is not None and f"max.{newer_than[0]}" in actions.column_names:
            highs = actions.column(f"max.{newer_than[0]}").to_pylist()
            live = [
                p
                for p, high in zip(live, highs, strict=True)
                if high is None or normalise_value(high) >= newer_than[1]
            ]
        cached = self._files.get(path, {})
        unread = [p for p in live if p not in cached]
        wanted = [c for c in columns if c in schema.names]
        for name, rows in read_files(table, self._storage_options, actions, unread, schema).items():
            cached[name] = _console_columns(rows.select(wanted))
        self._files[path] = cached = {p: cached[p] for p in live}
        if not cached:
            return _console_columns(schema.empty_table().select(wanted))
        return pa.concat_tables(list(cached.values()))

    # ------------------------------------------------------------------ answers

    def stream(self, window: Window, now: datetime | None = None) -> dict[str, Any]:
        """``stream_metrics`` of ``window``, per bucket (:func:`stream_series`)."""
        now = now or datetime.now(timezone.utc)
        with self._lock:
            metrics = self._metrics(now)
        return stream_series(metrics, window, now)

    def _metrics(self, now: datetime) -> pa.Table:
        since = ("ended_at", now - timedelta(seconds=LONGEST.seconds + LONGEST.bucket_seconds))
        rows = self._read(self.lakehouse.stream_metrics, METRICS_COLUMNS, newer_than=since)
        return rows if rows is not None else _empty(METRICS_COLUMNS)

    def runs(self, window: Window, now: datetime | None = None) -> dict[str, Any]:
        """``pipeline_runs`` of ``window``, newest first (:func:`run_entries`)."""
        now = now or datetime.now(timezone.utc)
        with self._lock:
            runs = self._read(self.lakehouse.pipeline_runs, RUNS_COLUMNS)
        return run_entries(runs if runs is not None else _empty(RUNS_COLUMNS), window, now)

    def quarantine(
        self, window: Window, *, samples: int, now: datetime | None = None
    ) -> dict[str, Any]:
        """The quarantine's rejects of ``window`` by reason, and samples (:func:`quarantine_series`)."""
        now = now or datetime.now(timezone.utc)
        since = ("rejected_at", now - timedelta(seconds=LONGEST.seconds + LONGEST.bucket_seconds))
        with self._lock:
            rejects = self._read(self.lakehouse.quarantine, QUARANTINE_COLUMNS, newer_than=since)
        if rejects is None:
            rejects = _empty(QUARANTINE_COLUMNS)
        return quarantine_series(rejects, window, now, samples=samples)

    def alerts(self, limit: int) -> dict[str, Any]:
        """The ``limit`` newest recorded alerts, newest first, and how many there are."""
        with self._lock:
            rows = self._read(self.lakehouse.alerts, ALERTS_COLUMNS)
        if rows is None or rows.num_rows == 0:
            return {"total": 0, "alerts": []}
        order = pc.sort_indices(rows, sort_keys=[("at", "descending"), ("alert_id", "ascending")])
        newest = rows.take(order).slice(0, limit).to_pylist()
        return {"total": rows.num_rows, "alerts": [_alert(r) for r in newest]}

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """The "now" panel: the current generation and its age, the stream's state, its Kafka
        lag and freshness at its newest micro-batch, the newest event's age, the last alert."""
        now = now or datetime.now(timezone.utc)
        health = self.serving.health(now)
        with self._lock:
            generations = self._read(self.lakehouse.generations, GENERATIONS_COLUMNS)
            metrics = self._metrics(now)
            runs = self._read(self.lakehouse.pipeline_runs, RUNS_COLUMNS)
        newest_metrics = _newest(metrics, "batch_id")
        speed = health["speed"]
        last_at = speed["last_micro_batch_at"]
        # The newest event processed: /health names the newest micro-batch's, and a
        # micro-batch without Kafka records (one the batch layer's inserts woke) has none.
        newest_event = max(
            (t for t in (speed["newest_event_at"], _latest(metrics, "newest_message_at")) if t),
            default=None,
        )
        speed_run = _newest_speed_run(runs)
        state, reason = classify_stream(now, last_at, self.thresholds, speed_run)
        return {
            "now": to_text(now),
            "batch": _batch(_newest(generations, "generation"), now),
            "stream": {
                "state": state,
                "reason": reason,
                "last_micro_batch": speed["last_micro_batch"],
                "last_micro_batch_at": to_text(last_at) if last_at else None,
                "seconds_since_last_micro_batch": age_seconds(now, last_at),
                "newest_event_at": to_text(newest_event) if newest_event else None,
                "seconds_since_newest_event": age_seconds(now, newest_event),
                "metrics": _metrics_summary(newest_metrics),
                "last_run": None
                if speed_run is None
                else {
                    "run_id": speed_run.run_id,
                    "status": speed_run.status,
                    "ended_at": to_text(speed_run.ended_at) if speed_run.ended_at else None,
                },
                "thresholds": {
                    "trigger_seconds": self.thresholds.trigger_seconds,
                    "stalled_after_seconds": self.thresholds.stalled_after,
                    "stopped_after_seconds": self.thresholds.stopped_after,
                },
            },
            "last_alert": (self.alerts(1)["alerts"] or [None])[0],
        }


def _console_columns(rows: pa.Table) -> pa.Table:
    """What the console keeps of a file's rows: raw records cut short (a poison message can
    be megabytes), details and the rest as they are."""
    if "raw_record" in rows.column_names:
        index = rows.column_names.index("raw_record")
        cut = pc.utf8_slice_codeunits(rows.column(index), 0, MAX_RAW_CHARS + 1)
        rows = rows.set_column(index, "raw_record", cut)
    return rows


def _empty(columns: tuple[str, ...]) -> pa.Table:
    """No rows, with the columns typed as the functions of console_series need them."""
    types = {
        "ended_at": pa.timestamp("us", tz="UTC"),
        "rejected_at": pa.timestamp("us", tz="UTC"),
        "started_at": pa.timestamp("us", tz="UTC"),
        "newest_message_at": pa.timestamp("us", tz="UTC"),
    }
    return pa.table({c: pa.array([], types.get(c, pa.int64())) for c in columns})


def _newest(rows: pa.Table | None, column: str) -> dict[str, Any] | None:
    """The row with the highest ``column`` (None: no rows)."""
    if rows is None or rows.num_rows == 0:
        return None
    index = pc.index(rows.column(column), pc.max(rows.column(column))).as_py()
    return rows.slice(index, 1).to_pylist()[0]


def _latest(rows: pa.Table, column: str) -> datetime | None:
    """The latest time in ``column`` (None: no rows, or all null)."""
    if rows.num_rows == 0:
        return None
    latest = pc.max(rows.column(column)).as_py()
    return normalise_value(latest) if latest is not None else None


def _newest_speed_run(runs: pa.Table | None) -> SpeedRun | None:
    if runs is None or runs.num_rows == 0:
        return None
    speed = runs.filter(pc.equal(runs.column("job"), "speed"))
    newest = _newest(speed, "started_at")
    if newest is None:
        return None
    ended = newest["ended_at"]
    return SpeedRun(newest["run_id"], newest["status"], normalise_value(ended) if ended else None)


def _batch(newest: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    if newest is None:
        return {
            "generation": None,
            "published_at": None,
            "seconds_since_publish": None,
            "events": None,
            "run_id": None,
            "handoff": {},
        }
    published = normalise_value(newest["published_at"])
    return {
        "generation": int(newest["generation"]),
        "published_at": to_text(published),
        "seconds_since_publish": age_seconds(now, published),
        "events": int(newest["events"]),
        "run_id": newest["run_id"],
        "handoff": {str(k): int(v) for k, v in newest["handoff"]},
    }


def _metrics_summary(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """The newest ``stream_metrics`` row (the metrics of a micro-batch come seconds after it)."""
    if row is None:
        return None
    return {
        "batch_id": int(row["batch_id"]),
        "ended_at": to_text(normalise_value(row["ended_at"])),
        "input_rows": int(row["input_rows"]),
        "valid": int(row["valid"]),
        "duplicates": int(row["duplicates"]),
        "quarantined": int(row["quarantined"]),
        "duration_ms": int(row["duration_ms"]),
        "kafka_lag": None if row["kafka_lag"] is None else int(row["kafka_lag"]),
        "freshness_ms": None if row["freshness_ms"] is None else int(row["freshness_ms"]),
    }


def _alert(row: dict[str, Any]) -> dict[str, Any]:
    try:
        details = json.loads(row["details"]) if row["details"] else {}
    except ValueError:
        details = {"text": row["details"]}
    return {
        "alert_id": row["alert_id"],
        "kind": row["kind"],
        "summary": row["summary"],
        "details": details if isinstance(details, dict) else {"value": details},
        "at": to_text(normalise_value(row["at"])),
        "webhook": bool(row["webhook"]),
        "delivered": bool(row["delivered"]),
    }
