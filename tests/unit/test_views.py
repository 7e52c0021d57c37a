"""CONTRACT §3: the four views over hand-written events, and their monoid property.

`compute_view(A ∪ B)` must equal `merge_partials(compute_view(A) ∪ compute_view(B))`: that is
what lets the serving layer add a batch view and speed increments exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sales_core.views import (
    VIEWS,
    Measure,
    ViewDef,
    compute_view,
    compute_views_together,
    get_view,
    merge_partials,
    views_over_arrow,
)

pytestmark = pytest.mark.unit

UTC = timezone.utc


def ts(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


EVENTS_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("order_id", T.StringType(), False),
        T.StructField("product_id", T.StringType(), False),
        T.StructField("customer_id", T.StringType(), False),
        T.StructField("category", T.StringType(), False),
        T.StructField("region", T.StringType(), False),
        T.StructField("channel", T.StringType(), False),
        T.StructField("quantity", T.IntegerType(), False),
        T.StructField("amount", T.DecimalType(18, 2), False),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("event_hour", T.TimestampType(), False),
        T.StructField("month", T.StringType(), False),
        T.StructField("revenue_category", T.StringType(), False),
    ]
)

# Five valid events, derived fields filled in by hand. A = e1, e2, e5; B = e3, e4.
EVENTS = [
    (
        "e1",
        "o1",
        "p1",
        "c1",
        "books",
        "eu",
        "web",
        2,
        Decimal("10.00"),
        ts(2024, 5, 1, 10, 15),
        date(2024, 5, 1),
        ts(2024, 5, 1, 10),
        "2024-05",
        "low",
    ),
    (
        "e2",
        "o2",
        "p2",
        "c2",
        "books",
        "eu",
        "app",
        1,
        Decimal("150.00"),
        ts(2024, 5, 1, 10, 45),
        date(2024, 5, 1),
        ts(2024, 5, 1, 10),
        "2024-05",
        "medium",
    ),
    (
        "e3",
        "o3",
        "p3",
        "c1",
        "toys",
        "eu",
        "web",
        3,
        Decimal("1200.50"),
        ts(2024, 5, 1, 10, 55),
        date(2024, 5, 1),
        ts(2024, 5, 1, 10),
        "2024-05",
        "high",
    ),
    (
        "e4",
        "o4",
        "p4",
        "c1",
        "books",
        "eu",
        "web",
        1,
        Decimal("0.99"),
        ts(2024, 5, 2, 0, 10),
        date(2024, 5, 2),
        ts(2024, 5, 2, 0),
        "2024-05",
        "low",
    ),
    (
        "e5",
        "o5",
        "p5",
        "anonymous",
        "books",
        "us",
        "web",
        4,
        Decimal("100.00"),
        ts(2024, 6, 1, 9, 0),
        date(2024, 6, 1),
        ts(2024, 6, 1, 9),
        "2024-06",
        "low",
    ),
]
PART_A = ("e1", "e2", "e5")
PART_B = ("e3", "e4")

EXPECTED: dict[str, tuple[str, list[tuple]]] = {
    "sales_daily": (
        "event_date date, category string, region string, events long, units long, revenue decimal(18,2)",
        [
            (date(2024, 5, 1), "books", "eu", 2, 3, Decimal("160.00")),  # e1 + e2
            (date(2024, 5, 1), "toys", "eu", 1, 3, Decimal("1200.50")),  # e3
            (date(2024, 5, 2), "books", "eu", 1, 1, Decimal("0.99")),  # e4
            (date(2024, 6, 1), "books", "us", 1, 4, Decimal("100.00")),  # e5
        ],
    ),
    "sales_hourly": (
        "event_hour timestamp, channel string, events long, revenue decimal(18,2)",
        [
            (ts(2024, 5, 1, 10), "web", 2, Decimal("1210.50")),  # e1 + e3
            (ts(2024, 5, 1, 10), "app", 1, Decimal("150.00")),  # e2
            (ts(2024, 5, 2, 0), "web", 1, Decimal("0.99")),  # e4
            (ts(2024, 6, 1, 9), "web", 1, Decimal("100.00")),  # e5
        ],
    ),
    "customer_totals": (
        "customer_id string, events long, revenue decimal(18,2), first_event_time timestamp, "
        "last_event_time timestamp",
        [
            (
                "c1",
                3,
                Decimal("1211.49"),
                ts(2024, 5, 1, 10, 15),
                ts(2024, 5, 2, 0, 10),
            ),  # e1, e3, e4
            ("c2", 1, Decimal("150.00"), ts(2024, 5, 1, 10, 45), ts(2024, 5, 1, 10, 45)),  # e2
            ("anonymous", 1, Decimal("100.00"), ts(2024, 6, 1, 9, 0), ts(2024, 6, 1, 9, 0)),  # e5
        ],
    ),
    "revenue_category_monthly": (
        "month string, revenue_category string, events long, revenue decimal(18,2)",
        [
            ("2024-05", "low", 2, Decimal("10.99")),  # e1 + e4
            ("2024-05", "medium", 1, Decimal("150.00")),  # e2
            ("2024-05", "high", 1, Decimal("1200.50")),  # e3
            ("2024-06", "low", 1, Decimal("100.00")),  # e5
        ],
    ),
}


@pytest.fixture(scope="module")
def events(spark: SparkSession) -> Iterator[DataFrame]:
    frame = spark.createDataFrame(EVENTS, EVENTS_SCHEMA).cache()
    yield frame
    frame.unpersist()


def test_the_four_views_exist() -> None:
    assert set(VIEWS) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_view_and_merge_of_partials(spark: SparkSession, events: DataFrame, name: str) -> None:
    """compute_view over all events, and merge_partials over the views of A and B, both give
    the hand-computed rows: so compute(A ∪ B) == merge(compute(A) ∪ compute(B)).

    Both results are checked in one DataFrame (tagged `how`) to keep to one Spark job.
    """
    view = VIEWS[name]
    schema, rows = EXPECTED[name]
    whole = events.transform(compute_view(view))
    part_a = events.where(F.col("event_id").isin(*PART_A)).transform(compute_view(view))
    part_b = events.where(F.col("event_id").isin(*PART_B)).transform(compute_view(view))
    merged = part_a.unionByName(part_b).transform(merge_partials(view))
    actual = whole.withColumn("how", F.lit("compute(A ∪ B)")).unionByName(
        merged.withColumn("how", F.lit("merge(compute(A) ∪ compute(B))"))
    )
    expected = spark.createDataFrame(
        [
            (*row, how)
            for how in ("compute(A ∪ B)", "merge(compute(A) ∪ compute(B))")
            for row in rows
        ],
        f"{schema}, how string",
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


def test_merge_of_a_view_with_an_empty_partial_is_the_view(events: DataFrame) -> None:
    view = VIEWS["customer_totals"]
    whole = events.transform(compute_view(view))
    merged = whole.unionByName(whole.limit(0)).transform(merge_partials(view))
    assert_df_equality(merged, whole, ignore_nullable=True, ignore_row_order=True)


def test_unknown_view_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown view 'sales_weekly'.*sales_daily"):
        get_view("sales_weekly")


def test_views_computed_together_are_each_view(spark: SparkSession, events: DataFrame) -> None:
    """compute_views_together (the speed layer's one aggregation over grouping sets): each
    view's rows, with that view's columns, are the hand-computed rows, and every column the
    view does not have is null on them. One Spark job."""
    together = events.transform(
        compute_views_together(list(VIEWS.values()), view_column="view")
    ).collect()
    for name, view in VIEWS.items():
        schema, rows = EXPECTED[name]
        mine = [r for r in together if r["view"] == name]
        others = set(together[0].asDict()) - set(view.columns) - {"view"}
        assert all(r[c] is None for r in mine for c in others), name
        actual = spark.createDataFrame([tuple(r[c] for c in view.columns) for r in mine], schema)
        assert_df_equality(
            actual, spark.createDataFrame(rows, schema), ignore_nullable=True, ignore_row_order=True
        )
    assert {r["view"] for r in together} == set(VIEWS)


def test_views_computed_together_refuse_two_measures_of_one_name() -> None:
    first = VIEWS["sales_daily"]
    clash = ViewDef("clash", first.keys, (Measure("units", "max", "quantity", T.LongType()),))
    with pytest.raises(ValueError, match="two different measures are called 'units'"):
        compute_views_together([first, clash], view_column="view")


def test_views_over_arrow_are_each_view(spark: SparkSession, events: DataFrame) -> None:
    """views_over_arrow (the speed layer's views of a small micro-batch on the driver): each
    view's rows are the hand-computed rows, in compute_views_together's row shape and types."""
    arrow = views_over_arrow(events.toArrow(), list(VIEWS.values()), view_column="view")
    spark_shape = events.transform(compute_views_together(list(VIEWS.values()), view_column="view"))
    assert arrow.column_names == spark_shape.columns
    together = arrow.to_pylist()
    for name, view in VIEWS.items():
        schema, rows = EXPECTED[name]
        mine = [r for r in together if r["view"] == name]
        others = set(arrow.column_names) - set(view.columns) - {"view"}
        assert all(r[c] is None for r in mine for c in others), name
        actual = spark.createDataFrame([tuple(r[c] for c in view.columns) for r in mine], schema)
        assert_df_equality(
            actual, spark.createDataFrame(rows, schema), ignore_nullable=True, ignore_row_order=True
        )
    # The same rows and types as Spark's aggregation.
    assert_df_equality(
        spark.createDataFrame(arrow).select(*spark_shape.columns),
        spark_shape,
        ignore_nullable=True,
        ignore_row_order=True,
    )


def test_views_over_arrow_of_no_events_are_empty(events: DataFrame) -> None:
    arrow = views_over_arrow(events.limit(0).toArrow(), list(VIEWS.values()), view_column="view")
    assert arrow.num_rows == 0
    assert "revenue" in arrow.column_names


def test_views_over_arrow_refuse_two_measures_of_one_name(events: DataFrame) -> None:
    first = VIEWS["sales_daily"]
    clash = ViewDef("clash", first.keys, (Measure("units", "max", "quantity", T.LongType()),))
    with pytest.raises(ValueError, match="two different measures are called 'units'"):
        views_over_arrow(events.limit(0).toArrow(), [first, clash], view_column="view")
