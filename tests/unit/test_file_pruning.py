"""Which speed increments files the DuckDB engine may skip, from their Delta statistics."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sales_core.lakehouse import Lakehouse
from serving_layer.delta_files import may_hold_rows
from serving_layer.merge_spec import Increments, RowFilter, merge_spec

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


def above(handoff: dict[str, int]) -> RowFilter:
    """The increments of sales_daily above ``handoff`` (the files' statistics here say nothing
    of the view column: each file may hold the view's rows)."""
    return merge_spec(Lakehouse("/lh"), "sales_daily").increments.rows_above(handoff)


def test_only_files_wholly_covered_by_the_mark_are_skipped() -> None:
    files = actions(
        ("speed", "speed", 0, 3, 0),  # every micro-batch covered
        ("speed", "speed", 3, 3, 0),  # the mark itself: covered
        ("speed", "speed", 3, 4, 0),  # one above the mark
        ("speed", "speed", 9, 9, 0),
        ("other", "other", 0, 0, 0),  # a stream the mark does not name
        ("other", "speed", 0, 0, 0),  # two streams in one file (a compaction)
    )
    assert may_hold_rows(files, above({"speed": 3})) == [False, False, True, True, True, True]


def test_files_without_statistics_or_with_nulls_are_read() -> None:
    files = actions(
        (None, None, None, None, None), ("speed", "speed", 0, None, 0), ("speed", "speed", 0, 1, 1)
    )
    assert may_hold_rows(files, above({"speed": 3})) == [True, True, True]
    no_stats = pa.table({"path": ["a.parquet"], "size_bytes": [10]})
    assert may_hold_rows(no_stats, above({"speed": 3})) == [True]


def test_without_a_mark_every_file_is_read() -> None:
    assert may_hold_rows(actions(("speed", "speed", 0, 0, 0)), above({})) == [True]


def test_files_holding_no_row_of_the_view_are_skipped() -> None:
    """With one increments table for every view, a file's statistics on the view column
    show whether it holds any row of the view."""
    files = pa.table(
        {
            "path": ["a.parquet", "b.parquet", "c.parquet", "d.parquet"],
            "min.view": ["sales_daily", "customer_totals", "customer_totals", None],
            "max.view": ["sales_daily", "sales_hourly", "revenue_category_monthly", None],
        }
    )
    rows = Increments("speed/increments", RowFilter((("view", "=", "sales_hourly"),)))
    assert may_hold_rows(files, rows.rows_above({})) == [False, True, False, True]
