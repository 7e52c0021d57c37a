"""CSV lines and typed rows (Parquet, JDBC) into the envelope, then through validate.

Every expected value is worked out by hand from the inline inputs.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sales_core.events import (
    ENVELOPE_SCHEMA,
    csv_header_fields,
    parse_csv_records,
    parse_typed_records,
)
from sales_core.rules import validate

pytestmark = pytest.mark.unit

UTC = timezone.utc
NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)

LINE_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("source_name", T.StringType(), True),
        T.StructField("source_partition", T.IntegerType(), True),
        T.StructField("source_offset", T.LongType(), True),
        T.StructField("source_key", T.StringType(), True),
        T.StructField("value", T.StringType(), True),
    ]
)

VALIDATED_SCHEMA = (
    "source_name string, source_offset long, reject_reason string, defaulted int, event_id string, "
    "order_id string, customer_id string, category string, region string, channel string, "
    "quantity int, amount decimal(18,2), event_time timestamp, event_date date"
)
VALIDATED_COLUMNS = [f.split()[0] for f in VALIDATED_SCHEMA.split(", ")]


def ts(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------
# Header order differs from the contract's; a BOM, quotes, padding and upper case; an extra
# column `coupon` that is not an event field.
HEADER_A = '\ufeffAmount, event_id ,"ORDER_ID",product_id,quantity,event_time,category,coupon,region,channel,customer_id'
LINES_A: dict[int, str | None] = {
    2: '12.345,e-2,o-2,p-2,2,2024-05-01T10:00:00Z,"Books, Used",SPRING10, EU ,Web, c-2 ',
    3: "5,e-3,o-3,p-3,1,2024-05-01T10:00:00Z,books,X,eu,web",  # 10 tokens: too few
    4: "5,e-4,o-4,p-4,1,2024-05-01T10:00:00Z,books,X,eu,web,c-4,surplus",  # 12 tokens: too many
    5: "5,e-5,,p-5,1,2024-05-01T10:00:00Z,books,,eu,web,c-5",  # empty order_id
    6: '"1,000.50",e-6,o-6,p-6,1,2024-05-01T10:00:00Z,books,,eu,web,c-6',  # quoted thousands separator
    7: '5,e-7,o-7,p-7,1,2024-05-01T10:00:00Z,"unterminated,X,eu,web,c-7',
    8: None,
    9: '"7.5","e-9","o-9","p-9","3","2024-05-01T10:00:00+02:00","toys","","eu","app","c-9"',
}
# A second file whose header lacks customer_id and channel.
HEADER_B = "event_id,order_id,product_id,quantity,amount,event_time,category,region"
LINES_B: dict[int, str | None] = {
    2: "e-20,o-20,p-20,1,100.01,2024-05-01T23:30:00-02:00,Toys,US",
}


def csv_lines(spark: SparkSession, name: str, lines: dict[int, str | None]) -> DataFrame:
    rows = [("file", name, None, offset, None, line) for offset, line in lines.items()]
    return spark.createDataFrame(rows, LINE_SCHEMA)


@pytest.fixture(scope="module")
def csv_envelopes(spark: SparkSession) -> DataFrame:
    a = csv_lines(spark, "a.csv", LINES_A).transform(parse_csv_records(csv_header_fields(HEADER_A)))
    b = csv_lines(spark, "b.csv", LINES_B).transform(parse_csv_records(csv_header_fields(HEADER_B)))
    return a.unionByName(b).cache()


def test_csv_header_fields() -> None:
    assert csv_header_fields(HEADER_A) == [
        "amount",
        "event_id",
        "order_id",
        "product_id",
        "quantity",
        "event_time",
        "category",
        "coupon",
        "region",
        "channel",
        "customer_id",
    ]


@pytest.mark.parametrize(
    "header",
    [
        pytest.param('"Event_ID","Amount"', id="quoted"),
        pytest.param("\ufeffEvent_ID,Amount", id="bom"),
        # Excel's "CSV UTF-8" writes a BOM; the first name may still be quoted
        pytest.param('\ufeff"Event_ID","Amount"', id="bom_then_quoted"),
        pytest.param('" event_id ",AMOUNT', id="padded_inside_quotes"),
    ],
)
def test_csv_header_fields_unquoted_and_cleaned(header: str) -> None:
    assert csv_header_fields(header) == ["event_id", "amount"]


def test_csv_envelopes(spark: SparkSession, csv_envelopes: DataFrame) -> None:
    t = "2024-05-01T10:00:00Z"
    expected = spark.createDataFrame(
        [
            (
                "file",
                "a.csv",
                None,
                2,
                None,
                LINES_A[2],
                False,
                "e-2",
                "o-2",
                "p-2",
                " c-2 ",
                "Books, Used",
                " EU ",
                "Web",
                "2",
                "12.345",
                t,
            ),
            ("file", "a.csv", None, 3, None, LINES_A[3], True, *[None] * 10),
            ("file", "a.csv", None, 4, None, LINES_A[4], True, *[None] * 10),
            (
                "file",
                "a.csv",
                None,
                5,
                None,
                LINES_A[5],
                False,
                "e-5",
                None,
                "p-5",
                "c-5",
                "books",
                "eu",
                "web",
                "1",
                "5",
                t,
            ),
            (
                "file",
                "a.csv",
                None,
                6,
                None,
                LINES_A[6],
                False,
                "e-6",
                "o-6",
                "p-6",
                "c-6",
                "books",
                "eu",
                "web",
                "1",
                "1,000.50",
                t,
            ),
            ("file", "a.csv", None, 7, None, LINES_A[7], True, *[None] * 10),
            ("file", "a.csv", None, 8, None, None, True, *[None] * 10),
            (
                "file",
                "a.csv",
                None,
                9,
                None,
                LINES_A[9],
                False,
                "e-9",
                "o-9",
                "p-9",
                "c-9",
                "toys",
                "eu",
                "app",
                "3",
                "7.5",
                "2024-05-01T10:00:00+02:00",
            ),
            (
                "file",
                "b.csv",
                None,
                2,
                None,
                LINES_B[2],
                False,
                "e-20",
                "o-20",
                "p-20",
                None,
                "Toys",
                "US",
                None,
                "1",
                "100.01",
                "2024-05-01T23:30:00-02:00",
            ),
        ],
        ENVELOPE_SCHEMA,
    )
    assert_df_equality(csv_envelopes, expected, ignore_nullable=True, ignore_row_order=True)


def test_csv_validated(spark: SparkSession, csv_envelopes: DataFrame) -> None:
    actual = csv_envelopes.transform(validate(now=NOW)).select(*VALIDATED_COLUMNS)
    at_ten = ts(2024, 5, 1, 10, 0, 0)
    may_1 = date(2024, 5, 1)
    expected = spark.createDataFrame(
        [
            (
                "a.csv",
                2,
                None,
                0,
                "e-2",
                "o-2",
                "c-2",
                "books, used",
                "eu",
                "web",
                2,
                Decimal("12.35"),
                at_ten,
                may_1,
            ),
            (
                "a.csv",
                5,
                "missing_required:order_id",
                0,
                "e-5",
                None,
                "c-5",
                "books",
                "eu",
                "web",
                1,
                Decimal("5.00"),
                at_ten,
                may_1,
            ),
            (
                "a.csv",
                6,
                "invalid_type:amount",
                0,
                "e-6",
                "o-6",
                "c-6",
                "books",
                "eu",
                "web",
                1,
                None,
                at_ten,
                may_1,
            ),
            (
                "a.csv",
                9,
                None,
                0,
                "e-9",
                "o-9",
                "c-9",
                "toys",
                "eu",
                "app",
                3,
                Decimal("7.50"),
                ts(2024, 5, 1, 8, 0, 0),
                may_1,
            ),
            (
                "b.csv",
                2,
                None,
                2,
                "e-20",
                "o-20",
                "anonymous",
                "toys",
                "us",
                "unknown",
                1,
                Decimal("100.01"),
                ts(2024, 5, 2, 1, 30, 0),
                date(2024, 5, 2),
            ),
        ],
        VALIDATED_SCHEMA,
    )
    assert_df_equality(
        actual.where(~F.col("reject_reason").eqNullSafe("malformed")),
        expected,
        ignore_nullable=True,
        ignore_row_order=True,
    )
    malformed = actual.where(F.col("reject_reason") == "malformed").select(
        "source_name", "source_offset"
    )
    assert_df_equality(
        malformed,
        spark.createDataFrame(
            [("a.csv", 3), ("a.csv", 4), ("a.csv", 7), ("a.csv", 8)],
            "source_name string, source_offset long",
        ),
        ignore_nullable=True,
        ignore_row_order=True,
    )


# Lines that expose defects: each is parsed on its own so one does not hide another.
HEADER_C = "event_id,order_id,product_id,quantity,amount,event_time,category"


def test_csv_empty_line_is_malformed(spark: SparkSession) -> None:
    """An empty line has too few tokens for the header, like any short line."""
    envelopes = csv_lines(spark, "c.csv", {2: ""}).transform(
        parse_csv_records(csv_header_fields(HEADER_C))
    )
    [row] = envelopes.transform(validate(now=NOW)).select("reject_reason").collect()
    assert row["reject_reason"] == "malformed"


def test_csv_rfc4180_doubled_quotes(spark: SparkSession) -> None:
    """A quote inside a quoted field is written doubled (RFC 4180, Python's csv, PostgreSQL COPY)."""
    line = 'e-30,o-30,p-30,1,5,2024-05-01T10:00:00Z,"Kids ""Deluxe"" Toys"'
    envelopes = csv_lines(spark, "c.csv", {2: line}).transform(
        parse_csv_records(csv_header_fields(HEADER_C))
    )
    [row] = envelopes.select("malformed", "category").collect()
    assert (row["malformed"], row["category"]) == (False, 'Kids "Deluxe" Toys')


# --------------------------------------------------------------------------------------------
# Typed rows (Parquet, JDBC)
# --------------------------------------------------------------------------------------------
TYPED_SCHEMA = T.StructType(
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
PLUS_2 = timezone(timedelta(hours=2))
MINUS_2 = timezone(timedelta(hours=-2))
TYPED_ROWS = [
    # 12:00 at +02:00 is 10:00 UTC
    (
        "jdbc",
        "sales_data",
        None,
        None,
        "k1",
        "e-1",
        "o-1",
        "p-1",
        2,
        Decimal("12.345"),
        datetime(2024, 5, 1, 12, 0, 0, tzinfo=PLUS_2),
        " EU ",
        0.5,
        (1,),
    ),
    (
        "jdbc",
        "sales_data",
        None,
        None,
        "k2",
        "e-2",
        "o-2",
        "p-2",
        0,
        Decimal("5.000"),
        ts(2024, 5, 1, 10, 0, 0),
        "eu",
        None,
        None,
    ),
    (
        "jdbc",
        "sales_data",
        None,
        None,
        "k3",
        "e-3",
        "o-3",
        "p-3",
        None,
        Decimal("5.000"),
        ts(2024, 5, 1, 10, 0, 0),
        "eu",
        None,
        None,
    ),
    (
        "jdbc",
        "sales_data",
        None,
        None,
        "k4",
        "e-4",
        "o-4",
        "p-4",
        1,
        Decimal("-0.005"),
        ts(2024, 5, 1, 10, 0, 0),
        "eu",
        None,
        None,
    ),
    (
        "jdbc",
        "sales_data",
        None,
        None,
        "k5",
        "e-5",
        "o-5",
        "p-5",
        1,
        Decimal("1.000"),
        ts(1999, 12, 31, 23, 59, 59),
        "eu",
        None,
        None,
    ),
    (
        "jdbc",
        "sales_data",
        None,
        None,
        "k6",
        "e-6",
        "o-6",
        "p-6",
        1,
        Decimal("1000000.005"),
        ts(2024, 5, 1, 10, 0, 0),
        "eu",
        None,
        None,
    ),
    (
        "jdbc",
        "sales_data",
        None,
        None,
        "k7",
        "e-7",
        "o-7",
        "p-7",
        1,
        Decimal("1000.005"),
        datetime(2024, 5, 1, 23, 30, 0, tzinfo=MINUS_2),
        None,
        None,
        None,
    ),
    (
        "jdbc",
        "sales_data",
        None,
        None,
        "k8",
        None,
        "o-8",
        "p-8",
        1,
        Decimal("1.000"),
        ts(2024, 5, 1, 10, 0, 0),
        "eu",
        None,
        None,
    ),
    (
        "jdbc",
        "sales_data",
        None,
        None,
        "k9",
        "e-9",
        "o-9",
        "p-9",
        1,
        Decimal("1.000"),
        ts(2024, 6, 1, 12, 6, 0),
        "eu",
        None,
        None,
    ),
]


@pytest.fixture(scope="module")
def typed_envelopes(spark: SparkSession) -> DataFrame:
    return parse_typed_records(spark.createDataFrame(TYPED_ROWS, TYPED_SCHEMA)).cache()


def test_typed_envelope_fields(spark: SparkSession, typed_envelopes: DataFrame) -> None:
    actual = typed_envelopes.where(F.col("source_key").isin("k1", "k7")).drop("raw_record")
    expected = spark.createDataFrame(
        [
            (
                "jdbc",
                "sales_data",
                None,
                None,
                "k1",
                False,
                "e-1",
                "o-1",
                "p-1",
                None,
                None,
                " EU ",
                None,
                "2",
                "12.345",
                "2024-05-01T10:00:00.000000Z",
            ),
            (
                "jdbc",
                "sales_data",
                None,
                None,
                "k7",
                False,
                "e-7",
                "o-7",
                "p-7",
                None,
                None,
                None,
                None,
                "1",
                "1000.005",
                "2024-05-02T01:30:00.000000Z",
            ),
        ],
        T.StructType([f for f in ENVELOPE_SCHEMA.fields if f.name != "raw_record"]),
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


def test_typed_raw_record_is_the_row_as_json(typed_envelopes: DataFrame) -> None:
    [row] = typed_envelopes.where(F.col("source_key") == "k1").select("raw_record").collect()
    raw = json.loads(row["raw_record"])
    event_time = datetime.fromisoformat(raw.pop("event_time").replace("Z", "+00:00"))
    assert event_time == ts(2024, 5, 1, 10, 0, 0)
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


def test_typed_rows_validated(spark: SparkSession, typed_envelopes: DataFrame) -> None:
    actual = typed_envelopes.transform(validate(now=NOW)).select(
        "source_key",
        "reject_reason",
        "defaulted",
        "region",
        "quantity",
        "amount",
        "event_time",
        "event_date",
        "revenue_category",
    )
    expected_reasons = spark.createDataFrame(
        [
            ("k1", None),
            ("k2", "invalid_quantity"),
            ("k3", "missing_required:quantity"),
            ("k4", "negative_amount"),
            ("k5", "event_time_out_of_range"),
            ("k6", "amount_out_of_range"),
            ("k7", None),
            ("k8", "missing_required:event_id"),
            ("k9", "future_event_time"),
        ],
        "source_key string, reject_reason string",
    )
    assert_df_equality(
        actual.select("source_key", "reject_reason"),
        expected_reasons,
        ignore_nullable=True,
        ignore_row_order=True,
    )
    expected_valid = spark.createDataFrame(
        [
            (
                "k1",
                None,
                3,
                "eu",
                2,
                Decimal("12.35"),
                ts(2024, 5, 1, 10, 0, 0),
                date(2024, 5, 1),
                "low",
            ),
            (
                "k7",
                None,
                4,
                "unknown",
                1,
                Decimal("1000.01"),
                ts(2024, 5, 2, 1, 30, 0),
                date(2024, 5, 2),
                "high",
            ),
        ],
        "source_key string, reject_reason string, defaulted int, region string, quantity int, "
        "amount decimal(18,2), event_time timestamp, event_date date, revenue_category string",
    )
    assert_df_equality(
        actual.where(F.col("reject_reason").isNull()),
        expected_valid,
        ignore_nullable=True,
        ignore_row_order=True,
    )


def test_typed_timestamp_without_zone_is_utc_and_other_numeric_types(spark: SparkSession) -> None:
    schema = T.StructType(
        [
            T.StructField("source", T.StringType(), False),
            T.StructField("source_name", T.StringType(), True),
            T.StructField("source_partition", T.IntegerType(), True),
            T.StructField("source_offset", T.LongType(), True),
            T.StructField("source_key", T.StringType(), True),
            T.StructField("event_id", T.StringType(), True),
            T.StructField("order_id", T.StringType(), True),
            T.StructField("product_id", T.StringType(), True),
            T.StructField("quantity", T.LongType(), True),
            T.StructField("amount", T.DoubleType(), True),
            T.StructField("event_time", T.TimestampNTZType(), True),
            T.StructField("channel", T.StringType(), True),
        ]
    )
    rows = [
        (
            "file",
            "landing/x.parquet",
            None,
            0,
            None,
            "e-1",
            "o-1",
            "p-1",
            3,
            19.99,
            datetime(2024, 5, 1, 10, 0, 0),
            "Store",
        )
    ]
    actual = (
        parse_typed_records(spark.createDataFrame(rows, schema))
        .transform(validate(now=NOW))
        .select(
            "source_offset",
            "reject_reason",
            "quantity",
            "amount",
            "event_time",
            "event_hour",
            "channel",
        )
    )
    expected = spark.createDataFrame(
        [
            (
                0,
                None,
                3,
                Decimal("19.99"),
                ts(2024, 5, 1, 10, 0, 0),
                ts(2024, 5, 1, 10, 0, 0),
                "store",
            )
        ],
        "source_offset long, reject_reason string, quantity int, amount decimal(18,2), "
        "event_time timestamp, event_hour timestamp, channel string",
    )
    assert_df_equality(actual, expected, ignore_nullable=True)
