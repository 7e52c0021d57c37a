"""Reading one commit of a Delta table's log (sales_core.delta_log): the facts the speed sink
and the serving layer take from commit files, from lines as Delta writes them."""

from __future__ import annotations

import json

import pytest

from sales_core.delta_log import Commit, commit_file, parse_commit

pytestmark = pytest.mark.unit


def _lines(*actions: dict) -> str:
    return "\n".join(json.dumps(a) for a in actions) + "\n"


def test_an_append_commit() -> None:
    text = _lines(
        {
            "commitInfo": {
                "timestamp": 1764570000123,
                "operation": "WRITE",
                "userMetadata": "lambda-sales-speed-speed:7",
                "operationMetrics": {"numFiles": "2", "numOutputRows": "41500"},
            }
        },
        {"txn": {"appId": "app", "version": 7}},
        {"add": {"path": "a.parquet", "dataChange": True}},
        {"add": {"path": "b.parquet", "dataChange": True}},
    )
    assert parse_commit(12, text) == Commit(
        version=12,
        timestamp_ms=1764570000123,
        user_metadata="lambda-sales-speed-speed:7",
        txn={"app": 7},
        output_rows=41500,
        adds=2,
    )


def test_a_merge_counts_inserted_rows_and_a_compaction_adds_no_data() -> None:
    merge = _lines(
        {"commitInfo": {"timestamp": 1, "operationMetrics": {"numTargetRowsInserted": "3"}}},
        {"add": {"path": "c.parquet"}},  # dataChange absent: true
    )
    assert (parse_commit(3, merge).output_rows, parse_commit(3, merge).adds) == (3, 1)
    optimize = _lines(
        {"commitInfo": {"timestamp": 2, "operation": "OPTIMIZE"}},
        {"remove": {"path": "c.parquet", "dataChange": False}},
        {"add": {"path": "d.parquet", "dataChange": False}},
    )
    compacted = parse_commit(4, optimize)
    assert (compacted.adds, compacted.output_rows, compacted.user_metadata) == (0, None, None)


def test_commit_file_names_are_zero_padded_to_twenty_digits() -> None:
    assert commit_file(42) == "_delta_log/00000000000000000042.json"
