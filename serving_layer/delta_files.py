"""Delta tables read with delta-rs and Arrow for the DuckDB engine (no JVM, no SQL here).

A reader keeps one delta-rs object per table and moves it to the latest version on each pin
(:class:`DeltaTables`); data files are read straight from Parquet (:func:`read_files`) and
skipped unread when their statistics show that no row of them passes a
:class:`~serving_layer.merge_spec.RowFilter` (:func:`may_hold_rows`); row filters become
Arrow expressions (:func:`arrow_filter`).

Only tables delta-rs can read through Arrow are accepted: ``to_pyarrow_dataset`` refuses
reader features such as deletion vectors or column mapping with a clear error, and
:func:`check_readable` does the same for the files read directly (the tables this project
writes use neither; see the README's serving section).
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import DeltaProtocolError
from deltalake.fs import DeltaStorageHandler

from sales_core.delta_log import commit_file, parse_commit
from sales_core.handoff import Generation
from sales_core.lakehouse import IncrementsCommit, read_increments_commit
from serving_layer.merge_spec import RowFilter
from serving_layer.query import Predicate, normalise_value

log = logging.getLogger(__name__)

_PARQUET = pds.ParquetFileFormat(
    default_fragment_scan_options=pds.ParquetFragmentScanOptions(pre_buffer=True)
)
_COMPARE = {"=": operator.eq, ">=": operator.ge, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class Pinned:
    """A table at the version just resolved. The delta-rs object is shared and moves on with
    the next resolve, so it is only used under the reader's lock."""

    table: DeltaTable | None
    version: int | None
    table_id: str | None
    storage: DeltaStorageHandler | None = None  # the table's files, paths relative to its root


ABSENT = Pinned(None, None, None)


class DeltaTables:
    """A reader's delta-rs objects, one per table path (not thread-safe: use under a lock).

    A table already loaded is moved on only when its log holds the next version: one probe
    of ``_delta_log/<version + 1>.json`` (a stat, or a HEAD request on object storage; about
    0.2 ms here) instead of delta-rs listing the log, which grows with every commit (9 ms at
    300 commits; a stream with a 1-second trigger commits 86,400 times a day). A commit
    is therefore seen by the first pin after it.
    """

    def __init__(self, storage_options: dict[str, str] | None) -> None:
        self.storage_options = storage_options
        self._tables: dict[str, tuple[DeltaTable, DeltaStorageHandler, str]] = {}

    def latest(self, path: str) -> Pinned:
        """The table at ``path`` at its latest version (pinned from now on)."""
        known = self._tables.get(path)
        try:
            if known is None:
                if not DeltaTable.is_deltatable(path, storage_options=self.storage_options):
                    return ABSENT
                table = DeltaTable(path, storage_options=self.storage_options)
                storage = DeltaStorageHandler(table.table_uri, self.storage_options)
                known = (table, storage, str(table.metadata().id))
            else:
                table, storage, _ = known
                if next_commit_exists(storage, table.version()):
                    table.update_incremental()
                    known = (table, storage, str(table.metadata().id))
        except Exception as exc:  # a table being created right now looks like no table yet
            log.warning("could not load the Delta table %s (treated as absent): %s", path, exc)
            return ABSENT
        self._tables[path] = known
        return Pinned(known[0], known[0].version(), known[2], known[1])


def next_commit_exists(storage: DeltaStorageHandler, version: int) -> bool:
    """Whether the Delta log holds a commit after ``version`` (one stat of its next file)."""
    info = storage.get_file_info([commit_file(version + 1)])[0]
    return bool(info.type != pafs.FileType.NotFound)


def newest_increments_commit(
    pinned: Pinned, *, look_back: int = 20
) -> tuple[IncrementsCommit, datetime] | None:
    """The newest micro-batch commit of a speed increments table at or below its pinned
    version, and its commit time: read from the log's commit files, newest first, past
    commits of other kinds (a compaction, a maintenance delete), at most ``look_back``."""
    if pinned.storage is None or pinned.version is None:
        return None
    for version in range(pinned.version, max(-1, pinned.version - look_back), -1):
        try:
            with pinned.storage.open_input_file(commit_file(version)) as handle:
                text = handle.read().decode("utf-8")
        except (FileNotFoundError, OSError):
            return None  # cleaned up, or not there: say nothing rather than guess
        logged = parse_commit(version, text)
        commit = read_increments_commit(logged.user_metadata)
        if commit is not None and logged.timestamp_ms is not None:
            return commit, datetime.fromtimestamp(logged.timestamp_ms / 1000, timezone.utc)
    return None


def read_generation(table: DeltaTable) -> Generation | None:
    """The newest generation in the generations table ``table`` (None when it is empty)."""
    columns = ["generation", "master_version", "handoff", "events", "published_at"]
    rows = table.to_pyarrow_table(columns=columns).to_pylist()
    newest = max(rows, key=lambda r: r["generation"], default=None)
    if newest is None:
        return None
    return Generation(
        int(newest["generation"]),
        int(newest["master_version"]),
        {str(k): int(v) for k, v in newest["handoff"]},
        int(newest["events"]),
        normalise_value(newest["published_at"]),
    )


def arrow_filter(rows: RowFilter) -> pc.Expression:
    """A :class:`RowFilter` as an Arrow expression."""
    return rows.build(
        lambda p: _COMPARE[p[1]](pc.field(p[0]), p[2]),
        pc.scalar(True),
    )


def partition_filters(rows: RowFilter) -> list[tuple[str, str, str]]:
    """The comparisons of ``rows`` as delta-rs partition filters (partition columns only)."""
    return [(column, op, str(value)) for column, op, value in rows.all_of]


def _holds_for_all(comparison: Predicate, low: Any, high: Any, nulls: Any) -> bool:
    _, op, value = comparison
    if nulls != 0 or low is None or high is None:
        return False
    if op == "=":
        return bool(low == high == value)
    return bool(_COMPARE[op](low if op == ">=" else high, value))


def _holds_for_none(comparison: Predicate, low: Any, high: Any) -> bool:
    _, op, value = comparison
    if low is None or high is None:
        return False
    if op == "=":
        return bool(value < low or value > high)
    return not _COMPARE[op](high if op == ">=" else low, value)


def may_hold_rows(actions: pa.Table, rows: RowFilter) -> list[bool]:
    """Per data file (a row of flattened add actions): False when its statistics show that no
    row of it passes ``rows`` (a comparison of ``all_of`` holds for none of its rows, or a
    group of ``none_of`` holds wholly for all of them); True when they cannot tell."""
    n = actions.num_rows
    if rows.keeps_all or n == 0:
        return [True] * n
    names = set(actions.column_names)

    def stats(kind: str, column: str) -> list[Any]:
        name = f"{kind}.{column}"
        return actions.column(name).to_pylist() if name in names else [None] * n

    columns = {c for c, _, _ in rows.all_of} | {c for g in rows.none_of for c, _, _ in g}
    low = {c: stats("min", c) for c in columns}
    high = {c: stats("max", c) for c in columns}
    nulls = {c: stats("null_count", c) for c in columns}
    keep = []
    for i in range(n):
        skip = any(_holds_for_none(p, low[p[0]][i], high[p[0]][i]) for p in rows.all_of) or any(
            all(_holds_for_all(p, low[p[0]][i], high[p[0]][i], nulls[p[0]][i]) for p in group)
            for group in rows.none_of
        )
        keep.append(not skip)
    return keep


def check_readable(table: DeltaTable) -> None:
    """Refuse tables whose rows Parquet alone does not give (as ``to_pyarrow_dataset`` does)."""
    features = set(table.protocol().reader_features or ())
    unsupported = features & {"deletionVectors", "columnMapping"}
    if unsupported:
        raise DeltaProtocolError(
            f"{table.table_uri}: reader features {sorted(unsupported)} are not supported by the fast path; "
            "use the Spark path (--engine spark)"
        )


def read_files(
    table: DeltaTable,
    storage_options: dict[str, str] | None,
    actions: pa.Table,
    paths: list[str],
    schema: pa.Schema,
) -> dict[str, pa.Table]:
    """The rows of some of ``table``'s data files (``paths`` from its flattened add ``actions``),
    read straight from Parquet: delta-rs's ``to_pyarrow_dataset`` builds a statistics expression
    for every file of the table on each call (about 0.9 s with 1440 files), and the tables
    that get a file per micro-batch are read a file or two at a time. Call
    :func:`check_readable` first."""
    if not paths:
        return {}
    sizes = dict(
        zip(
            actions.column("path").to_pylist(),
            actions.column("size_bytes").to_pylist(),
            strict=True,
        )
    )
    filesystem = pafs.PyFileSystem(DeltaStorageHandler(table.table_uri, storage_options, sizes))
    return {
        path: _PARQUET.make_fragment(path, filesystem=filesystem, file_size=sizes[path]).to_table(
            schema=schema
        )
        for path in paths
    }


def newest_metrics(
    table: DeltaTable, storage_options: dict[str, str] | None
) -> dict[str, Any] | None:
    """The newest micro-batch's metrics: ``stream_metrics`` gets one small file per
    micro-batch, so only the files whose statistics hold the highest ``batch_id`` are read."""
    check_readable(table)
    actions = pa.table(table.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    top = None
    if (
        actions.num_rows
        and "max.batch_id" in actions.column_names
        and actions.column("max.batch_id").null_count == 0
    ):
        top = pc.max(actions.column("max.batch_id")).as_py()
        paths = [
            p
            for p, m in zip(paths, actions.column("max.batch_id").to_pylist(), strict=True)
            if m == top
        ]
    columns = ["batch_id", "ended_at", "newest_message_at"]
    parts = [
        t.select(columns)
        for t in read_files(
            table, storage_options, actions, paths, pa.schema(table.schema().to_arrow())
        ).values()
    ]
    rows = pa.concat_tables(parts).to_pylist() if parts else []
    if top is not None:
        rows = [r for r in rows if r["batch_id"] == top]
    if not rows:
        return None
    newest = max(rows, key=lambda r: r["batch_id"])
    newest_event = max(
        (r["newest_message_at"] for r in rows if r["newest_message_at"] is not None), default=None
    )
    return {
        "batch_id": int(newest["batch_id"]),
        "ended_at": normalise_value(newest["ended_at"]),
        "newest_message_at": normalise_value(newest_event),
    }
