"""The four sales views (CONTRACT §3), each defined once as keys plus monoid measures.

The batch layer applies :func:`compute_view` to the whole master dataset; the speed layer
applies the very same function to each micro-batch's new events; the serving layer adds
partial results with :func:`merge_partials`. Because every measure is a monoid (count, sum,
min, max), ``compute(A ∪ B) == merge(compute(A), compute(B))`` for disjoint A and B.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_type

from sales_core.rules import MONEY

MeasureKind = Literal["count", "sum", "min", "max"]


@dataclass(frozen=True)
class Measure:
    """One monoid measure: ``kind`` over ``column`` (``count`` takes no column)."""

    name: str
    kind: MeasureKind
    column: str | None
    data_type: T.DataType

    def over_events(self) -> Column:
        """The measure computed from raw events."""
        if self.kind == "count":
            value = F.count(F.lit(1))
        else:
            assert self.column is not None
            value = getattr(F, self.kind)(F.col(self.column))
        return value.cast(self.data_type).alias(self.name)

    @property
    def combine(self) -> MeasureKind:
        """The monoid's operation on partial results, named as in SQL and ``pyspark.sql.functions``
        (a count of partials is their sum). Every engine's merge is built from it."""
        return "sum" if self.kind == "count" else self.kind

    def over_partials(self) -> Column:
        """The measure combining partial results."""
        return getattr(F, self.combine)(F.col(self.name)).cast(self.data_type).alias(self.name)


@dataclass(frozen=True)
class ViewDef:
    """A view: grouping keys (with their types) and monoid measures."""

    name: str
    keys: tuple[tuple[str, T.DataType], ...]
    measures: tuple[Measure, ...]

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.keys)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.key_names + tuple(m.name for m in self.measures)

    @property
    def schema(self) -> T.StructType:
        return T.StructType(
            [T.StructField(n, t, False) for n, t in self.keys]
            + [T.StructField(m.name, m.data_type, True) for m in self.measures]
        )


EVENTS = Measure("events", "count", None, T.LongType())
REVENUE = Measure("revenue", "sum", "amount", MONEY)

VIEWS: dict[str, ViewDef] = {
    view.name: view
    for view in (
        ViewDef(
            "sales_daily",
            (
                ("event_date", T.DateType()),
                ("category", T.StringType()),
                ("region", T.StringType()),
            ),
            (EVENTS, Measure("units", "sum", "quantity", T.LongType()), REVENUE),
        ),
        ViewDef(
            "sales_hourly",
            (("event_hour", T.TimestampType()), ("channel", T.StringType())),
            (EVENTS, REVENUE),
        ),
        ViewDef(
            "customer_totals",
            (("customer_id", T.StringType()),),
            (
                EVENTS,
                REVENUE,
                Measure("first_event_time", "min", "event_time", T.TimestampType()),
                Measure("last_event_time", "max", "event_time", T.TimestampType()),
            ),
        ),
        ViewDef(
            "revenue_category_monthly",
            (("month", T.StringType()), ("revenue_category", T.StringType())),
            (EVENTS, REVENUE),
        ),
    )
}
VIEW_NAMES: tuple[str, ...] = tuple(VIEWS)


def get_view(name: str) -> ViewDef:
    """The view called ``name``, or a ValueError naming the ones that exist."""
    try:
        return VIEWS[name]
    except KeyError:
        raise ValueError(f"unknown view '{name}': choose one of {', '.join(VIEW_NAMES)}") from None


def compute_view(view: ViewDef) -> Callable[[DataFrame], DataFrame]:
    """Aggregate valid events into ``view`` (keys + measures)."""

    def transform(events: DataFrame) -> DataFrame:
        return events.groupBy(*view.key_names).agg(*[m.over_events() for m in view.measures])

    return transform


def compute_views_together(
    views: Sequence[ViewDef], *, view_column: str
) -> Callable[[DataFrame], DataFrame]:
    """Aggregate valid events into every view of ``views`` at once: one aggregation over
    grouping sets (one pass, one plan) instead of one per view.

    A row is one view's row, named in ``view_column``; the other columns are every view's keys
    and measures (each measure computed as :func:`compute_view` computes it), null where the
    row's view has no such column. Selecting one view's rows and columns gives exactly
    ``compute_view(view)``. Measures of the same name must be the same measure.
    """
    keys, measures = _columns_of(views)

    def grouping_id(view: ViewDef) -> int:
        # Spark's grouping_id(): a bit per grouping column, the first the most significant,
        # set when the row does NOT group by that column.
        return sum(
            1 << (len(keys) - 1 - i) for i, key in enumerate(keys) if key not in view.key_names
        )

    def only_in(name: str) -> Column:
        """Measure ``name`` on the rows of the views that have it, else null."""
        ids = [grouping_id(v) for v in views if name in v.columns]
        return F.when(F.col(_GROUPING_ID).isin(ids), F.col(name)).alias(name)

    def transform(events: DataFrame) -> DataFrame:
        grouped = events.groupingSets(
            [[F.col(k) for k in view.key_names] for view in views], *keys
        ).agg(
            *[m.over_events() for m in measures.values()],
            F.grouping_id(*keys).alias(_GROUPING_ID),
        )
        name = F.lit(None).cast("string")
        for view in views:
            name = F.when(F.col(_GROUPING_ID) == grouping_id(view), F.lit(view.name)).otherwise(
                name
            )
        return grouped.select(
            name.alias(view_column),
            *keys,
            *(only_in(m) for m in measures),
        )

    return transform


_GROUPING_ID = "_grouping_id"


def _columns_of(views: Sequence[ViewDef]) -> tuple[list[str], dict[str, Measure]]:
    """Every key of ``views`` (sorted) and every measure by name, for one row shape of all of
    them; a ValueError when two different measures share a name."""
    measures: dict[str, Measure] = {}
    for view in views:
        for measure in view.measures:
            if measures.setdefault(measure.name, measure) != measure:
                raise ValueError(f"two different measures are called '{measure.name}'")
    return sorted({k for v in views for k in v.key_names}), measures


def views_over_arrow(events: pa.Table, views: Sequence[ViewDef], *, view_column: str) -> pa.Table:
    """:func:`compute_views_together` for valid events already on the driver, as an Arrow
    table (a small micro-batch: aggregating a few thousand rows in the process costs less
    than a Spark job). The same keys and measures, the same row shape (``view_column``, then
    every view's keys, then every measure, null where the row's view has no such column),
    each measure's kind computed by Arrow's hash aggregation and cast to the measure's type,
    as ``compute_view`` casts it."""
    keys, measures = _columns_of(views)
    types = {name: data_type for v in views for name, data_type in v.keys}
    types.update({m.name: m.data_type for m in measures.values()})
    fields = [pa.field(view_column, pa.string(), False)] + [
        pa.field(name, to_arrow_type(types[name], timezone="UTC")) for name in (*keys, *measures)
    ]

    def output(measure: Measure) -> str:
        return "count_all" if measure.kind == "count" else f"{measure.column}_{measure.kind}"

    parts = []
    for view in views:
        grouped = events.group_by(list(view.key_names), use_threads=False).aggregate(
            [([], "count_all") if m.kind == "count" else (m.column, m.kind) for m in view.measures]
        )
        rows = grouped.num_rows
        columns = {name: grouped.column(name) for name in view.key_names}
        columns.update({m.name: grouped.column(output(m)) for m in view.measures})
        parts.append(
            pa.table(
                [pa.array([view.name] * rows, pa.string())]
                + [
                    columns[f.name].cast(f.type) if f.name in columns else pa.nulls(rows, f.type)
                    for f in fields[1:]
                ],
                schema=pa.schema(fields),
            )
        )
    return pa.concat_tables(parts)


def merge_partials(view: ViewDef) -> Callable[[DataFrame], DataFrame]:
    """Combine rows of partial results of ``view`` (batch view ⊕ speed increments)."""

    def transform(partials: DataFrame) -> DataFrame:
        return partials.groupBy(*view.key_names).agg(*[m.over_partials() for m in view.measures])

    return transform
