"""Rows the driver holds, as literals: the same columns, types and values as
``spark.createDataFrame`` makes of them, with no Python worker (no RDD in the plan)."""

from __future__ import annotations

import contextlib
import io
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import types as T

from sales_core.lakehouse import GENERATIONS_SCHEMA, RUNS_SCHEMA
from sales_core.local_rows import MAX_LITERAL_ROWS, local_frame

pytestmark = pytest.mark.unit

WHEN = datetime(2026, 1, 15, 12, 30, 45, 123456, tzinfo=timezone.utc)
NESTED = T.StructType(
    [
        T.StructField("amount", T.DecimalType(12, 2)),
        T.StructField("tags", T.ArrayType(T.StringType())),
        T.StructField("inner", T.StructType([T.StructField("n", T.IntegerType())])),
    ]
)


def plan(frame) -> str:  # type: ignore[no-untyped-def]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        frame.explain(extended=True)
    return printed.getvalue()


@pytest.mark.parametrize(
    ("rows", "schema"),
    [
        pytest.param(
            [
                {
                    "generation": 7,
                    "published_at": WHEN,
                    "run_id": "batch-1",
                    "master_version": 12,
                    "handoff": {"speed-a": 3, "speed-b": 0},
                    "events": 450,
                }
            ],
            GENERATIONS_SCHEMA,
            id="publish_row_with_a_map",
        ),
        pytest.param(
            [
                {"run_id": "r1", "job": "batch", "started_at": WHEN, "status": "running"},
                {
                    "run_id": "r2",
                    "job": "speed",
                    "started_at": WHEN,
                    "ended_at": WHEN,
                    "status": "succeeded",
                    "records_read": 3,
                    "quality_score": 98.5,
                    "delta_versions": {},
                    "details": '{"a": 1}',
                },
            ],
            RUNS_SCHEMA,
            id="run_records_with_nulls_and_an_empty_map",
        ),
        pytest.param(
            [(Decimal("10.50"), ["a", "b"], (1,)), (None, [], None)],
            NESTED,
            id="tuples_decimals_arrays_structs",
        ),
        pytest.param([], RUNS_SCHEMA, id="no_rows"),
    ],
)
def test_literal_rows_equal_create_data_frame(spark, rows, schema) -> None:  # type: ignore[no-untyped-def]
    made = local_frame(spark, rows, schema)
    assert "ExistingRDD" not in plan(made) and "PythonRDD" not in plan(made)
    expected = spark.createDataFrame(rows, schema)
    assert_df_equality(made, expected, ignore_nullable=True)  # in the given order
    assert [f.dataType for f in made.schema.fields] == [f.dataType for f in schema.fields]


def test_many_rows_go_through_create_data_frame(spark) -> None:  # type: ignore[no-untyped-def]
    schema = T.StructType([T.StructField("n", T.LongType())])
    rows = [(n,) for n in range(MAX_LITERAL_ROWS + 1)]
    made = local_frame(spark, rows, schema)
    assert made.count() == MAX_LITERAL_ROWS + 1


def test_a_row_of_the_wrong_width_is_an_error(spark) -> None:  # type: ignore[no-untyped-def]
    schema = T.StructType([T.StructField("n", T.LongType()), T.StructField("s", T.StringType())])
    with pytest.raises(ValueError, match="a row of 1 values for 2 columns"):
        local_frame(spark, [(1,)], schema)
