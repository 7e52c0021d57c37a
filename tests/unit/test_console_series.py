"""The console's pure functions: windows and buckets, the per-bucket series of the stream
metrics and the quarantine, the runs list, the trigger interval, and the stream's state."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest

from serving_layer.console_series import (
    MAX_RAW_CHARS,
    MAX_REASONS,
    OTHER_REASONS,
    WINDOWS,
    SpeedRun,
    StreamThresholds,
    bucket_starts,
    classify_stream,
    quarantine_series,
    reconciliation_summary,
    run_entries,
    stream_series,
    trigger_seconds,
    window_range,
)

pytestmark = pytest.mark.unit

UTC = timezone.utc
NOW = datetime(2026, 12, 1, 10, 0, 45, tzinfo=UTC)  # 15 s into the bucket 10:00:30
TS = pa.timestamp("us", tz="UTC")


def at(hh: int, mm: int, ss: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 12, day, hh, mm, ss, tzinfo=UTC)


def test_window_ranges_are_whole_aligned_buckets_ending_with_the_one_holding_now() -> None:
    assert window_range(WINDOWS["hour"], NOW) == (at(9, 1, 0), at(10, 1, 0))
    # 12-minute buckets since the epoch (a day holds 120): 10:00 holds 10:00:45.
    assert window_range(WINDOWS["day"], NOW) == (at(10, 12) - timedelta(days=1), at(10, 12))
    start, end = window_range(WINDOWS["week"], NOW)
    assert (end - start) == timedelta(days=7) and start <= NOW - timedelta(days=7) + timedelta(
        seconds=5040
    )
    assert int(end.timestamp()) % 5040 == 0
    for window in WINDOWS.values():
        assert window.seconds // window.bucket_seconds == 120


def test_bucket_starts() -> None:
    times = pa.array([at(10, 0, 29), at(10, 0, 30), None, at(9, 59, 59)], TS)
    assert bucket_starts(times, 30).to_pylist() == [
        int(at(10, 0, 0).timestamp()),
        int(at(10, 0, 30).timestamp()),
        None,
        int(at(9, 59, 30).timestamp()),
    ]


def metrics(*rows: tuple[int, datetime, int, int, int | None, int | None]) -> pa.Table:
    """(batch_id, ended_at, input_rows, duration_ms, kafka_lag, freshness_ms) rows."""
    columns = list(zip(*rows, strict=True))
    return pa.table(
        {
            "batch_id": pa.array(columns[0], pa.int64()),
            "ended_at": pa.array(columns[1], TS),
            "input_rows": pa.array(columns[2], pa.int64()),
            "valid": pa.array(columns[2], pa.int64()),
            "duplicates": pa.array([0] * len(rows), pa.int64()),
            "quarantined": pa.array([0] * len(rows), pa.int64()),
            "duration_ms": pa.array(columns[3], pa.int64()),
            "kafka_lag": pa.array(columns[4], pa.int64()),
            "freshness_ms": pa.array(columns[5], pa.int64()),
        }
    )


def test_stream_series_per_bucket() -> None:
    table = metrics(
        (1, at(8, 0), 999, 10, 5, 100),  # two hours ago: outside the hour
        (2, at(10, 0, 1), 30, 400, 7, 1500),
        (3, at(10, 0, 20), 60, 600, None, 2500),
        (4, at(10, 0, 40), 45, 900, 2, None),
    )
    series = stream_series(table, WINDOWS["hour"], NOW)
    assert series["window"] == "hour" and series["bucket_seconds"] == 30
    assert series["from"] == "2026-12-01T09:01:00Z" and series["to"] == "2026-12-01T10:01:00Z"
    assert series["totals"] == {
        "micro_batches": 3,
        "input_rows": 135,
        "valid": 135,
        "duplicates": 0,
        "quarantined": 0,
    }
    assert series["points"] == [
        {
            "t": "2026-12-01T10:00:00Z",
            "micro_batches": 2,
            "input_rows": 90,
            "events_per_second": 3.0,  # 90 records over 30 s
            "duration_ms_mean": 500.0,
            "duration_ms_max": 600,
            "kafka_lag_max": 7,
            "freshness_ms_max": 2500,
        },
        {
            "t": "2026-12-01T10:00:30Z",
            "micro_batches": 1,
            "input_rows": 45,
            "events_per_second": 3.0,  # the current bucket: 45 records over its 15 s so far
            "duration_ms_mean": 900.0,
            "duration_ms_max": 900,
            "kafka_lag_max": 2,
            "freshness_ms_max": None,
        },
    ]
    # The day's window holds all four, in the 12-minute buckets of 08:00 and 10:00.
    day = stream_series(table, WINDOWS["day"], NOW)
    assert [(p["t"], p["micro_batches"]) for p in day["points"]] == [
        ("2026-12-01T08:00:00Z", 1),
        ("2026-12-01T10:00:00Z", 3),
    ]
    assert stream_series(table.slice(0, 0), WINDOWS["hour"], NOW)["points"] == []


def rejects(*rows: tuple[str, datetime, str | None, int]) -> pa.Table:
    """(reason, rejected_at, raw_record, source_offset) rows from one landing file."""
    columns = list(zip(*rows, strict=True))
    n = len(rows)
    return pa.table(
        {
            "source": pa.array(["file"] * n),
            "source_name": pa.array(["landing/a.jsonl"] * n),
            "source_partition": pa.array([None] * n, pa.int32()),
            "source_offset": pa.array(columns[3], pa.int64()),
            "source_key": pa.array([None] * n, pa.string()),
            "raw_record": pa.array(columns[2], pa.string()),
            "reason": pa.array(columns[0]),
            "rejected_at": pa.array(columns[1], TS),
        }
    )


def test_quarantine_series_counts_reasons_per_bucket_with_the_newest_samples() -> None:
    long_raw = "x" * (MAX_RAW_CHARS + 50)
    table = rejects(
        ("malformed", at(10, 0, 5), "not json", 1),
        ("malformed", at(10, 0, 35), long_raw, 2),
        ("negative_amount", at(10, 0, 10), '{"amount": -1}', 3),
        ("malformed", at(10, 0, 10), None, 4),
        ("negative_amount", at(7, 0), "{}", 5),  # outside the hour
    )
    series = quarantine_series(table, WINDOWS["hour"], NOW, samples=2)
    assert series["total"] == 4
    assert series["reasons"] == [
        {"reason": "malformed", "count": 3},
        {"reason": "negative_amount", "count": 1},
    ]
    assert series["points"] == [
        {"t": "2026-12-01T10:00:00Z", "counts": {"malformed": 2, "negative_amount": 1}},
        {"t": "2026-12-01T10:00:30Z", "counts": {"malformed": 1}},
    ]
    malformed = series["samples"]["malformed"]
    assert [s["source_offset"] for s in malformed] == [2, 4]  # the newest two, newest first
    assert malformed[0]["raw_record"] == "x" * MAX_RAW_CHARS and malformed[0]["raw_truncated"]
    assert malformed[1]["raw_record"] is None and not malformed[1]["raw_truncated"]
    assert malformed[0]["source_name"] == "landing/a.jsonl"
    assert malformed[0]["rejected_at"] == "2026-12-01T10:00:35Z"
    assert [s["source_offset"] for s in series["samples"]["negative_amount"]] == [3]
    assert quarantine_series(table, WINDOWS["hour"], NOW, samples=0)["samples"] == {}


def test_quarantine_series_folds_rare_reasons_into_other() -> None:
    rows = []
    for i in range(MAX_REASONS + 2):  # reason r00 once, r01 twice, ...
        rows += [(f"r{i:02d}", at(10, 0, 1), "{}", i)] * (i + 1)
    series = quarantine_series(rejects(*rows), WINDOWS["hour"], NOW, samples=1)
    reasons = series["reasons"]
    assert len(reasons) == MAX_REASONS + 1
    assert reasons[0] == {"reason": f"r{MAX_REASONS + 1:02d}", "count": MAX_REASONS + 2}
    assert reasons[-1] == {"reason": OTHER_REASONS, "count": 1 + 2}  # r00 and r01
    assert series["points"][0]["counts"][OTHER_REASONS] == 3
    assert OTHER_REASONS not in series["samples"] and len(series["samples"]) == MAX_REASONS


def run(
    run_id: str, job: str, status: str, started: datetime, ended: datetime | None, **kw: Any
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "job": job,
        "status": status,
        "started_at": started,
        "ended_at": ended,
        "records_read": kw.get("read"),
        "valid": kw.get("valid"),
        "duplicates": kw.get("duplicates"),
        "quarantined": kw.get("quarantined"),
        "quality_score": kw.get("quality"),
        "generation": kw.get("generation"),
        "error": kw.get("error"),
        "details": kw.get("details"),
    }


def test_runs_of_the_window_newest_first_with_their_drift() -> None:
    recon = {
        "reconciliation": {
            "absorbed": {"speed": {"after": -1, "through": 4}},
            "compared_batches": {"speed": 5},
            "pending_batches": {},
            "views": {
                "sales_daily": {"differing_groups": 2, "events_diff": -3, "revenue_diff": "-12.50"},
                "sales_hourly": {"differing_groups": 1, "events_diff": 1, "revenue_diff": "2.25"},
            },
            "drift": True,
        }
    }
    rows = [
        run("old", "batch", "succeeded", at(7, 0), at(7, 1)),
        run("speed-1", "speed", "running", at(6, 0), None),
        run(
            "b1",
            "batch",
            "succeeded",
            at(9, 30),
            at(9, 30, 42),
            read=10,
            valid=7,
            duplicates=1,
            quarantined=2,
            quality=93.25,
            generation=4,
            details=json.dumps(recon),
        ),
        run("b2", "batch", "failed", at(9, 50), at(9, 51), error="boom"),
    ]
    answer = run_entries(pa.Table.from_pylist(rows), WINDOWS["hour"], NOW)
    assert [r["run_id"] for r in answer["runs"]] == ["b2", "b1", "speed-1"]
    b1 = answer["runs"][1]
    assert (b1["records_read"], b1["valid"], b1["duplicates"], b1["quarantined"]) == (10, 7, 1, 2)
    assert b1["duration_seconds"] == 42.0 and b1["quality_score"] == 93.25
    assert b1["reconciliation"] == {
        "drift": True,
        "differing_groups": 3,
        "events_diff": -2,
        "revenue_diff": -10.25,
        "compared_batches": 5,
    }
    assert answer["runs"][0]["error"] == "boom" and answer["runs"][0]["reconciliation"] is None
    assert answer["runs"][2]["duration_seconds"] is None and not answer["truncated"]


def test_reconciliation_summary_edge_cases() -> None:
    assert reconciliation_summary(None) is None
    assert reconciliation_summary("not json") is None
    assert reconciliation_summary(json.dumps({"reconciliation": {"error": "x"}})) == {"error": "x"}
    assert reconciliation_summary(json.dumps({"reconciliation": {"views": {}}})) == {
        "drift": False,
        "differing_groups": 0,
        "events_diff": 0,
        "revenue_diff": 0.0,
        "compared_batches": 0,
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1 second", 1.0),
        ("500 milliseconds", 0.5),
        ("250 ms", 0.25),
        ("10s", 10.0),
        ("2 minutes", 120.0),
        ("1 min", 60.0),
        ("1 hour", 3600.0),
    ],
)
def test_trigger_seconds(text: str, seconds: float) -> None:
    assert trigger_seconds(text) == seconds


def test_trigger_seconds_refuses_other_text() -> None:
    with pytest.raises(ValueError, match="invalid trigger interval 'soon'"):
        trigger_seconds("soon")


THRESHOLDS = StreamThresholds(
    trigger_seconds=1.0, stalled_after_seconds=60.0, stopped_after_seconds=900.0
)


@pytest.mark.parametrize(
    ("age", "state"),
    [(0, "running"), (60, "running"), (61, "stalled"), (900, "stalled"), (901, "stopped")],
)
def test_stream_state_from_the_last_micro_batch_age(age: int, state: str) -> None:
    got, reason = classify_stream(NOW, NOW - timedelta(seconds=age), THRESHOLDS)
    assert got == state
    assert f"last micro-batch {age}s ago" in reason


def test_a_slow_trigger_is_not_a_stall_and_an_ended_run_is_a_stop() -> None:
    slow = StreamThresholds(
        trigger_seconds=60.0, stalled_after_seconds=60.0, stopped_after_seconds=120.0
    )
    assert slow.stalled_after == 180 and slow.stopped_after == 180
    assert classify_stream(NOW, NOW - timedelta(seconds=170), slow)[0] == "running"
    assert classify_stream(NOW, NOW - timedelta(seconds=181), slow)[0] == "stopped"

    last = NOW - timedelta(seconds=5)
    ended = SpeedRun("speed-1", "succeeded", NOW - timedelta(seconds=2))
    assert classify_stream(NOW, last, THRESHOLDS, ended) == (
        "stopped",
        "speed run speed-1 ended (succeeded)",
    )
    # A run that ended before the last micro-batch (another run took over): judged by age.
    earlier = SpeedRun("speed-0", "failed", NOW - timedelta(seconds=30))
    assert classify_stream(NOW, last, THRESHOLDS, earlier)[0] == "running"
    # Still recorded as running (a killed job records no end): judged by age.
    killed = SpeedRun("speed-2", "running", None)
    assert classify_stream(NOW, NOW - timedelta(hours=2), THRESHOLDS, killed)[0] == "stopped"
    assert classify_stream(NOW, None, THRESHOLDS) == ("stopped", "no micro-batch yet")
