"""Reading one commit of a Delta table's log (sales_core.delta_log): the facts the speed sink
and the serving layer take from commit files, from lines as Delta writes them."""

from __future__ import annotations

import json
import os

import pytest

from sales_core.delta_log import (
    CHECKSUM_MAX_FILES,
    Commit,
    checksum_after_appends,
    commit_file,
    expire_log,
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


def _log(tmp_path, entries: dict[str, float]):  # type: ignore[no-untyped-def]
    """A ``_delta_log`` whose files are named by ``entries``, each with its file time."""
    log = tmp_path / "_delta_log"
    log.mkdir()
    for name, mtime in entries.items():
        (log / name).write_text("{}\n")
        os.utime(log / name, (mtime, mtime))
    (log / "_last_checkpoint").write_text("{}\n")
    (log / "_staged_commits").mkdir()
    return log


def _v(version: int, suffix: str) -> str:
    return f"{version:020d}.{suffix}"


DAY = 86400.0
NOW = 100 * DAY


def test_the_log_is_cut_at_the_newest_checkpoint_older_than_the_retention(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # versions 0..9 ten days old, 10..19 today; checkpoints at 4, 8 and 14
    entries = {}
    for v in range(20):
        age = 10 * DAY if v < 10 else 60.0
        entries[_v(v, "json")] = NOW - age
        entries[_v(v, "crc")] = NOW - age
        entries[f".{_v(v, 'json')}.crc"] = NOW - age
    for v in (4, 8, 14):
        entries[_v(v, "checkpoint.parquet")] = NOW - 60
        entries[f".{_v(v, 'checkpoint.parquet')}.crc"] = NOW - 60
    log = _log(tmp_path, entries)

    deleted = expire_log(tmp_path, 7 * DAY, now=NOW)

    left = sorted(p.name for p in log.iterdir())
    assert (
        deleted == 8 * 3 + 2
    )  # versions 0..7: commit, checksum, side file; checkpoint 4, side file
    assert _v(8, "checkpoint.parquet") in left and _v(8, "json") in left
    assert all(not name[:20].isdigit() or int(name[:20]) >= 8 for name in left)
    assert {
        "_last_checkpoint",
        "_staged_commits",
        _v(19, "json"),
        _v(14, "checkpoint.parquet"),
    } <= set(left)
    assert expire_log(tmp_path, 7 * DAY, now=NOW) == 0  # a second run: nothing more


def test_nothing_goes_without_an_old_enough_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    entries = {_v(v, "json"): NOW - 10 * DAY for v in range(6)}
    entries[_v(6, "json")] = NOW - 60
    entries[_v(6, "checkpoint.parquet")] = NOW - 60  # the only checkpoint is inside the retention
    _log(tmp_path, entries)
    assert expire_log(tmp_path, 7 * DAY, now=NOW) == 0


def test_a_commit_newer_than_the_retention_protects_every_checkpoint_after_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # version 3's file time is inside the retention (a clock stepped back afterwards): the log
    # is cut no later than the checkpoint before it, so version 3 stays readable.
    entries = {_v(v, "json"): NOW - 10 * DAY for v in range(10)}
    entries[_v(3, "json")] = NOW - 60
    for v in (2, 6):
        entries[_v(v, "checkpoint.parquet")] = NOW - 10 * DAY
    log = _log(tmp_path, entries)
    assert expire_log(tmp_path, 7 * DAY, now=NOW) == 2  # versions 0 and 1
    assert (log / _v(2, "json")).exists() and (log / _v(6, "checkpoint.parquet")).exists()
