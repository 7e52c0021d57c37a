"""Which speed increments files the fast path may skip, from their Delta statistics."""

from __future__ import annotations

import pyarrow as pa
import pytest

from serving_layer.fast import _may_hold_above

pytestmark = pytest.mark.unit


def actions(*files: tuple[str | None, str | None, int | None, int | None, int | None]) -> pa.Table:
    """Flattened add actions: (min.stream, max.stream, min.batch_id, max.batch_id, null count)."""
    return pa.table(
        {
            "path": [f"part-{i}.parquet" for i in range(len(files))],
            "min.stream": [f[0] for f in files],
            "max.stream": [f[1] for f in files],
            "min.batch_id": [f[2] for f in files],
            "max.batch_id": [f[3] for f in files],
            "null_count.stream": [f[4] for f in files],
            "null_count.batch_id": [f[4] for f in files],
        }
    )


def test_only_files_wholly_covered_by_the_mark_are_skipped() -> None:
    files = actions(
        ("speed", "speed", 0, 3, 0),  # every micro-batch covered
        ("speed", "speed", 3, 3, 0),  # the mark itself: covered
        ("speed", "speed", 3, 4, 0),  # one above the mark
        ("speed", "speed", 9, 9, 0),
        ("other", "other", 0, 0, 0),  # a stream the mark does not name
        ("other", "speed", 0, 0, 0),  # two streams in one file (a compaction)
    )
    assert _may_hold_above(files, {"speed": 3}) == [False, False, True, True, True, True]


def test_files_without_statistics_or_with_nulls_are_read() -> None:
    files = actions(
        (None, None, None, None, None), ("speed", "speed", 0, None, 0), ("speed", "speed", 0, 1, 1)
    )
    assert _may_hold_above(files, {"speed": 3}) == [True, True, True]
    no_stats = pa.table({"path": ["a.parquet"], "size_bytes": [10]})
    assert _may_hold_above(no_stats, {"speed": 3}) == [True]


def test_without_a_mark_every_file_is_read() -> None:
    assert _may_hold_above(actions(("speed", "speed", 0, 0, 0)), {}) == [True]
