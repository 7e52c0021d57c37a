"""The merge of each view, described once as data; every engine derives its own form from it.

    merged view V = the rows of V's batch table of the current generation
                  ⊕ V's speed increments above that generation's hand-off mark
                    (all of them before the first publish),
    grouped by V's keys, each measure combined with its monoid (``Measure.combine``).

Here: where both parts of a view come from and which of their rows count (:class:`MergeSpec`,
:class:`Increments`, :class:`RowFilter`), the SELECT that combines partial rows
(:func:`merge_select`), and the Delta versions one answer reads (:func:`pin`,
:class:`Snapshot`). The engines only render it: :mod:`serving_layer.spark_engine` (Spark
DataFrames), :mod:`serving_layer.duckdb_engine` (delta-rs + DuckDB) and
:mod:`serving_layer.sql_views` (SQL text for spark-sql views).

Pinning: the generations table first, then each view's batch table (once a generation is
published) and its increments, each at its latest version. A generation's view rows are
written before the commit that publishes it and never change afterwards (old generations are
deleted only ``batch.keep_generations`` publishes later), and increments are append-only, so
tables pinned after the generations table always hold what the pinned generation needs: a
batch publishing mid-query yields the state before or after it, never a mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Any

from pyspark.sql import types as T

from sales_core.handoff import Generation
from sales_core.lakehouse import INCREMENT_TAG_FIELDS, INCREMENT_VIEW, Lakehouse
from sales_core.views import ViewDef, get_view
from serving_layer.query import Answer, Predicate

# The column of a batch view table that names the generation a row belongs to.
GENERATION = "generation"
# Speed increments are tagged with the stream and the micro-batch that wrote them.
STREAM, BATCH_ID = (f.name for f in INCREMENT_TAG_FIELDS)
# Names in Snapshot.versions / Answer.versions.
GENERATIONS_KEY = "generations"
INCREMENTS_KEY = "increments"
NO_VIEWS = "no views yet: run `lambda-sales batch` or `lambda-sales speed` first"


@dataclass(frozen=True)
class RowFilter:
    """Rows kept: every comparison of ``all_of`` holds, and no group of ``none_of`` holds as a
    whole. Comparisons are ``(column, operator, value)`` from the code, never from a user."""

    all_of: tuple[Predicate, ...] = ()
    none_of: tuple[tuple[Predicate, ...], ...] = ()

    def __and__(self, other: RowFilter) -> RowFilter:
        return RowFilter(self.all_of + other.all_of, self.none_of + other.none_of)

    @property
    def keeps_all(self) -> bool:
        return not self.all_of and not self.none_of

    def build(self, compare: Callable[[Predicate], Any], true: Any) -> Any:
        """This filter as one expression of an engine whose boolean expressions combine with
        ``&``, ``|`` and ``~`` (Spark Columns, Arrow expressions), from its ``compare``."""
        kept = [compare(c) for c in self.all_of]
        covered = [reduce(lambda a, b: a & b, map(compare, group)) for group in self.none_of]
        if covered:
            kept.append(~reduce(lambda a, b: a | b, covered))
        return reduce(lambda a, b: a & b, kept) if kept else true


@dataclass(frozen=True)
class Increments:
    """Where the speed increments of one view come from and which of their rows count.

    The one place that says so: the views share one table (``path``), and ``rows`` picks the
    view's rows (``(("view", "=", name),)``); every engine applies both.
    """

    path: str
    rows: RowFilter = RowFilter()

    @staticmethod
    def handoff_filter(handoff: Mapping[str, int]) -> RowFilter:
        """Increments not covered by the hand-off mark ``handoff``: per stream, ``batch_id``
        above its mark; every increment of a stream the mark does not name."""
        return RowFilter(
            none_of=tuple(
                ((STREAM, "=", stream), (BATCH_ID, "<=", mark))
                for stream, mark in sorted(handoff.items())
            )
        )

    def rows_above(self, handoff: Mapping[str, int]) -> RowFilter:
        """The view's increments above the mark: ``rows`` and :meth:`handoff_filter`."""
        return self.rows & self.handoff_filter(handoff)


@dataclass(frozen=True)
class Part:
    """One source of partial rows of a view at a pinned version (see :meth:`MergeSpec.parts`)."""

    path: str
    version: int
    rows: RowFilter


@dataclass(frozen=True)
class MergeSpec:
    """One view's merge: its definition, its batch table and its increments."""

    view: ViewDef
    batch_path: str
    increments: Increments

    @property
    def batch_key(self) -> str:
        """The name of the view's batch table in :attr:`Snapshot.versions`."""
        return f"gold/{self.view.name}"

    increments_key = INCREMENTS_KEY
    """The name of the increments table in :attr:`Snapshot.versions` (one for every view)."""

    @staticmethod
    def batch_rows(generation: int) -> RowFilter:
        """The rows of one generation in a batch table (partitioned by ``generation``)."""
        return RowFilter(((GENERATION, "=", generation),))

    def parts(self, snapshot: Snapshot) -> list[Part]:
        """The tables whose rows (the view's columns) are merged at ``snapshot``, in order."""
        parts = []
        if snapshot.generation is not None and self.batch_key in snapshot.versions:
            parts.append(
                Part(
                    self.batch_path,
                    snapshot.versions[self.batch_key],
                    self.batch_rows(snapshot.generation.generation),
                )
            )
        if self.increments_key in snapshot.versions:
            parts.append(
                Part(
                    self.increments.path,
                    snapshot.versions[self.increments_key],
                    self.increments.rows_above(snapshot.handoff),
                )
            )
        return parts


def merge_spec(lakehouse: Lakehouse, view_name: str) -> MergeSpec:
    """The merge of ``view_name`` over the tables of ``lakehouse``."""
    view = get_view(view_name)
    return MergeSpec(
        view,
        lakehouse.batch_view(view.name),
        Increments(lakehouse.speed_increments, RowFilter(((INCREMENT_VIEW, "=", view.name),))),
    )


def merge_select(
    view: ViewDef,
    source: str,
    *,
    sql_type: Callable[[T.DataType], str],
    ident: Callable[[str], str] = str,
) -> str:
    """``merge_partials`` as SQL over the relation ``source`` (rows of the view's columns):
    grouped by the keys, each measure combined with its monoid and cast back to its type.
    Column names come from the view definition; ``ident`` quotes them for the dialect."""
    keys = ", ".join(ident(k) for k in view.key_names)
    measures = ",\n       ".join(
        f"CAST({m.combine}({ident(m.name)}) AS {sql_type(m.data_type)}) AS {ident(m.name)}"
        for m in view.measures
    )
    return f"SELECT {keys},\n       {measures}\nFROM {source}\nGROUP BY {keys}"


@dataclass(frozen=True)
class Snapshot:
    """The pinned state an answer is computed from.

    Attributes:
        generation: the published batch generation (None before the first publish).
        versions: Delta version per table read: ``generations``, ``gold/<view>``,
            ``increments``; a table missing here does not exist (yet).
    """

    generation: Generation | None
    versions: dict[str, int]

    @property
    def handoff(self) -> dict[str, int]:
        return dict(self.generation.handoff) if self.generation else {}

    def answer(self, rows: list[dict[str, Any]]) -> Answer:
        """``rows`` with what they come from."""
        generation = self.generation.generation if self.generation else None
        return Answer(rows, generation, self.handoff, dict(self.versions))


def pin(
    generations_path: str,
    specs: Iterable[MergeSpec],
    *,
    latest: Callable[[str, bool], int | None],
    generation_at: Callable[[int], Generation | None],
) -> Snapshot:
    """Pin the generations table, then each view's batch table and increments, in this order;
    a table several views share (the increments) is pinned once, at its first view.

    Args:
        latest: an engine's latest version of the table at a path (None: no table there);
            its second argument is True when the table is known to exist (the batch table
            of a published generation), so the engine may skip that check.
        generation_at: the current generation at a version of the generations table.
    """
    versions: dict[str, int] = {}
    generation = None
    version = latest(generations_path, False)
    if version is not None:
        versions[GENERATIONS_KEY] = version
        generation = generation_at(version)
    for spec in specs:
        if generation is not None:
            version = latest(spec.batch_path, True)
            if version is not None:
                versions[spec.batch_key] = version
        if spec.increments_key not in versions:
            version = latest(spec.increments.path, False)
            if version is not None:
                versions[spec.increments_key] = version
    return Snapshot(generation, versions)
