"""The merged views through Spark (the cluster path): batch view ⊕ speed increments.

merged view = rows of the current batch generation ⊕ the speed increments above that
generation's hand-off mark (all increments before the first publish), grouped by the view's
keys with its monoids (:func:`sales_core.views.merge_partials`).

One answer reads one consistent set of Delta versions (:class:`Snapshot`): the generations
table is pinned first, then the view and increments tables, each read with ``versionAsOf``.
A generation's view rows are written before the commit that publishes it and never change
afterwards (old generations are deleted only ``batch.keep_generations`` publishes later), and
increments are append-only, so tables pinned after the generations table always hold what the
pinned generation needs: a batch publishing mid-query yields the state before or after it,
never a mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_core.handoff import Generation, current_generation
from sales_core.lakehouse import Lakehouse, table_version
from sales_core.views import VIEWS, get_view, merge_partials
from serving_layer.query import (
    Answer,
    NoViewsError,
    Predicate,
    ViewQuery,
    gold_key,
    increments_key,
    normalise_value,
)


@dataclass(frozen=True)
class Snapshot:
    """The pinned state an answer is computed from.

    Attributes:
        generation: the published batch generation (None before the first publish).
        versions: Delta version per table read: ``generations``, ``gold/<view>``,
            ``increments/<view>``; a table missing here does not exist (yet).
    """

    generation: Generation | None
    versions: dict[str, int]

    @property
    def handoff(self) -> dict[str, int]:
        return dict(self.generation.handoff) if self.generation else {}


def pin_snapshot(
    spark: SparkSession, lakehouse: Lakehouse, view_names: tuple[str, ...] = tuple(VIEWS)
) -> Snapshot:
    """Pin the generations table, then the tables of ``view_names`` (in this order)."""
    versions: dict[str, int] = {}
    generation = None
    if DeltaTable.isDeltaTable(spark, lakehouse.generations):
        versions["generations"] = table_version(spark, lakehouse.generations)
        generation = current_generation(spark, lakehouse, version=versions["generations"])
    for name in view_names:
        if generation is not None:
            versions[gold_key(name)] = table_version(spark, lakehouse.batch_view(name))
        if DeltaTable.isDeltaTable(spark, lakehouse.speed_increments(name)):
            versions[increments_key(name)] = table_version(spark, lakehouse.speed_increments(name))
    return Snapshot(generation, versions)


def above_handoff(handoff: dict[str, int]) -> Column:
    """Increments not covered by ``handoff``: per stream, ``batch_id`` above its mark; every
    increment of a stream the mark does not name."""
    covered = [
        (F.col("stream") == stream) & (F.col("batch_id") <= mark)
        for stream, mark in sorted(handoff.items())
    ]
    if not covered:
        return F.lit(True)
    return ~reduce(lambda a, b: a | b, covered)


def merged_view(
    spark: SparkSession, lakehouse: Lakehouse, view_name: str, snapshot: Snapshot | None = None
) -> DataFrame:
    """The merged view ``view_name`` at ``snapshot`` (pinned now when not given).

    Raises:
        NoViewsError: neither a published generation nor speed increments exist.
    """
    view = get_view(view_name)
    snapshot = snapshot or pin_snapshot(spark, lakehouse, (view.name,))
    parts: list[DataFrame] = []
    if snapshot.generation is not None and gold_key(view.name) in snapshot.versions:
        parts.append(
            spark.read.format("delta")
            .option("versionAsOf", snapshot.versions[gold_key(view.name)])
            .load(lakehouse.batch_view(view.name))
            .where(F.col("generation") == snapshot.generation.generation)
            .select(*view.columns)
        )
    if increments_key(view.name) in snapshot.versions:
        parts.append(
            spark.read.format("delta")
            .option("versionAsOf", snapshot.versions[increments_key(view.name)])
            .load(lakehouse.speed_increments(view.name))
            .where(above_handoff(snapshot.handoff))
            .select(*view.columns)
        )
    if not parts:
        raise NoViewsError("no views yet: run `lambda-sales batch` or `lambda-sales speed` first")
    partials = reduce(DataFrame.unionByName, parts)
    return partials.transform(merge_partials(view)).select(*view.columns)


def _condition(predicate: Predicate) -> Column:
    column, operator, value = predicate
    col, lit = F.col(column), F.lit(value)
    return {"=": col == lit, ">=": col >= lit, "<=": col <= lit, "<": col < lit}[operator]


def select(rows: DataFrame, query: ViewQuery) -> DataFrame:
    """``query``'s filters, key order and page applied to a merged view."""
    for predicate in query.predicates():
        rows = rows.where(_condition(predicate))
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
    """The rows of ``query`` as dicts (the same values the fast path answers)."""
    rows, snapshot = query_merged(spark, lakehouse, query)
    generation = snapshot.generation.generation if snapshot.generation else None
    return Answer(
        to_rows(rows, query.view.columns), generation, snapshot.handoff, dict(snapshot.versions)
    )


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

    def _pin(self, view_name: str) -> Snapshot:
        spark, lakehouse = self.spark, self.lakehouse
        versions: dict[str, int] = {}
        generation = None
        if DeltaTable.isDeltaTable(spark, lakehouse.generations):
            version = versions["generations"] = table_version(spark, lakehouse.generations)
            if version not in self._generations:
                self._generations[version] = current_generation(spark, lakehouse, version=version)
            generation = self._generations[version]
        if generation is not None:
            versions[gold_key(view_name)] = table_version(spark, lakehouse.batch_view(view_name))
        if DeltaTable.isDeltaTable(spark, lakehouse.speed_increments(view_name)):
            versions[increments_key(view_name)] = table_version(
                spark, lakehouse.speed_increments(view_name)
            )
        return Snapshot(generation, versions)

    def answer(self, query: ViewQuery) -> Answer:
        view = query.view
        snapshot = self._pin(view.name)
        key = (view.name, tuple(sorted(snapshot.versions.items())))
        merged = self._merged.get(key)
        if merged is None:
            merged = merged_view(self.spark, self.lakehouse, view.name, snapshot).cache()
            self._merged[key] = merged
            while len(self._merged) > self.entries:
                self._merged.pop(next(iter(self._merged))).unpersist()
        rows = select(merged, query)
        generation = snapshot.generation.generation if snapshot.generation else None
        return Answer(
            to_rows(rows, view.columns), generation, snapshot.handoff, dict(snapshot.versions)
        )
