"""CONTRACT §1, valid events: defaults, trimming, numbers, money rounding, times, derived fields.

A case is one to three valid inputs and, for each, how its event differs from the base event's
(:data:`BASE_EXPECTED`), worked out by hand from the contract. Every case is validated in one
DataFrame (see ``tests/unit/cases.py``); each case is asserted on its own, and the whole frame
once more with chispa, column types included.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from tests.unit.cases import Case, case, envelope, params, record, ts, validated_cases

pytestmark = pytest.mark.unit

# The base event of tests/unit/cases.py, validated.
BASE_EXPECTED: dict[str, Any] = {
    "reject_reason": None,
    "defaulted": 0,
    "customer_id": "c-1",
    "category": "books",
    "region": "eu",
    "channel": "web",
    "quantity": 2,
    "amount": Decimal("10.50"),
    "event_time": ts(2024, 5, 1, 10, 0, 0),
    "event_date": date(2024, 5, 1),
    "event_hour": ts(2024, 5, 1, 10, 0, 0),
    "month": "2024-05",
    "revenue_category": "low",
}
EXPECTED_SCHEMA = T.StructType(
    [
        T.StructField("case", T.StringType()),
        T.StructField("row", T.LongType()),
        T.StructField("raw_record", T.StringType()),
        T.StructField("reject_reason", T.StringType()),
        T.StructField("defaulted", T.IntegerType()),
        T.StructField("customer_id", T.StringType()),
        T.StructField("category", T.StringType()),
        T.StructField("region", T.StringType()),
        T.StructField("channel", T.StringType()),
        T.StructField("quantity", T.IntegerType()),
        T.StructField("amount", T.DecimalType(18, 2)),
        T.StructField("event_time", T.TimestampType()),
        T.StructField("event_date", T.DateType()),
        T.StructField("event_hour", T.TimestampType()),
        T.StructField("month", T.StringType()),
        T.StructField("revenue_category", T.StringType()),
    ]
)
COLUMNS = tuple(EXPECTED_SCHEMA.fieldNames())
ANONYMOUS = {"customer_id": "anonymous", "defaulted": 1}


def unknown(field: str) -> dict[str, Any]:
    return {field: "unknown", "defaulted": 1}


OPTIONAL_FIELDS = [
    Case(
        "customer_id_absent_null_blank->anonymous",
        (record(customer_id=None), record(customer_id="null"), record(customer_id='" \\t "')),
        (ANONYMOUS, ANONYMOUS, ANONYMOUS),
    ),
    *[
        Case(
            f"{field}_absent_null_blank->unknown",
            (record(**{field: None}), record(**{field: "null"}), record(**{field: '""'})),
            (unknown(field), unknown(field), unknown(field)),
        )
        for field in ("category", "region", "channel")
    ],
    case(
        "all_four_absent_or_null->defaults",
        record(customer_id=None, category="null", region=None, channel="null"),
        {
            "customer_id": "anonymous",
            "category": "unknown",
            "region": "unknown",
            "channel": "unknown",
            "defaulted": 4,
        },
    ),
    case(
        "all_four_blank->defaults",
        record(customer_id='"   "', category='""', region='"  "', channel='""'),
        {
            "customer_id": "anonymous",
            "category": "unknown",
            "region": "unknown",
            "channel": "unknown",
            "defaulted": 4,
        },
    ),
    # customer_id is trimmed only; the others are trimmed and lower-cased
    case(
        "padded_and_upper_case->trimmed_and_lower_cased",
        record(
            customer_id='"  Cust-7  "',
            category='"  Home Garden "',
            region='" EU-West"',
            channel='"MOBILE  "',
        ),
        {
            "customer_id": "Cust-7",
            "category": "home garden",
            "region": "eu-west",
            "channel": "mobile",
        },
    ),
    case("category_tab_newline->trimmed", record(category='"\\tToys\\n"'), {"category": "toys"}),
]

QUANTITY = [
    case("quantity_json_1->1", record(quantity="1"), {"quantity": 1}),
    case("quantity_numeric_string->3", record(quantity='"3"'), {"quantity": 3}),
    case("quantity_padded_string->4", record(quantity='" 4 "'), {"quantity": 4}),
    case("quantity_json_2_0->2", record(quantity="2.0"), {"quantity": 2}),
    case("quantity_string_2_0->2", record(quantity='"2.0"'), {"quantity": 2}),
]

# Money: DECIMAL(18,2), rounded half-up from the exact text (never through a double).
AMOUNT = [
    case(
        "amount_json_1000_005->1000.01",
        record(amount="1000.005"),
        {"amount": Decimal("1000.01"), "revenue_category": "high"},
    ),
    case(
        "amount_string_1000_005->1000.01",
        record(amount='"1000.005"'),
        {"amount": Decimal("1000.01"), "revenue_category": "high"},
    ),
    case("amount_string_2_345->2.35", record(amount='"2.345"'), {"amount": Decimal("2.35")}),
    case("amount_json_0_125->0.13", record(amount="0.125"), {"amount": Decimal("0.13")}),
    case("amount_json_minus_0_004->0.00", record(amount="-0.004"), {"amount": Decimal("0.00")}),
    case(
        "amount_json_1000000_004->1000000.00",
        record(amount="1000000.004"),
        {"amount": Decimal("1000000.00"), "revenue_category": "high"},
    ),
    # 1.0049999999999999 is below 1.005, so half-up to 2 places gives 1.00 (through a double,
    # the text would become 1.005 and round to 1.01)
    Case(
        "amount_1_0049999999999999_json_and_string->1.00",
        (record(amount="1.0049999999999999"), record(amount='"1.0049999999999999"')),
        ({"amount": Decimal("1.00")}, {"amount": Decimal("1.00")}),
    ),
    case("amount_padded_string->7.50", record(amount='" 7.5 "'), {"amount": Decimal("7.50")}),
    # The same rounding where the text reaches validate as it is (CSV, typed rows): JSON
    # numbers and strings are already read as exact decimals by the JSON parser.
    Case(
        "amount_text_1000_005_and_0_125->1000.01_and_0.13",
        (envelope(amount="1000.005"), envelope(amount="0.125")),
        (
            {"amount": Decimal("1000.01"), "revenue_category": "high"},
            {"amount": Decimal("0.13")},
        ),
    ),
    case("amount_text_minus_0_004->0.00", envelope(amount="-0.004"), {"amount": Decimal("0.00")}),
]

# revenue_category: high above 1000, medium above 100, else low; of the rounded amount.
REVENUE_CATEGORY = [
    Case(
        "amount_100_00_and_100_01->low_and_medium",
        (record(amount="100.00"), record(amount="100.01")),
        (
            {"amount": Decimal("100.00"), "revenue_category": "low"},
            {"amount": Decimal("100.01"), "revenue_category": "medium"},
        ),
    ),
    Case(
        "amount_1000_00_and_1000_01->medium_and_high",
        (record(amount='"1000.00"'), record(amount="1000.01")),
        (
            {"amount": Decimal("1000.00"), "revenue_category": "medium"},
            {"amount": Decimal("1000.01"), "revenue_category": "high"},
        ),
    ),
    # 100.004 rounds to 100.00: the category follows the rounded amount
    case(
        "amount_100_004->100.00_low",
        record(amount="100.004"),
        {"amount": Decimal("100.00"), "revenue_category": "low"},
    ),
]

# Times: ISO-8601 with `Z` or an offset, no zone meaning UTC; date, hour and month in UTC.
EVENT_TIME = [
    case(
        "time_offset_plus_02_00->08:00Z",
        record(event_time='"2024-05-01T10:00:00+02:00"'),
        {"event_time": ts(2024, 5, 1, 8, 0, 0), "event_hour": ts(2024, 5, 1, 8, 0, 0)},
    ),
    case(
        "time_offset_minus_0530->15:30Z",
        record(event_time='"2024-05-01T10:00:00-0530"'),
        {"event_time": ts(2024, 5, 1, 15, 30, 0), "event_hour": ts(2024, 5, 1, 15, 0, 0)},
    ),
    case("time_no_zone->utc", record(event_time='"2024-05-01T10:00:00"'), {}),
    Case(
        "time_minutes_without_seconds->utc",
        (record(event_time='"2024-05-01T10:00Z"'), record(event_time='"2024-05-01T10:00+02:00"')),
        ({}, {"event_time": ts(2024, 5, 1, 8, 0, 0), "event_hour": ts(2024, 5, 1, 8, 0, 0)}),
    ),
    case(
        "time_fractional_seconds_z->hour_10",
        record(event_time='"2024-05-01T10:59:59.123456Z"'),
        {"event_time": ts(2024, 5, 1, 10, 59, 59, 123456), "event_hour": ts(2024, 5, 1, 10, 0, 0)},
    ),
    case(
        "time_fractional_seconds_with_offset->04:15:00.5Z",
        record(event_time='"2024-05-01T10:00:00.5+05:45"'),
        {"event_time": ts(2024, 5, 1, 4, 15, 0, 500000), "event_hour": ts(2024, 5, 1, 4, 0, 0)},
    ),
    case(
        "time_23_30_minus_02_00->next_day_in_utc",
        record(event_time='"2024-05-01T23:30:00-02:00"'),
        {
            "event_time": ts(2024, 5, 2, 1, 30, 0),
            "event_date": date(2024, 5, 2),
            "event_hour": ts(2024, 5, 2, 1, 0, 0),
        },
    ),
    case(
        "time_may_31_23_30_minus_01_00->june_in_utc",
        record(event_time='"2024-05-31T23:30:00-01:00"'),
        {
            "event_time": ts(2024, 6, 1, 0, 30, 0),
            "event_date": date(2024, 6, 1),
            "event_hour": ts(2024, 6, 1, 0, 0, 0),
            "month": "2024-06",
        },
    ),
    case(
        "time_2000_01_01_first_valid_instant->2000-01",
        record(event_time='"2000-01-01T00:00:00Z"'),
        {
            "event_time": ts(2000, 1, 1, 0, 0, 0),
            "event_date": date(2000, 1, 1),
            "event_hour": ts(2000, 1, 1, 0, 0, 0),
            "month": "2000-01",
        },
    ),
    case(
        "time_now_plus_4min->2024-06",
        record(event_time='"2024-06-01T12:04:00Z"'),
        {
            "event_time": ts(2024, 6, 1, 12, 4, 0),
            "event_date": date(2024, 6, 1),
            "event_hour": ts(2024, 6, 1, 12, 0, 0),
            "month": "2024-06",
        },
    ),
]

OTHER = [
    case("base_event->as_sent", record(), {}),
    case(
        "unknown_nested_fields->ignored",
        record(extra='{"nested": {"deeper": [1, 2, {"x": "y"}]}}', v="3.5"),
        {},
    ),
    # Envelopes built directly (as any parser emits them): raw strings normalised the same way;
    # 99.999 rounds half-up to 100.00, which is still `low`.
    Case(
        "envelope_texts->normalised",
        (
            envelope(
                raw_record="raw-2",
                customer_id=None,
                category=" Toys ",
                region="EU",
                channel=None,
                quantity="1",
                amount="99.999",
            ),
            envelope(raw_record="raw-4", category="toys", quantity="1", amount="5"),
        ),
        (
            {
                "customer_id": "anonymous",
                "category": "toys",
                "channel": "unknown",
                "defaulted": 2,
                "quantity": 1,
                "amount": Decimal("100.00"),
            },
            {"category": "toys", "quantity": 1, "amount": Decimal("5.00")},
        ),
    ),
]

CASES = [*OPTIONAL_FIELDS, *QUANTITY, *AMOUNT, *REVENUE_CATEGORY, *EVENT_TIME, *OTHER]


def expected_rows(c: Case) -> list[tuple[Any, ...]]:
    """The base event's values with the case's changes, per row; ``raw_record`` as sent."""
    rows = []
    for index, (sent, changes) in enumerate(zip(c.rows, c.expected, strict=True)):
        raw = sent if isinstance(sent, str) or sent is None else sent.raw_record
        values = {"case": c.id, "row": index, "raw_record": raw, **BASE_EXPECTED, **changes}
        rows.append(tuple(values[name] for name in COLUMNS))
    return rows


@pytest.fixture(scope="module")
def actual(spark: SparkSession) -> DataFrame:
    frame = validated_cases(spark, CASES).select(
        F.col("source_key").alias("case"), F.col("source_offset").alias("row"), *COLUMNS[2:]
    )
    return frame.cache()


@pytest.fixture(scope="module")
def expected(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([row for c in CASES for row in expected_rows(c)], EXPECTED_SCHEMA)


def by_case(frame: DataFrame) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in frame.orderBy("case", "row").collect():
        values = row.asDict()
        grouped.setdefault(values.pop("case"), []).append(values)
    return grouped


@pytest.fixture(scope="module")
def actual_by_case(actual: DataFrame) -> dict[str, list[dict[str, Any]]]:
    return by_case(actual)


@pytest.fixture(scope="module")
def expected_by_case(expected: DataFrame) -> dict[str, list[dict[str, Any]]]:
    # Through Spark as well, so that both sides' values have the same Python types.
    return by_case(expected)


@pytest.mark.parametrize("rule", params(CASES))
def test_valid_event(
    actual_by_case: dict[str, list[dict[str, Any]]],
    expected_by_case: dict[str, list[dict[str, Any]]],
    rule: Case,
) -> None:
    assert actual_by_case.get(rule.id) == expected_by_case[rule.id]


def test_all_cases_in_one_frame_with_the_event_types(
    actual: DataFrame, expected: DataFrame
) -> None:
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)
