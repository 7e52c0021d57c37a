"""Reading one commit of a Delta table's log (sales_core.delta_log): the facts the speed sink
and the serving layer take from commit files, from lines as Delta writes them."""

from __future__ import annotations

import json

import pytest

from sales_core.delta_log import (
    CHECKSUM_MAX_FILES,
    Commit,
    checksum_after_appends,
    commit_file,
    parse_commit,
)

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


def _previous_checksum(files: list[dict]) -> dict:
    bounds = [0, 8192, 16384, 32768]
    counts = [0, 0, 0, 0]
    totals = [0, 0, 0, 0]
    for f in files:
        slot = max(i for i, b in enumerate(bounds) if b <= f["size"])
        counts[slot] += 1
        totals[slot] += f["size"]
    return {
        "txnId": "old",
        "tableSizeBytes": sum(f["size"] for f in files),
        "numFiles": len(files),
        "numMetadata": 1,
        "numProtocol": 1,
        "setTransactions": [{"appId": "app", "version": 3}],
        "metadata": {"id": "m"},
        "protocol": {"minReaderVersion": 1, "minWriterVersion": 2},
        "fileSizeHistogram": {
            "sortedBinBoundaries": bounds,
            "fileCounts": counts,
            "totalBytes": totals,
        },
        "allFiles": [{**f, "dataChange": False} for f in files],
    }


def test_the_checksum_after_an_append_is_the_checksum_of_all_files() -> None:
    """An append's checksum, derived from the previous one, equals the checksum written from
    scratch over every file (counts, bytes, histogram, file list); the rest is kept."""
    old = [{"path": "a.parquet", "size": 100, "partitionValues": {}}]
    new = [
        {"path": "b.parquet", "size": 9000, "partitionValues": {}, "dataChange": True},
        {"path": "c.parquet", "size": 40000, "partitionValues": {}, "dataChange": True},
    ]
    text = _lines({"commitInfo": {"operation": "WRITE"}}, *({"add": a} for a in new))
    state = checksum_after_appends(_previous_checksum(old), text, "new")
    expected = _previous_checksum(
        old + [{k: v for k, v in a.items() if k != "dataChange"} for a in new]
    )
    assert state == {**expected, "txnId": "new"}


def test_only_a_pure_append_gets_a_derived_checksum() -> None:
    previous = _previous_checksum([])
    add = {"add": {"path": "b.parquet", "size": 10, "partitionValues": {}}}
    for other in (
        {"remove": {"path": "a.parquet"}},
        {"metaData": {"id": "m2"}},
        {"protocol": {"minReaderVersion": 1, "minWriterVersion": 7}},
        {"txn": {"appId": "app", "version": 4}},
    ):
        assert checksum_after_appends(previous, _lines(add, other), "t") is None, other
    with_dv = {"add": {**add["add"], "deletionVector": {"storageType": "u"}}}
    assert checksum_after_appends(previous, _lines(with_dv), "t") is None


def test_a_large_table_keeps_no_file_list_in_its_checksum() -> None:
    old = [
        {"path": f"{i}.parquet", "size": 1, "partitionValues": {}}
        for i in range(CHECKSUM_MAX_FILES)
    ]
    text = _lines({"add": {"path": "new.parquet", "size": 1, "partitionValues": {}}})
    state = checksum_after_appends(_previous_checksum(old), text, "t")
    assert state is not None and "allFiles" not in state
    assert state["numFiles"] == CHECKSUM_MAX_FILES + 1
