"""Typed rows (Parquet, JDBC) into the envelope, then through ``validate``.

Each row is a case named by what it exercises; its id rides in ``source_key`` (a database
row's key), which the parser and ``validate`` carry through untouched. Every row, whatever its
column types, is parsed and validated in one DataFrame. Every expected value is worked out by
hand.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sales_core.events import ENVELOPE_SCHEMA, parse_typed_records
from sales_core.rules import validate
from tests.unit.cases import NOW, ts

pytestmark = pytest.mark.unit

DATABASE_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("source_name", T.StringType(), True),
        T.StructField("source_partition", T.IntegerType(), True),
        T.StructField("source_offset", T.LongType(), True),
        T.StructField("source_key", T.StringType(), True),
        T.StructField("EVENT_ID", T.StringType(), True),  # column names match case-insensitively
        T.StructField("order_id", T.StringType(), True),
        T.StructField("product_id", T.StringType(), True),
        T.StructField("quantity", T.IntegerType(), True),
        T.StructField("amount", T.DecimalType(10, 3), True),
        T.StructField("event_time", T.TimestampType(), True),
        T.StructField("Region", T.StringType(), True),
        T.StructField("discount", T.DoubleType(), True),  # extra columns are ignored
        T.StructField("meta", T.StructType([T.StructField("a", T.IntegerType())]), True),
    ]
)
# Other column types, as Parquet has them: BIGINT quantity, DOUBLE amount, TIMESTAMP_NTZ.
PARQUET_SCHEMA = T.StructType(
    [
        *DATABASE_SCHEMA.fields[:5],
        T.StructField("event_id", T.StringType(), True),
        T.StructField("order_id", T.StringType(), True),
        T.StructField("product_id", T.StringType(), True),
        T.StructField("quantity", T.LongType(), True),
        T.StructField("amount", T.DoubleType(), True),
        T.StructField("event_time", T.TimestampNTZType(), True),
        T.StructField("channel", T.StringType(), True),
    ]
)
PLUS_2 = timezone(timedelta(hours=2))
MINUS_2 = timezone(timedelta(hours=-2))
AT_TEN = ts(2024, 5, 1, 10, 0, 0)

AT_PLUS_2 = "time_at_plus_02_00_amount_12_345_extra_columns->valid"
AT_MINUS_2 = "time_at_minus_02_00_amount_1000_005_region_null->valid"
NO_ZONE = "parquet_time_without_zone_is_utc_bigint_quantity_double_amount->valid"


def database_row(
    case_id: str,
    *,
    event_id: str | None = "e-1",
    quantity: int | None = 1,
    amount: str = "1.000",
    event_time: datetime = AT_TEN,
    region: str | None = "eu",
) -> tuple[Any, ...]:
    """A row of DATABASE_SCHEMA, its extra columns null."""
    position = ("jdbc", "sales_data", None, None, case_id)
    event = (event_id, "o-1", "p-1", quantity, Decimal(amount), event_time, region)
    return (*position, *event, None, None)


# (row, the reason the contract gives it; None: valid)
DATABASE_CASES: list[tuple[tuple[Any, ...], str | None]] = [
    # 12:00 at +02:00 is 10:00 UTC
    (
        (
            *("jdbc", "sales_data", None, None, AT_PLUS_2),
            *("e-1", "o-1", "p-1", 2, Decimal("12.345")),
            *(datetime(2024, 5, 1, 12, 0, 0, tzinfo=PLUS_2), " EU ", 0.5, (1,)),
        ),
        None,
    ),
    (
        database_row(
            AT_MINUS_2,
            amount="1000.005",
            event_time=datetime(2024, 5, 1, 23, 30, tzinfo=MINUS_2),
            region=None,
        ),
        None,
    ),
    (database_row("quantity_0->invalid_quantity", quantity=0), "invalid_quantity"),
    (
        database_row("quantity_null->missing_required:quantity", quantity=None),
        "missing_required:quantity",
    ),
    (database_row("amount_minus_0_005->negative_amount", amount="-0.005"), "negative_amount"),
    (
        database_row(
            "event_time_1999->event_time_out_of_range", event_time=ts(1999, 12, 31, 23, 59, 59)
        ),
        "event_time_out_of_range",
    ),
    (
        database_row("amount_1000000_005->amount_out_of_range", amount="1000000.005"),
        "amount_out_of_range",
    ),
    (
        database_row("event_id_null->missing_required:event_id", event_id=None),
        "missing_required:event_id",
    ),
    (
        database_row(
            "event_time_now_plus_6min->future_event_time", event_time=ts(2024, 6, 1, 12, 6, 0)
        ),
        "future_event_time",
    ),
]
PARQUET_ROW = (
    *("file", "landing/x.parquet", None, 0, NO_ZONE),
    *("e-1", "o-1", "p-1", 3, 19.99, datetime(2024, 5, 1, 10, 0, 0), "Store"),
)
REASONS = {row[4]: reason for row, reason in DATABASE_CASES} | {NO_ZONE: None}


@pytest.fixture(scope="module")
def envelopes(spark: SparkSession) -> DataFrame:
    database = spark.createDataFrame([row for row, _ in DATABASE_CASES], DATABASE_SCHEMA)
    parquet = spark.createDataFrame([PARQUET_ROW], PARQUET_SCHEMA)
    return parse_typed_records(database).unionByName(parse_typed_records(parquet)).cache()


@pytest.fixture(scope="module")
def validated(envelopes: DataFrame) -> DataFrame:
    return envelopes.transform(validate(now=NOW)).cache()


@pytest.fixture(scope="module")
def reasons(validated: DataFrame) -> dict[str, str | None]:
    return {row["source_key"]: row["reject_reason"] for row in validated.collect()}


def test_envelope_fields(spark: SparkSession, envelopes: DataFrame) -> None:
    """Each field as the text a JSON producer would send; times in UTC with their offset."""
    actual = envelopes.where(F.col("source_key").isin(AT_PLUS_2, AT_MINUS_2))
    position = ("jdbc", "sales_data", None, None)
    expected = spark.createDataFrame(
        [
            (
                *(*position, AT_PLUS_2, False),
                *("e-1", "o-1", "p-1", None, None, " EU ", None),
                *("2", "12.345", "2024-05-01T10:00:00.000000Z"),
            ),
            (
                *(*position, AT_MINUS_2, False),
                *("e-1", "o-1", "p-1", None, None, None, None),
                *("1", "1000.005", "2024-05-02T01:30:00.000000Z"),
            ),
        ],
        T.StructType([f for f in ENVELOPE_SCHEMA.fields if f.name != "raw_record"]),
    )
    assert_df_equality(
        actual.drop("raw_record"), expected, ignore_nullable=True, ignore_row_order=True
    )


def test_raw_record_is_the_row_as_json(envelopes: DataFrame) -> None:
    [row] = envelopes.where(F.col("source_key") == AT_PLUS_2).select("raw_record").collect()
    raw = json.loads(row["raw_record"])
    event_time = datetime.fromisoformat(raw.pop("event_time").replace("Z", "+00:00"))
    assert event_time == AT_TEN
    assert raw == {
        "event_id": "e-1",
        "order_id": "o-1",
        "product_id": "p-1",
        "quantity": 2,
        "amount": 12.345,
        "region": " EU ",
        "discount": 0.5,
        "meta": {"a": 1},
    }


@pytest.mark.parametrize(
    ("case_id", "reason"), [pytest.param(*kv, id=kv[0]) for kv in REASONS.items()]
)
def test_reject_reason(reasons: dict[str, str | None], case_id: str, reason: str | None) -> None:
    assert reasons[case_id] == reason


def test_valid_rows_validated(spark: SparkSession, validated: DataFrame) -> None:
    columns = (
        "source_key string, defaulted int, region string, channel string, quantity int, "
        "amount decimal(18,2), event_time timestamp, event_date date, event_hour timestamp, "
        "revenue_category string"
    )
    may_1, may_2 = date(2024, 5, 1), date(2024, 5, 2)
    expected = spark.createDataFrame(
        [
            (AT_PLUS_2, 3, "eu", "unknown", 2, Decimal("12.35"), AT_TEN, may_1, AT_TEN, "low"),
            (
                *(AT_MINUS_2, 4, "unknown", "unknown", 1, Decimal("1000.01")),
                *(ts(2024, 5, 2, 1, 30, 0), may_2, ts(2024, 5, 2, 1, 0, 0), "high"),
            ),
            (NO_ZONE, 3, "unknown", "store", 3, Decimal("19.99"), AT_TEN, may_1, AT_TEN, "low"),
        ],
        columns,
    )
    actual = validated.where(F.col("reject_reason").isNull()).select(*expected.columns)
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)
