"""The merged views without a JVM: the same Delta tables read with delta-rs, merged with DuckDB.

The same merge as :mod:`serving_layer.merge`, the same pinning order (the generations table
first, then the view's batch table and its speed increments, each at the version just
resolved), the same answers: rows as dicts with ``Decimal`` money, ``date`` days and aware UTC
timestamps. Used by ``lambda-sales query`` (default engine) and the HTTP API.

What a long-lived reader (the HTTP server) keeps between answers, all keyed by things that
never change once written, so a cache never serves stale rows:

* a generation's batch view rows, by (table id, generation): written before the publish
  commit and never changed afterwards;
* each speed increments data file, by its path: Delta data files are immutable;
* the merged view, by the pinned versions of the three tables it was computed from;
* per view, the last merged view with the increments files it holds: when only new
  increments files arrived since (a micro-batch), the next merged view is that one ⊕ the new
  files' rows, exact because every measure is a monoid, instead of a merge of everything.

Only tables delta-rs can read through Arrow are accepted: ``to_pyarrow_dataset`` refuses
reader features such as deletion vectors or column mapping with a clear error (the tables
this project writes use neither; see the README's serving section).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import DeltaProtocolError
from deltalake.fs import DeltaStorageHandler
from pyspark.sql import types as T

from sales_core.lakehouse import Lakehouse
from sales_core.views import ViewDef, get_view
from serving_layer.query import (
    Answer,
    NoViewsError,
    ViewQuery,
    gold_key,
    increments_key,
    normalise_value,
)

log = logging.getLogger(__name__)

# Merged views kept per reader (each one view at one set of versions).
MERGED_CACHE_ENTRIES = 16
_OPERATORS = {"=": "=", ">=": ">=", "<=": "<=", "<": "<"}
_PARQUET = pds.ParquetFileFormat(
    default_fragment_scan_options=pds.ParquetFragmentScanOptions(pre_buffer=True)
)


def duck_type(data_type: T.DataType) -> str:
    """The DuckDB type of a view column (money stays DECIMAL(18,2), timestamps stay UTC)."""
    if isinstance(data_type, T.DecimalType):
        return f"DECIMAL({data_type.precision},{data_type.scale})"
    names: dict[type[T.DataType], str] = {
        T.LongType: "BIGINT",
        T.IntegerType: "INTEGER",
        T.StringType: "VARCHAR",
        T.DateType: "DATE",
        T.TimestampType: "TIMESTAMPTZ",
        T.DoubleType: "DOUBLE",
    }
    for cls, name in names.items():
        if isinstance(data_type, cls):
            return name
    raise ValueError(f"no DuckDB type for {data_type.simpleString()}")


def _ident(name: str) -> str:
    """A column name from a view definition as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def merge_sql(view: ViewDef, source: str) -> str:
    """``merge_partials`` in DuckDB SQL over the relation ``source`` (derived from the ViewDef)."""
    combine = {"count": "sum", "sum": "sum", "min": "min", "max": "max"}
    keys = ", ".join(_ident(k) for k in view.key_names)
    measures = ", ".join(
        f"CAST({combine[m.kind]}({_ident(m.name)}) AS {duck_type(m.data_type)}) AS {_ident(m.name)}"
        for m in view.measures
    )
    return f"SELECT {keys}, {measures} FROM {source} GROUP BY {keys}"


def _may_hold_above(actions: pa.Table, handoff: dict[str, int]) -> list[bool]:
    """Per data file (a row of flattened add actions): False when its statistics show that
    every row is of one stream whose micro-batches up to the mark are covered."""
    n = actions.num_rows
    if (
        not handoff
        or n == 0
        or not {"min.stream", "max.stream", "max.batch_id"} <= set(actions.column_names)
    ):
        return [True] * n
    low, high = actions.column("min.stream").to_pylist(), actions.column("max.stream").to_pylist()
    top = actions.column("max.batch_id").to_pylist()
    nulls = [
        actions.column(f"null_count.{c}").to_pylist()
        if f"null_count.{c}" in actions.column_names
        else [None] * n
        for c in ("stream", "batch_id")
    ]
    keep = []
    for i in range(n):
        covered = (
            low[i] is not None
            and low[i] == high[i]
            and low[i] in handoff
            and top[i] is not None
            and top[i] <= handoff[low[i]]
            and nulls[0][i] == 0
            and nulls[1][i] == 0
        )
        keep.append(not covered)
    return keep


def _check_readable(table: DeltaTable) -> None:
    """Refuse tables whose rows Parquet alone does not give (as ``to_pyarrow_dataset`` does)."""
    features = set(table.protocol().reader_features or ())
    unsupported = features & {"deletionVectors", "columnMapping"}
    if unsupported:
        raise DeltaProtocolError(
            f"{table.table_uri}: reader features {sorted(unsupported)} are not supported by the fast path; "
            "use the Spark path (--engine spark)"
        )


def _read_files(
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
    :func:`_check_readable` first."""
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


def above_handoff(handoff: dict[str, int]) -> pc.Expression:
    """Arrow expression: increments not covered by the hand-off mark (as in the Spark path)."""
    covered = [
        (pc.field("stream") == stream) & (pc.field("batch_id") <= mark)
        for stream, mark in sorted(handoff.items())
    ]
    if not covered:
        return pc.scalar(True)
    expression = covered[0]
    for more in covered[1:]:
        expression = expression | more
    return ~expression


@dataclass(frozen=True)
class _MergedBase:
    """A merged view and what it was computed from: the inputs that must be the same for a
    later merge to start from it (``lineage``) and the increments files it holds."""

    lineage: tuple[Any, ...]
    files: frozenset[str]
    rows: pa.Table


@dataclass(frozen=True)
class _Pinned:
    """A table at the version just resolved. The delta-rs object is shared and moves on with
    the next resolve, so it is only used under the reader's lock."""

    table: DeltaTable | None
    version: int | None
    table_id: str | None


class FastServing:
    """Answers merged-view queries from the Delta tables under ``lakehouse_root``.

    Thread-safe: resolving versions and the caches are guarded by one lock; each answer runs
    its DuckDB query on its own cursor.
    """

    def __init__(
        self, lakehouse_root: str, *, storage_options: dict[str, str] | None = None
    ) -> None:
        self.lakehouse = Lakehouse(lakehouse_root)
        self.storage_options = storage_options
        self._lock = threading.Lock()
        self._tables: dict[str, DeltaTable] = {}
        self._generations: dict[
            tuple[str | None, int], tuple[int, dict[str, int], datetime] | None
        ] = {}
        self._gold_rows: dict[tuple[str, str | None, int], pa.Table] = {}
        self._increment_files: dict[tuple[str, str], pa.Table] = {}
        self._merged: OrderedDict[tuple[Any, ...], pa.Table] = OrderedDict()
        self._bases: dict[str, _MergedBase] = {}
        # How each merged view was computed ("full" or "incremental"): for tests and benchmarks.
        self.merges: dict[str, int] = {"full": 0, "incremental": 0}
        self._duck = duckdb.connect(":memory:")
        self._duck.execute("SET TimeZone = 'UTC'")

    # ------------------------------------------------------------------ pinning

    def _latest(self, path: str) -> _Pinned:
        """The table at ``path`` at its latest version (a fresh object: pinned from now on)."""
        table = self._tables.get(path)
        try:
            if table is None:
                if not DeltaTable.is_deltatable(path, storage_options=self.storage_options):
                    return _Pinned(None, None, None)
                table = DeltaTable(path, storage_options=self.storage_options)
            else:
                table.update_incremental()
        except Exception as exc:  # a table being created right now looks like no table yet
            log.warning("could not load the Delta table %s (treated as absent): %s", path, exc)
            return _Pinned(None, None, None)
        self._tables[path] = table
        return _Pinned(table, table.version(), str(table.metadata().id))

    def _current_generation(self, pinned: _Pinned) -> tuple[int, dict[str, int], datetime] | None:
        if pinned.table is None or pinned.version is None:
            return None
        key = (pinned.table_id, pinned.version)
        if key not in self._generations:
            rows = pinned.table.to_pyarrow_table(
                columns=["generation", "handoff", "published_at"]
            ).to_pylist()
            newest = max(rows, key=lambda r: r["generation"], default=None)
            self._generations[key] = (
                None
                if newest is None
                else (
                    int(newest["generation"]),
                    {str(k): int(v) for k, v in newest["handoff"]},
                    normalise_value(newest["published_at"]),
                )
            )
        return self._generations[key]

    # ------------------------------------------------------------------ reading

    def _gold(self, view: ViewDef, pinned: _Pinned, generation: int) -> pa.Table:
        key = (view.name, pinned.table_id, generation)
        rows = self._gold_rows.get(key)
        if rows is None:
            assert pinned.table is not None
            dataset = pinned.table.to_pyarrow_dataset(
                file_pruning_predicate=[("generation", "=", str(generation))]
            )
            rows = dataset.to_table(columns=list(view.columns))
            # Generations replaced by newer ones are not read again.
            for old in [k for k in self._gold_rows if k[0] == view.name and k != key]:
                del self._gold_rows[old]
            self._gold_rows[key] = rows
        return rows

    def _increment_files_above(
        self, pinned: _Pinned, handoff: dict[str, int]
    ) -> tuple[dict[str, pa.Table], pa.Schema]:
        """The increments table's live data files that may hold micro-batches above the
        hand-off mark, each file's rows (all of them: filter with :func:`above_handoff`),
        and the table's schema. The files come from the table's add actions, and only files
        not read before are opened (:func:`_read_files`).
        """
        table = pinned.table
        assert table is not None
        _check_readable(table)
        schema = pa.schema(table.schema().to_arrow())
        actions = pa.table(table.get_add_actions(flatten=True))
        # Files whose statistics show only covered micro-batches are pruned unread.
        live = [
            p
            for p, may_hold in zip(
                actions.column("path").to_pylist(), _may_hold_above(actions, handoff), strict=True
            )
            if may_hold
        ]
        unread = [p for p in live if (table.table_uri, p) not in self._increment_files]
        for path, rows in _read_files(table, self.storage_options, actions, unread, schema).items():
            self._increment_files[(table.table_uri, path)] = rows
        files = {path: self._increment_files[(table.table_uri, path)] for path in live}
        for stale in [
            k for k in self._increment_files if k[0] == table.table_uri and k[1] not in files
        ]:
            del self._increment_files[stale]
        return files, schema

    def _merged_view(
        self, view: ViewDef
    ) -> tuple[pa.Table, int | None, dict[str, int], dict[str, int]]:
        """The whole merged view at freshly pinned versions: (rows, generation, handoff, versions)."""
        with self._lock:
            generations = self._latest(self.lakehouse.generations)
            current = self._current_generation(generations)
            gold = (
                self._latest(self.lakehouse.batch_view(view.name))
                if current
                else _Pinned(None, None, None)
            )
            increments = self._latest(self.lakehouse.speed_increments(view.name))
            versions = {
                name: pinned.version
                for name, pinned in (
                    ("generations", generations),
                    (gold_key(view.name), gold),
                    (increments_key(view.name), increments),
                )
                if pinned.version is not None
            }
            generation, handoff = (current[0], current[1]) if current else (None, {})
            key = (
                view.name,
                generations.table_id,
                gold.table_id,
                increments.table_id,
                tuple(sorted(versions.items())),
            )
            merged = self._merged.get(key)
            if merged is not None:
                self._merged.move_to_end(key)
                return merged, generation, handoff, versions
            lineage = (
                generations.table_id,
                generation,
                tuple(sorted(handoff.items())),
                gold.table_id,
                increments.table_id,
            )
            files: dict[str, pa.Table] = {}
            if increments.table is not None:
                files, schema = self._increment_files_above(increments, handoff)
                # An increments table without micro-batches above the mark is an empty view part.
                empty = schema.empty_table().select(list(view.columns))
            base = self._bases.get(view.name)
            incremental = (
                base is not None and base.lineage == lineage and base.files <= files.keys()
            )
            sources: list[pa.Table] = []
            if base is not None and incremental:
                # Only new micro-batches since the last merge: add them to it.
                sources.append(base.rows)
                new_files = [files[path] for path in sorted(files.keys() - base.files)]
            else:
                if generation is not None and gold.table is not None:
                    sources.append(self._gold(view, gold, generation))
                new_files = [files[path] for path in sorted(files)]
        wanted = above_handoff(handoff)
        sources.extend(rows.filter(wanted).select(list(view.columns)) for rows in new_files)
        if increments.table is not None and not sources:
            sources.append(empty)
        sources = [s for s in sources if s.num_rows] or sources[:1]
        if not sources:
            raise NoViewsError(
                "no views yet: run `lambda-sales batch` or `lambda-sales speed` first"
            )
        if base is not None and incremental and len(sources) == 1 and sources[0] is base.rows:
            merged = (
                base.rows
            )  # nothing new above the mark (a covered file, another table's commit)
        else:
            merged = self._merge(view, sources)
        with self._lock:
            self.merges["incremental" if incremental else "full"] += 1
            self._bases[view.name] = _MergedBase(lineage, frozenset(files), merged)
            self._merged[key] = merged
            while len(self._merged) > MERGED_CACHE_ENTRIES:
                self._merged.popitem(last=False)
        return merged, generation, handoff, versions

    def _merge(self, view: ViewDef, sources: list[pa.Table]) -> pa.Table:
        """``merge_partials`` of ``sources`` (rows of the view's columns) in key order."""
        partials = pa.concat_tables([s.cast(sources[0].schema) for s in sources])
        cursor = self._duck.cursor()
        try:
            cursor.register("partials", partials)
            # Kept in key order: a page of the unfiltered view is then a slice, with no sort.
            ordered = (
                merge_sql(view, "partials")
                + " ORDER BY "
                + ", ".join(_ident(k) for k in view.key_names)
            )
            return cursor.sql(ordered).to_arrow_table()
        finally:
            cursor.close()

    # ------------------------------------------------------------------ answering

    def answer(self, query: ViewQuery) -> Answer:
        """The rows ``query`` asks for, ordered by the view's keys.

        Raises:
            NoViewsError: neither a published generation nor speed increments exist.
        """
        view = query.view
        merged, generation, handoff, versions = self._merged_view(view)
        if not query.predicates():
            end = merged.num_rows if query.limit is None else query.offset + query.limit
            page = merged.slice(query.offset, max(0, end - query.offset))
            return Answer(arrow_rows(page, view.columns), generation, handoff, versions)
        conditions, parameters = [], []
        for column, operator, value in query.predicates():
            if column not in view.columns:  # the allow-list; ViewQuery is built from it anyway
                raise ValueError(f"unknown column '{column}'")
            conditions.append(f"{_ident(column)} {_OPERATORS[operator]} ?")
            parameters.append(value)
        sql = "SELECT * FROM merged"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        sql += " ORDER BY " + ", ".join(_ident(k) for k in view.key_names)
        if query.limit is not None:
            sql += " LIMIT ?"
            parameters.append(query.limit)
        if query.offset:
            sql += " OFFSET ?"
            parameters.append(query.offset)
        cursor = self._duck.cursor()
        try:
            cursor.register("merged", merged)
            result = cursor.sql(sql, params=parameters or None).to_arrow_table()
        finally:
            cursor.close()
        return Answer(arrow_rows(result, view.columns), generation, handoff, versions)

    def clear_merged_cache(self) -> None:
        """Forget merged views (the file caches stay): the next answer merges everything."""
        with self._lock:
            self._merged.clear()
            self._bases.clear()

    def rows(self, view_name: str, **query: Any) -> list[dict[str, Any]]:
        """Every row of a merged view (a convenience for Python callers and tests)."""
        return self.answer(ViewQuery(get_view(view_name), **query)).rows

    # ------------------------------------------------------------------ health

    def health(self, now: datetime | None = None) -> dict[str, Any]:
        """Freshness of both layers and the current batch generation (for ``GET /health``)."""
        now = now or datetime.now(timezone.utc)
        with self._lock:
            generations = self._latest(self.lakehouse.generations)
            current = self._current_generation(generations)
            metrics = self._latest(self.lakehouse.stream_metrics)
        batch: dict[str, Any] = {
            "generation": None,
            "published_at": None,
            "seconds_since_publish": None,
            "handoff": {},
        }
        if current:
            generation, handoff, published_at = current
            batch = {
                "generation": generation,
                "published_at": published_at,
                "seconds_since_publish": round((now - published_at).total_seconds(), 3),
                "handoff": handoff,
            }
        speed: dict[str, Any] = {
            "last_micro_batch": None,
            "last_micro_batch_at": None,
            "newest_event_at": None,
            "seconds_since_last_micro_batch": None,
            "seconds_since_newest_event": None,
        }
        if metrics.table is not None:
            last = _newest_metrics(metrics.table, self.storage_options)
            if last:
                speed["last_micro_batch"] = last["batch_id"]
                for name, value in (
                    ("last_micro_batch_at", last["ended_at"]),
                    ("newest_event_at", last["newest_message_at"]),
                ):
                    speed[name] = value
                    seconds_key = (
                        "seconds_since_last_micro_batch"
                        if name == "last_micro_batch_at"
                        else "seconds_since_newest_event"
                    )
                    speed[seconds_key] = round((now - value).total_seconds(), 3) if value else None
        return {
            "status": "ok" if current or metrics.table is not None else "empty",
            "now": now,
            "batch": batch,
            "speed": speed,
            "versions": {
                k: v.version
                for k, v in (("generations", generations), ("stream_metrics", metrics))
                if v.version is not None
            },
        }


def arrow_rows(table: pa.Table, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows as dicts, column by column (a page of 1000 rows is most of a warm answer's time):
    UTC timestamps become naive values tagged ``timezone.utc``, as :func:`normalise_value` does."""
    values = []
    for name in columns:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            naive = column.cast(pa.timestamp(column.type.unit))  # UTC wall time, no zone
            values.append(
                [v if v is None else v.replace(tzinfo=timezone.utc) for v in naive.to_pylist()]
            )
        else:
            values.append(column.to_pylist())
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def _newest_metrics(
    table: DeltaTable, storage_options: dict[str, str] | None
) -> dict[str, Any] | None:
    """The newest micro-batch's metrics: ``stream_metrics`` gets one small file per
    micro-batch, so only the files whose statistics hold the highest ``batch_id`` are read."""
    _check_readable(table)
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
        for t in _read_files(
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
