"""The merged views without a JVM: :mod:`serving_layer.merge_spec` rendered with delta-rs
(reading, :mod:`serving_layer.delta_files`) and DuckDB (merging, filtering, paging).

The same pinning (:func:`~serving_layer.merge_spec.pin`), the same merge, the same answers as
:mod:`serving_layer.spark_engine`: rows as dicts with ``Decimal`` money, ``date`` days and
aware UTC timestamps. Used by ``lambda-sales query`` (default engine) and the HTTP API.

What a long-lived reader (the HTTP server) keeps between answers, all keyed by things that
never change once written, so a cache never serves stale rows:

* a generation's batch view rows, by (table id, generation): written before the publish
  commit and never changed afterwards;
* each speed increments data file's rows of the view, by its path: Delta data files are
  immutable;
* the merged view, by the pinned versions of the three tables it was computed from;
* per view, the last merged view with the increments files it holds: when only new
  increments files arrived since (a micro-batch), the next merged view is that one ⊕ the new
  files' rows, exact because every measure is a monoid, instead of a merge of everything.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import duckdb
import pyarrow as pa
from pyspark.sql import types as T

from sales_core.handoff import Generation
from sales_core.lakehouse import Lakehouse
from sales_core.views import ViewDef, get_view
from serving_layer.delta_files import (
    ABSENT,
    DeltaTables,
    Pinned,
    arrow_filter,
    check_readable,
    may_hold_rows,
    newest_increments_commit,
    newest_metrics,
    partition_filters,
    read_files,
    read_generation,
)
from serving_layer.merge_spec import (
    GENERATIONS_KEY,
    INCREMENTS_KEY,
    NO_VIEWS,
    MergeSpec,
    RowFilter,
    Snapshot,
    merge_select,
    merge_spec,
    pin,
)
from serving_layer.query import Answer, NoViewsError, ViewQuery

# Merged views kept per reader (each one view at one set of versions).
MERGED_CACHE_ENTRIES = 16
_OPERATORS = {"=": "=", ">=": ">=", "<=": "<=", "<": "<"}


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


def _order_by(view: ViewDef) -> str:
    return " ORDER BY " + ", ".join(_ident(k) for k in view.key_names)


@dataclass(frozen=True)
class _MergedBase:
    """A merged view and what it was computed from: the inputs that must be the same for a
    later merge to start from it (``lineage``) and the increments files it holds."""

    lineage: tuple[Any, ...]
    files: frozenset[str]
    rows: pa.Table


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
        self._tables = DeltaTables(storage_options)
        self._generations: dict[tuple[str | None, int], Generation | None] = {}
        self._gold_rows: dict[tuple[str, str | None, int], pa.Table] = {}
        self._increment_files: dict[tuple[str, RowFilter], dict[str, pa.Table]] = {}
        self._merged: OrderedDict[tuple[Any, ...], pa.Table] = OrderedDict()
        self._bases: dict[str, _MergedBase] = {}
        # How each merged view was computed ("full" or "incremental"): for tests and benchmarks.
        self.merges: dict[str, int] = {"full": 0, "incremental": 0}
        self._duck = duckdb.connect(":memory:")
        self._duck.execute("SET TimeZone = 'UTC'")

    # ------------------------------------------------------------------ pinning

    def _generation(self, pinned: Pinned) -> Generation | None:
        if pinned.table is None or pinned.version is None:
            return None
        key = (pinned.table_id, pinned.version)
        if key not in self._generations:
            self._generations[key] = read_generation(pinned.table)
        return self._generations[key]

    def _pin(self, spec: MergeSpec) -> tuple[Snapshot, dict[str, Pinned]]:
        """The spec's tables pinned now (call under the lock), and their delta-rs objects."""
        pinned: dict[str, Pinned] = {}

        def latest(path: str, exists: bool) -> int | None:
            pinned[path] = self._tables.latest(path)
            return pinned[path].version

        snapshot = pin(
            self.lakehouse.generations,
            [spec],
            latest=latest,
            generation_at=lambda _: self._generation(pinned[self.lakehouse.generations]),
        )
        return snapshot, pinned

    # ------------------------------------------------------------------ reading

    def _gold(self, spec: MergeSpec, pinned: Pinned, generation: int) -> pa.Table:
        key = (spec.view.name, pinned.table_id, generation)
        rows = self._gold_rows.get(key)
        if rows is None:
            assert pinned.table is not None
            wanted = spec.batch_rows(generation)
            dataset = pinned.table.to_pyarrow_dataset(
                file_pruning_predicate=partition_filters(wanted)
            )
            rows = dataset.to_table(columns=list(spec.view.columns), filter=arrow_filter(wanted))
            # Generations replaced by newer ones are not read again.
            for old in [k for k in self._gold_rows if k[0] == spec.view.name and k != key]:
                del self._gold_rows[old]
            self._gold_rows[key] = rows
        return rows

    def _increment_files_above(
        self, spec: MergeSpec, pinned: Pinned, handoff: dict[str, int]
    ) -> tuple[dict[str, pa.Table], pa.Schema]:
        """The increments table's live data files that may hold the view's micro-batches above
        the hand-off mark, each file's rows of the view (all micro-batches: filter with
        ``handoff_filter``), and the table's schema. The files come from the table's add
        actions, and only files not read before are opened (:func:`read_files`).
        """
        table = pinned.table
        assert table is not None
        check_readable(table)
        schema = pa.schema(table.schema().to_arrow())
        actions = pa.table(table.get_add_actions(flatten=True))
        # Files whose statistics show no row of the view above the mark are pruned unread.
        live = [
            path
            for path, may_hold in zip(
                actions.column("path").to_pylist(),
                may_hold_rows(actions, spec.increments.rows_above(handoff)),
                strict=True,
            )
            if may_hold
        ]
        source = (table.table_uri, spec.increments.rows)
        cached = self._increment_files.get(source, {})
        unread = [p for p in live if p not in cached]
        for path, rows in read_files(table, self.storage_options, actions, unread, schema).items():
            if not spec.increments.rows.keeps_all:
                rows = rows.filter(arrow_filter(spec.increments.rows))
            cached[path] = rows
        # Files no longer live (compacted away, covered by the mark) are forgotten.
        files = self._increment_files[source] = {path: cached[path] for path in live}
        return files, schema

    def _merged_view(self, spec: MergeSpec) -> tuple[pa.Table, Snapshot]:
        """The whole merged view at freshly pinned versions, and the snapshot it comes from."""
        view = spec.view
        with self._lock:
            snapshot, pinned = self._pin(spec)
            generations = pinned[self.lakehouse.generations]
            gold = pinned.get(spec.batch_path, ABSENT)
            increments = pinned[spec.increments.path]
            generation, handoff = snapshot.generation, snapshot.handoff
            ids = (generations.table_id, gold.table_id, increments.table_id)
            key = (view.name, *ids, tuple(sorted(snapshot.versions.items())))
            merged = self._merged.get(key)
            if merged is not None:
                self._merged.move_to_end(key)
                return merged, snapshot
            number = generation.generation if generation else None
            lineage = (ids[0], number, tuple(sorted(handoff.items())), *ids[1:])
            files: dict[str, pa.Table] = {}
            if increments.table is not None:
                files, schema = self._increment_files_above(spec, increments, handoff)
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
                if number is not None and gold.table is not None:
                    sources.append(self._gold(spec, gold, number))
                new_files = [files[path] for path in sorted(files)]
        wanted = arrow_filter(spec.increments.handoff_filter(handoff))
        sources.extend(rows.filter(wanted).select(list(view.columns)) for rows in new_files)
        if increments.table is not None and not sources:
            sources.append(empty)
        sources = [s for s in sources if s.num_rows] or sources[:1]
        if not sources:
            raise NoViewsError(NO_VIEWS)
        if base is not None and incremental and len(sources) == 1 and sources[0] is base.rows:
            # Nothing new above the mark (a covered file, another table's commit).
            merged = base.rows
        else:
            merged = self._merge(view, sources)
        with self._lock:
            self.merges["incremental" if incremental else "full"] += 1
            self._bases[view.name] = _MergedBase(lineage, frozenset(files), merged)
            self._merged[key] = merged
            while len(self._merged) > MERGED_CACHE_ENTRIES:
                self._merged.popitem(last=False)
        return merged, snapshot

    def _merge(self, view: ViewDef, sources: list[pa.Table]) -> pa.Table:
        """The merge of ``sources`` (rows of the view's columns) in key order."""
        partials = pa.concat_tables([s.cast(sources[0].schema) for s in sources])
        cursor = self._duck.cursor()
        try:
            cursor.register("partials", partials)
            # Kept in key order: a page of the unfiltered view is then a slice, with no sort.
            sql = merge_select(view, "partials", sql_type=duck_type, ident=_ident)
            return cursor.sql(sql + _order_by(view)).to_arrow_table()
        finally:
            cursor.close()

    # ------------------------------------------------------------------ answering

    def answer(self, query: ViewQuery) -> Answer:
        """The rows ``query`` asks for, ordered by the view's keys.

        Raises:
            NoViewsError: neither a published generation nor speed increments exist.
        """
        view = query.view
        merged, snapshot = self._merged_view(merge_spec(self.lakehouse, view.name))
        if not query.predicates():
            end = merged.num_rows if query.limit is None else query.offset + query.limit
            page = merged.slice(query.offset, max(0, end - query.offset))
            return snapshot.answer(arrow_rows(page, view.columns))
        conditions, parameters = [], []
        for column, operator, value in query.predicates():
            if column not in view.columns:  # the allow-list; ViewQuery is built from it anyway
                raise ValueError(f"unknown column '{column}'")
            conditions.append(f"{_ident(column)} {_OPERATORS[operator]} ?")
            parameters.append(value)
        sql = "SELECT * FROM merged WHERE " + " AND ".join(conditions) + _order_by(view)
        if query.limit is not None:
            sql += " LIMIT ?"
            parameters.append(query.limit)
        if query.offset:
            sql += " OFFSET ?"
            parameters.append(query.offset)
        cursor = self._duck.cursor()
        try:
            cursor.register("merged", merged)
            result = cursor.sql(sql, params=parameters).to_arrow_table()
        finally:
            cursor.close()
        return snapshot.answer(arrow_rows(result, view.columns))

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
            generations = self._tables.latest(self.lakehouse.generations)
            current = self._generation(generations)
            metrics = self._tables.latest(self.lakehouse.stream_metrics)
            increments = self._tables.latest(self.lakehouse.speed_increments)
            newest_commit = newest_increments_commit(increments)
        batch: dict[str, Any] = {
            "generation": None,
            "published_at": None,
            "seconds_since_publish": None,
            "handoff": {},
        }
        if current:
            published_at = current.published_at
            assert published_at is not None
            batch = {
                "generation": current.generation,
                "published_at": published_at,
                "seconds_since_publish": round((now - published_at).total_seconds(), 3),
                "handoff": current.handoff,
            }
        speed: dict[str, Any] = {
            "last_micro_batch": None,
            "last_micro_batch_at": None,
            "newest_event_at": None,
            "seconds_since_last_micro_batch": None,
            "seconds_since_newest_event": None,
        }
        last = None
        if metrics.table is not None:
            last = newest_metrics(metrics.table, self.storage_options)
        if newest_commit is not None:
            # The increments commit is on the micro-batch's path; the metrics come seconds
            # later, in batches: the newer of the two (a micro-batch without new events
            # commits no increments).
            commit, committed_at = newest_commit
            if last is None or commit.batch_id > last["batch_id"]:
                last = {
                    "batch_id": commit.batch_id,
                    "ended_at": committed_at,
                    "newest_message_at": commit.newest_message_at,
                }
        if last:
            speed["last_micro_batch"] = last["batch_id"]
            for name, seconds_key, value in (
                ("last_micro_batch_at", "seconds_since_last_micro_batch", last["ended_at"]),
                ("newest_event_at", "seconds_since_newest_event", last["newest_message_at"]),
            ):
                speed[name] = value
                speed[seconds_key] = round((now - value).total_seconds(), 3) if value else None
        return {
            "status": "ok"
            if current or metrics.table is not None or increments.table is not None
            else "empty",
            "now": now,
            "batch": batch,
            "speed": speed,
            "versions": {
                k: v.version
                for k, v in (
                    (GENERATIONS_KEY, generations),
                    (INCREMENTS_KEY, increments),
                    ("stream_metrics", metrics),
                )
                if v.version is not None
            },
        }


def arrow_rows(table: pa.Table, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows as dicts, column by column (a page of 1000 rows is most of a warm answer's time):
    UTC timestamps become naive values tagged ``timezone.utc``, as ``normalise_value`` does."""
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
