"""The merged views on Spark (the cluster path), rendered from :mod:`serving_layer.merge_spec`.

Each part of a view (:meth:`MergeSpec.parts`) is a Delta read at its pinned version
(``versionAsOf``) with its row filter as a Column; the parts are unioned and combined with
the view's monoids by :func:`sales_core.views.merge_partials`, the very function the batch
layer's reconciliation uses.
"""

from __future__ import annotations

from functools import partial, reduce
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_core.handoff import Generation, current_generation
from sales_core.lakehouse import Lakehouse, table_version
from sales_core.views import VIEWS, merge_partials
from serving_layer.merge_spec import NO_VIEWS, RowFilter, Snapshot, merge_spec, pin
from serving_layer.query import Answer, NoViewsError, Predicate, ViewQuery, normalise_value


def _latest_version(spark: SparkSession, path: str, exists: bool) -> int | None:
    if not exists and not DeltaTable.isDeltaTable(spark, path):
        return None
    return table_version(spark, path)


def pin_snapshot(
    spark: SparkSession, lakehouse: Lakehouse, view_names: tuple[str, ...] = tuple(VIEWS)
) -> Snapshot:
    """Pin the generations table, then the tables of ``view_names`` (in this order)."""
    return pin(
        lakehouse.generations,
        [merge_spec(lakehouse, name) for name in view_names],
        latest=partial(_latest_version, spark),
        generation_at=lambda version: current_generation(spark, lakehouse, version=version),
    )


def condition(predicate: Predicate) -> Column:
    """One ``(column, operator, value)`` comparison as a Column."""
    column, operator, value = predicate
    col, lit = F.col(column), F.lit(value)
    return {"=": col == lit, ">=": col >= lit, "<=": col <= lit, "<": col < lit}[operator]


def row_condition(rows: RowFilter) -> Column:
    """A :class:`RowFilter` as a Column."""
    return rows.build(condition, F.lit(True))  # type: ignore[no-any-return]


def merged_view(
    spark: SparkSession, lakehouse: Lakehouse, view_name: str, snapshot: Snapshot | None = None
) -> DataFrame:
    """The merged view ``view_name`` at ``snapshot`` (pinned now when not given).

    Raises:
        NoViewsError: neither a published generation nor speed increments exist.
    """
    spec = merge_spec(lakehouse, view_name)
    view = spec.view
    snapshot = snapshot or pin_snapshot(spark, lakehouse, (view.name,))
    parts = [
        spark.read.format("delta")
        .option("versionAsOf", part.version)
        .load(part.path)
        .where(row_condition(part.rows))
        .select(*view.columns)
        for part in spec.parts(snapshot)
    ]
    if not parts:
        raise NoViewsError(NO_VIEWS)
    partials = reduce(DataFrame.unionByName, parts)
    return partials.transform(merge_partials(view)).select(*view.columns)


def select(rows: DataFrame, query: ViewQuery) -> DataFrame:
    """``query``'s filters, key order and page applied to a merged view."""
    for predicate in query.predicates():
        rows = rows.where(condition(predicate))
    rows = rows.orderBy(*query.view.key_names)
    if query.offset:
        rows = rows.offset(query.offset)
    if query.limit is not None:
        rows = rows.limit(query.limit)
    return rows


def query_merged(
    spark: SparkSession, lakehouse: Lakehouse, query: ViewQuery
) -> tuple[DataFrame, Snapshot]:
    """The rows ``query`` asks for, ordered by the view's keys, and the snapshot they come from."""
    view = query.view
    snapshot = pin_snapshot(spark, lakehouse, (view.name,))
    return select(merged_view(spark, lakehouse, view.name, snapshot), query), snapshot


def to_rows(df: DataFrame, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Collect ``df`` as dicts in the representation every engine answers with."""
    return [{c: normalise_value(r[c]) for c in columns} for r in df.collect()]


def answer(spark: SparkSession, lakehouse: Lakehouse, query: ViewQuery) -> Answer:
    """The rows of ``query`` as dicts (the same values the DuckDB engine answers)."""
    rows, snapshot = query_merged(spark, lakehouse, query)
    return snapshot.answer(to_rows(rows, query.view.columns))


class SparkServing:
    """A long-lived Spark reader (a warm session answering many queries): the same answers as
    :func:`answer`, with the merged view of each pinned set of versions kept in memory.

    The cache is keyed by the pinned Delta versions, which name immutable contents: a new
    publish or micro-batch gives new versions, hence a new entry; nothing stale is served.
    """

    def __init__(self, spark: SparkSession, lakehouse: Lakehouse, *, entries: int = 8) -> None:
        self.spark, self.lakehouse, self.entries = spark, lakehouse, entries
        self._generations: dict[int, Generation | None] = {}
        self._merged: dict[tuple[Any, ...], DataFrame] = {}

    def _generation_at(self, version: int) -> Generation | None:
        if version not in self._generations:
            self._generations[version] = current_generation(
                self.spark, self.lakehouse, version=version
            )
        return self._generations[version]

    def answer(self, query: ViewQuery) -> Answer:
        view = query.view
        snapshot = pin(
            self.lakehouse.generations,
            [merge_spec(self.lakehouse, view.name)],
            latest=partial(_latest_version, self.spark),
            generation_at=self._generation_at,
        )
        key = (view.name, tuple(sorted(snapshot.versions.items())))
        merged = self._merged.get(key)
        if merged is None:
            merged = merged_view(self.spark, self.lakehouse, view.name, snapshot).cache()
            self._merged[key] = merged
            while len(self._merged) > self.entries:
                self._merged.pop(next(iter(self._merged))).unpersist()
        return snapshot.answer(to_rows(select(merged, query), view.columns))
