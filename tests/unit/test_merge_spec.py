"""The merge described once (serving_layer.merge_spec) and its forms on each engine: the
hand-off filter as Arrow and Spark expressions, the monoid SELECT in DuckDB, the pinning order."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from sales_core.handoff import Generation
from sales_core.lakehouse import Lakehouse
from sales_core.views import VIEWS, get_view
from serving_layer.delta_files import arrow_filter
from serving_layer.duckdb_engine import duck_type
from serving_layer.merge_spec import Increments, RowFilter, merge_select, merge_spec, pin
from serving_layer.spark_engine import row_condition

pytestmark = pytest.mark.unit

UTC = timezone.utc

# (stream, batch_id) of increments rows; the mark covers "speed" up to 1 and "other" up to 5.
TAGS = [("speed", 0), ("speed", 1), ("speed", 2), ("other", 5), ("other", 6), ("new", 0)]
MARK = {"speed": 1, "other": 5}
# Worked out by hand: above the mark, or of a stream the mark does not name.
ABOVE = [("speed", 2), ("other", 6), ("new", 0)]


def test_the_handoff_filter_on_arrow_keeps_the_increments_above_the_mark() -> None:
    table = pa.table({"stream": [s for s, _ in TAGS], "batch_id": [b for _, b in TAGS]})
    kept = table.filter(arrow_filter(Increments("t").rows_above(MARK)))
    assert list(zip(kept["stream"].to_pylist(), kept["batch_id"].to_pylist(), strict=True)) == ABOVE
    everything = table.filter(arrow_filter(Increments("t").rows_above({})))
    assert everything.num_rows == len(TAGS)


def test_the_handoff_filter_on_spark_keeps_the_increments_above_the_mark(spark) -> None:  # type: ignore[no-untyped-def]
    df = spark.createDataFrame(TAGS, "stream string, batch_id long")
    kept = df.where(row_condition(Increments("t").rows_above(MARK))).collect()
    assert sorted((r["stream"], r["batch_id"]) for r in kept) == sorted(ABOVE)


def test_rows_of_a_view_in_a_shared_table_are_picked_with_the_mark() -> None:
    table = pa.table(
        {
            "view": ["a", "b", "a", "b"],
            "stream": ["speed"] * 4,
            "batch_id": [1, 1, 2, 2],
        }
    )
    shared = Increments("t", RowFilter((("view", "=", "a"),)))
    kept = table.filter(arrow_filter(shared.rows_above({"speed": 1})))
    assert kept.to_pylist() == [{"view": "a", "stream": "speed", "batch_id": 2}]


def test_the_merge_select_combines_each_measure_with_its_monoid() -> None:
    view = get_view("customer_totals")
    partials = pa.table(
        {
            "customer_id": ["c1", "c1", "c2"],
            "events": pa.array([2, 1, 4], pa.int64()),
            "revenue": pa.array(
                [Decimal("10.50"), Decimal("0.25"), Decimal("3.00")], pa.decimal128(18, 2)
            ),
            "first_event_time": [datetime(2024, 5, 2, tzinfo=UTC)] * 2
            + [datetime(2024, 1, 1, tzinfo=UTC)],
            "last_event_time": [
                datetime(2024, 5, 3, tzinfo=UTC),
                datetime(2024, 6, 1, tzinfo=UTC),
                datetime(2024, 1, 1, tzinfo=UTC),
            ],
        }
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("partials", partials)
    sql = merge_select(view, "partials", sql_type=duck_type) + " ORDER BY customer_id"
    rows = con.sql(sql).fetchall()
    assert rows == [
        (
            "c1",
            3,
            Decimal("10.75"),
            datetime(2024, 5, 2, tzinfo=UTC),
            datetime(2024, 6, 1, tzinfo=UTC),
        ),
        (
            "c2",
            4,
            Decimal("3.00"),
            datetime(2024, 1, 1, tzinfo=UTC),
            datetime(2024, 1, 1, tzinfo=UTC),
        ),
    ]
    assert "CAST(sum(events) AS BIGINT)" in sql and "CAST(min(first_event_time)" in sql


def test_pinning_reads_the_generations_table_first_and_batch_tables_only_once_published() -> None:
    lakehouse = Lakehouse("/lh")
    specs = [merge_spec(lakehouse, "sales_daily")]
    asked: list[tuple[str, bool]] = []
    tables = {lakehouse.generations: 4, lakehouse.batch_view("sales_daily"): 9}

    def latest(path: str, exists: bool) -> int | None:
        asked.append((path, exists))
        return tables.get(path)

    generation = Generation(2, 30, {"speed": 7}, 100)
    snapshot = pin(lakehouse.generations, specs, latest=latest, generation_at=lambda v: generation)
    assert asked == [
        (lakehouse.generations, False),
        (lakehouse.batch_view("sales_daily"), True),
        (lakehouse.speed_increments, False),
    ]
    assert snapshot.versions == {"generations": 4, "gold/sales_daily": 9}
    assert snapshot.answer([]).handoff == {"speed": 7} and snapshot.answer([]).generation == 2

    asked.clear()
    before = pin(lakehouse.generations, specs, latest=latest, generation_at=lambda v: None)
    assert [path for path, _ in asked] == [
        lakehouse.generations,
        lakehouse.speed_increments,
    ]
    assert before.versions == {"generations": 4} and before.handoff == {}


def test_the_increments_table_every_view_shares_is_pinned_once() -> None:
    lakehouse = Lakehouse("/lh")
    specs = [merge_spec(lakehouse, name) for name in VIEWS]
    asked: list[str] = []

    def latest(path: str, exists: bool) -> int | None:
        asked.append(path)
        return 5

    snapshot = pin(lakehouse.generations, specs, latest=latest, generation_at=lambda v: None)
    assert asked == [lakehouse.generations, lakehouse.speed_increments]
    assert snapshot.versions == {"generations": 5, "increments": 5}
    for spec in specs:
        assert spec.increments.rows == RowFilter((("view", "=", spec.view.name),))
        parts = spec.parts(snapshot)
        assert [(p.path, p.version) for p in parts] == [(lakehouse.speed_increments, 5)]
