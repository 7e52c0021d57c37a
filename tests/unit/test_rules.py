"""CONTRACT §1: reason codes, their order, normalisation, derived fields, quarantine, dedupe.

Inputs are JSON text lines written inline; every expected value is worked out by hand from
the line and the contract. All tables are validated together in one cached DataFrame (planning
`validate` is the costly part) and then asserted table by table, case by case.
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

from sales_core.events import ENVELOPE_SCHEMA, parse_json_records
from sales_core.rules import (
    REASON_CODES,
    dedupe_events,
    quarantine_records,
    valid_events,
    validate,
)

pytestmark = pytest.mark.unit

UTC = timezone.utc
NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
REJECTED_AT = datetime(2024, 6, 1, 12, 30, 0, tzinfo=UTC)

# The reason codes of CONTRACT §1, in the order of its table.
CONTRACT_REASONS = (
    "malformed",
    "missing_required:event_id",
    "missing_required:order_id",
    "missing_required:product_id",
    "missing_required:quantity",
    "invalid_type:quantity",
    "invalid_quantity",
    "missing_required:amount",
    "invalid_type:amount",
    "negative_amount",
    "amount_out_of_range",
    "missing_required:event_time",
    "invalid_type:event_time",
    "event_time_out_of_range",
    "future_event_time",
)

INPUT_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("source_name", T.StringType(), True),
        T.StructField("source_partition", T.IntegerType(), True),
        T.StructField("source_offset", T.LongType(), True),
        T.StructField("source_key", T.StringType(), True),
        T.StructField("value", T.StringType(), True),
    ]
)

# A valid event, each field as the raw JSON text of its value.
BASE_FIELDS: dict[str, str] = {
    "event_id": '"e-1"',
    "order_id": '"o-1"',
    "product_id": '"p-1"',
    "customer_id": '"c-1"',
    "category": '"books"',
    "region": '"eu"',
    "channel": '"web"',
    "quantity": "2",
    "amount": "10.50",
    "event_time": '"2024-05-01T10:00:00Z"',
}


def record(**fields: str | None) -> str:
    """The base event as one JSON line, fields replaced by raw JSON text (None drops the key)."""
    merged = {**BASE_FIELDS, **fields}
    return "{" + ", ".join(f'"{k}": {v}' for k, v in merged.items() if v is not None) + "}"


def ts(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def json_envelopes(spark: SparkSession, lines: list[str | None], partition: int = 0) -> DataFrame:
    """Kafka-like rows (topic sales-events, offset = index) parsed into envelopes."""
    rows = [
        ("kafka", "sales-events", partition, offset, None, line)
        for offset, line in enumerate(lines)
    ]
    return spark.createDataFrame(rows, INPUT_SCHEMA).transform(parse_json_records("value"))


# --------------------------------------------------------------------------------------------
# Reject reasons: (case id, JSON line, expected reject_reason or None for a valid event)
# --------------------------------------------------------------------------------------------
REASON_CASES: list[tuple[str, str | None, str | None]] = [
    # malformed: anything that is not one JSON object
    ("malformed_not_json", "this is not json", "malformed"),
    ("malformed_truncated_object", '{"event_id": "e-1", "order_id": ', "malformed"),
    ("malformed_json_array", "[" + record() + "]", "malformed"),
    ("malformed_json_number", "42", "malformed"),
    ("malformed_json_string", '"e-1"', "malformed"),
    ("malformed_json_true", "true", "malformed"),
    ("malformed_json_null_literal", "null", "malformed"),
    ("malformed_empty_string", "", "malformed"),
    ("malformed_whitespace_only", "   ", "malformed"),
    ("malformed_null_value", None, "malformed"),
    ("malformed_two_objects_on_one_line", record() + record(event_id='"e-2"'), "malformed"),
    (
        "malformed_single_quoted_pseudo_json",
        "{'event_id': 'e-1', 'order_id': 'o-1', 'product_id': 'p-1', 'quantity': 2, "
        "'amount': 10.5, 'event_time': '2024-05-01T10:00:00Z'}",
        "malformed",
    ),
    # missing_required:event_id (absent, null, empty, blank)
    ("event_id_absent", record(event_id=None), "missing_required:event_id"),
    ("event_id_null", record(event_id="null"), "missing_required:event_id"),
    ("event_id_empty", record(event_id='""'), "missing_required:event_id"),
    ("event_id_blank", record(event_id='"   "'), "missing_required:event_id"),
    # a tab and a newline (JSON escapes): blank as well
    ("event_id_blank_tab_newline", record(event_id='"\\t\\n"'), "missing_required:event_id"),
    ("empty_object", "{}", "missing_required:event_id"),
    # missing_required:order_id / product_id
    ("order_id_absent", record(order_id=None), "missing_required:order_id"),
    ("order_id_blank", record(order_id='" "'), "missing_required:order_id"),
    ("product_id_null", record(product_id="null"), "missing_required:product_id"),
    ("product_id_empty", record(product_id='""'), "missing_required:product_id"),
    # quantity
    ("quantity_absent", record(quantity=None), "missing_required:quantity"),
    ("quantity_null", record(quantity="null"), "missing_required:quantity"),
    ("quantity_blank_string", record(quantity='"  "'), "missing_required:quantity"),
    ("quantity_json_2_5", record(quantity="2.5"), "invalid_type:quantity"),
    ("quantity_string_2_5", record(quantity='"2.5"'), "invalid_type:quantity"),
    ("quantity_string_abc", record(quantity='"abc"'), "invalid_type:quantity"),
    ("quantity_json_true", record(quantity="true"), "invalid_type:quantity"),
    ("quantity_json_array", record(quantity="[2]"), "invalid_type:quantity"),
    (
        "quantity_string_barely_fractional",
        record(quantity='"2.0000000000000001"'),
        "invalid_type:quantity",
    ),
    ("quantity_zero", record(quantity="0"), "invalid_quantity"),
    ("quantity_minus_one", record(quantity="-1"), "invalid_quantity"),
    ("quantity_string_zero", record(quantity='"0"'), "invalid_quantity"),
    # amount
    ("amount_absent", record(amount=None), "missing_required:amount"),
    ("amount_null", record(amount="null"), "missing_required:amount"),
    ("amount_blank_string", record(amount='"  "'), "missing_required:amount"),
    ("amount_decimal_comma", record(amount='"12,5"'), "invalid_type:amount"),
    ("amount_string_abc", record(amount='"abc"'), "invalid_type:amount"),
    ("amount_with_currency", record(amount='"12.50 EUR"'), "invalid_type:amount"),
    ("amount_json_true", record(amount="true"), "invalid_type:amount"),
    ("amount_minus_0_01", record(amount="-0.01"), "negative_amount"),
    ("amount_string_minus_5", record(amount='"-5"'), "negative_amount"),
    ("amount_minus_0_005_rounds_to_minus_0_01", record(amount="-0.005"), "negative_amount"),
    ("amount_1000000_005_rounds_above_max", record(amount="1000000.005"), "amount_out_of_range"),
    ("amount_string_1000000_01", record(amount='"1000000.01"'), "amount_out_of_range"),
    ("amount_json_1e400", record(amount="1e400"), "amount_out_of_range"),
    ("amount_string_1e400", record(amount='"1e400"'), "amount_out_of_range"),
    ("amount_json_minus_1e400", record(amount="-1e400"), "negative_amount"),
    ("amount_string_minus_1e400", record(amount='"-1e400"'), "negative_amount"),
    # event_time
    ("event_time_absent", record(event_time=None), "missing_required:event_time"),
    ("event_time_empty", record(event_time='""'), "missing_required:event_time"),
    ("event_time_blank", record(event_time='"  "'), "missing_required:event_time"),
    ("event_time_not_a_date", record(event_time='"not a date"'), "invalid_type:event_time"),
    ("event_time_epoch_seconds", record(event_time="1714557600"), "invalid_type:event_time"),
    (
        "event_time_february_30",
        record(event_time='"2024-02-30T10:00:00Z"'),
        "invalid_type:event_time",
    ),
    (
        "event_time_1999_12_31",
        record(event_time='"1999-12-31T23:59:59Z"'),
        "event_time_out_of_range",
    ),
    # 01:00 at +02:00 on 2000-01-01 is 1999-12-31T23:00Z
    (
        "event_time_before_2000_in_utc",
        record(event_time='"2000-01-01T01:00:00+02:00"'),
        "event_time_out_of_range",
    ),
    ("event_time_now_plus_6min", record(event_time='"2024-06-01T12:06:00Z"'), "future_event_time"),
    (
        "event_time_now_plus_5min_1s",
        record(event_time='"2024-06-01T12:05:01Z"'),
        "future_event_time",
    ),
    # 13:06 at +01:00 is 12:06Z: six minutes after NOW
    (
        "event_time_future_via_offset",
        record(event_time='"2024-06-01T13:06:00+01:00"'),
        "future_event_time",
    ),
    # several problems: the first reason in table order wins
    (
        "order_no_order_id_and_negative_amount",
        record(order_id=None, amount="-5"),
        "missing_required:order_id",
    ),
    (
        "order_no_event_id_and_no_order_id",
        record(event_id=None, order_id=None),
        "missing_required:event_id",
    ),
    (
        "order_no_product_id_and_zero_quantity",
        record(product_id='""', quantity="0"),
        "missing_required:product_id",
    ),
    (
        "order_no_quantity_and_negative_amount",
        record(quantity=None, amount="-1"),
        "missing_required:quantity",
    ),
    (
        "order_fractional_quantity_and_no_amount",
        record(quantity="2.5", amount=None),
        "invalid_type:quantity",
    ),
    (
        "order_zero_quantity_and_bad_amount",
        record(quantity="0", amount='"abc"'),
        "invalid_quantity",
    ),
    (
        "order_bad_amount_and_bad_time",
        record(amount='"x"', event_time='"x"'),
        "invalid_type:amount",
    ),
    (
        "order_negative_amount_and_future_time",
        record(amount="-1", event_time='"2030-01-01T00:00:00Z"'),
        "negative_amount",
    ),
    (
        "order_huge_amount_and_no_time",
        record(amount="2000000", event_time=None),
        "amount_out_of_range",
    ),
    (
        "order_no_time_and_no_optional_fields",
        record(event_time=None, customer_id=None, region=None),
        "missing_required:event_time",
    ),
    # valid controls
    ("valid_base", record(), None),
    ("valid_object_padded_with_whitespace", "  " + record() + "\t ", None),
    (
        "valid_unknown_fields_ignored",
        record(coupon='{"code": "X", "tiers": [1, {"a": null}]}', schema_version="2", note='"hi"'),
        None,
    ),
    (
        "valid_optional_fields_missing",
        record(customer_id=None, category="null", region='""', channel='"  "'),
        None,
    ),
    ("valid_quantity_2_0", record(quantity="2.0"), None),
    ("valid_quantity_numeric_string", record(quantity='"3"'), None),
    ("valid_amount_minus_0_004_rounds_to_zero", record(amount="-0.004"), None),
    ("valid_amount_1000000_004", record(amount="1000000.004"), None),
    ("valid_amount_zero", record(amount="0"), None),
    ("valid_time_2000_01_01", record(event_time='"2000-01-01T00:00:00Z"'), None),
    ("valid_time_now_plus_4min", record(event_time='"2024-06-01T12:04:00Z"'), None),
    ("valid_time_now_plus_exactly_5min", record(event_time='"2024-06-01T12:05:00Z"'), None),
]


# --------------------------------------------------------------------------------------------
# Normalised and derived values of valid events
# --------------------------------------------------------------------------------------------
BASE_EXPECTED: dict[str, object] = {
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
VALUE_COLUMNS = tuple(BASE_EXPECTED)
VALUE_SCHEMA = T.StructType(
    [
        T.StructField("source_offset", T.LongType()),
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

VALUE_CASES: list[tuple[str, str, dict[str, object]]] = [
    ("base", record(), {}),
    (
        "trimmed_and_lower_cased",
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
    (
        "defaults_absent_or_null",
        record(customer_id=None, category="null", region=None, channel="null"),
        {
            "customer_id": "anonymous",
            "category": "unknown",
            "region": "unknown",
            "channel": "unknown",
            "defaulted": 4,
        },
    ),
    (
        "defaults_blank",
        record(customer_id='"   "', category='""', region='"  "', channel='""'),
        {
            "customer_id": "anonymous",
            "category": "unknown",
            "region": "unknown",
            "channel": "unknown",
            "defaulted": 4,
        },
    ),
    ("one_default", record(region=None), {"region": "unknown", "defaulted": 1}),
    ("quantity_numeric_string", record(quantity='"3"'), {"quantity": 3}),
    ("quantity_padded_string", record(quantity='" 4 "'), {"quantity": 4}),
    ("quantity_json_2_0", record(quantity="2.0"), {"quantity": 2}),
    ("quantity_string_2_0", record(quantity='"2.0"'), {"quantity": 2}),
    ("quantity_json_1", record(quantity="1"), {"quantity": 1}),
    (
        "amount_json_1000_005",
        record(amount="1000.005"),
        {"amount": Decimal("1000.01"), "revenue_category": "high"},
    ),
    ("amount_string_2_345", record(amount='"2.345"'), {"amount": Decimal("2.35")}),
    ("amount_json_0_125", record(amount="0.125"), {"amount": Decimal("0.13")}),
    ("amount_json_minus_0_004", record(amount="-0.004"), {"amount": Decimal("0.00")}),
    (
        "amount_json_1000000_004",
        record(amount="1000000.004"),
        {"amount": Decimal("1000000.00"), "revenue_category": "high"},
    ),
    (
        "amount_string_exact_decimal",
        record(amount='"1.0049999999999999"'),
        {"amount": Decimal("1.00")},
    ),
    ("amount_padded_string", record(amount='" 7.5 "'), {"amount": Decimal("7.50")}),
    (
        "category_100_00_low",
        record(amount="100.00"),
        {"amount": Decimal("100.00"), "revenue_category": "low"},
    ),
    (
        "category_100_01_medium",
        record(amount="100.01"),
        {"amount": Decimal("100.01"), "revenue_category": "medium"},
    ),
    (
        "category_1000_00_medium",
        record(amount='"1000.00"'),
        {"amount": Decimal("1000.00"), "revenue_category": "medium"},
    ),
    (
        "category_1000_01_high",
        record(amount="1000.01"),
        {"amount": Decimal("1000.01"), "revenue_category": "high"},
    ),
    # 100.004 rounds to 100.00: the category follows the rounded amount
    (
        "category_after_rounding",
        record(amount="100.004"),
        {"amount": Decimal("100.00"), "revenue_category": "low"},
    ),
    (
        "time_offset_plus_02_00",
        record(event_time='"2024-05-01T10:00:00+02:00"'),
        {"event_time": ts(2024, 5, 1, 8, 0, 0), "event_hour": ts(2024, 5, 1, 8, 0, 0)},
    ),
    (
        "time_offset_minus_0530",
        record(event_time='"2024-05-01T10:00:00-0530"'),
        {"event_time": ts(2024, 5, 1, 15, 30, 0), "event_hour": ts(2024, 5, 1, 15, 0, 0)},
    ),
    ("time_no_zone_is_utc", record(event_time='"2024-05-01T10:00:00"'), {}),
    (
        "time_fractional_seconds_z",
        record(event_time='"2024-05-01T10:59:59.123456Z"'),
        {"event_time": ts(2024, 5, 1, 10, 59, 59, 123456), "event_hour": ts(2024, 5, 1, 10, 0, 0)},
    ),
    (
        "time_fractional_seconds_with_offset",
        record(event_time='"2024-05-01T10:00:00.5+05:45"'),
        {"event_time": ts(2024, 5, 1, 4, 15, 0, 500000), "event_hour": ts(2024, 5, 1, 4, 0, 0)},
    ),
    (
        "time_next_day_in_utc",
        record(event_time='"2024-05-01T23:30:00-02:00"'),
        {
            "event_time": ts(2024, 5, 2, 1, 30, 0),
            "event_date": date(2024, 5, 2),
            "event_hour": ts(2024, 5, 2, 1, 0, 0),
        },
    ),
    (
        "time_next_month_in_utc",
        record(event_time='"2024-05-31T23:30:00-01:00"'),
        {
            "event_time": ts(2024, 6, 1, 0, 30, 0),
            "event_date": date(2024, 6, 1),
            "event_hour": ts(2024, 6, 1, 0, 0, 0),
            "month": "2024-06",
        },
    ),
    (
        "time_first_valid_instant",
        record(event_time='"2000-01-01T00:00:00Z"'),
        {
            "event_time": ts(2000, 1, 1, 0, 0, 0),
            "event_date": date(2000, 1, 1),
            "event_hour": ts(2000, 1, 1, 0, 0, 0),
            "month": "2000-01",
        },
    ),
    (
        "time_now_plus_4min",
        record(event_time='"2024-06-01T12:04:00Z"'),
        {
            "event_time": ts(2024, 6, 1, 12, 4, 0),
            "event_date": date(2024, 6, 1),
            "event_hour": ts(2024, 6, 1, 12, 0, 0),
            "month": "2024-06",
        },
    ),
    (
        "unknown_nested_fields_ignored",
        record(extra='{"nested": {"deeper": [1, 2, {"x": "y"}]}}', v="3.5"),
        {},
    ),
]


# Lines for valid_events / quarantine_records and for validate's full output row.
SPLIT_LINES: list[str | None] = [
    record(event_id='"e-7"', customer_id=None),
    "oops",
    record(event_id='"e-8"', amount="-3"),
]
# 1.0049999999999999 is below 1.005, so half-up to 2 places gives 1.00 (through a double, the
# text would become 1.005 and round to 1.01).
EXACT_LINES: list[str | None] = [
    record(amount="1.0049999999999999"),
    record(amount='"1.0049999999999999"'),
]
# Envelope rows built directly with ENVELOPE_SCHEMA (as any parser emits them).
DIRECT_ROWS = [
    (
        "file",
        "landing/a.csv",
        None,
        2,
        None,
        "raw-2",
        False,
        "e-1",
        "o-1",
        "p-1",
        None,
        " Toys ",
        "EU",
        None,
        "1",
        "99.999",
        "2024-05-01T10:00:00Z",
    ),
    # flagged malformed by its parser: rejected even though its fields look valid
    (
        "file",
        "landing/a.csv",
        None,
        3,
        None,
        "raw-3",
        True,
        "e-2",
        "o-2",
        "p-2",
        "c-2",
        "toys",
        "eu",
        "web",
        "1",
        "5",
        "2024-05-01T10:00:00Z",
    ),
    (
        "file",
        "landing/a.csv",
        None,
        4,
        None,
        "raw-4",
        False,
        "e-3",
        "o-3",
        "p-3",
        "c-3",
        "toys",
        "eu",
        "web",
        "1",
        "5",
        "2024-05-01T10:00:00Z",
    ),
]
# Kafka partition = which table a row belongs to.
REASONS, VALUES, SPLIT, EXACT = 0, 1, 2, 3


@pytest.fixture(scope="module")
def validated(spark: SparkSession) -> Iterator[DataFrame]:
    tables = {
        REASONS: [line for _, line, _ in REASON_CASES],
        VALUES: [line for _, line, _ in VALUE_CASES],
        SPLIT: SPLIT_LINES,
        EXACT: EXACT_LINES,
    }
    envelopes = spark.createDataFrame(DIRECT_ROWS, ENVELOPE_SCHEMA)
    for partition, lines in tables.items():
        envelopes = envelopes.unionByName(json_envelopes(spark, lines, partition))
    frame = envelopes.transform(validate(now=NOW)).cache()
    yield frame
    frame.unpersist()


def table(validated: DataFrame, partition: int) -> DataFrame:
    return validated.where((F.col("source") == "kafka") & (F.col("source_partition") == partition))


@pytest.fixture(scope="module")
def reasons(validated: DataFrame) -> dict[int, str | None]:
    rows = table(validated, REASONS).select("source_offset", "reject_reason").collect()
    return {row["source_offset"]: row["reject_reason"] for row in rows}


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        pytest.param(i, expected, id=case_id)
        for i, (case_id, _, expected) in enumerate(REASON_CASES)
    ],
)
def test_reject_reason(reasons: dict[int, str | None], index: int, expected: str | None) -> None:
    assert reasons[index] == expected, REASON_CASES[index][1]


def test_reason_codes_are_the_contracts_in_table_order() -> None:
    assert REASON_CODES == CONTRACT_REASONS


def test_every_reason_code_has_a_case() -> None:
    covered = {expected for _, _, expected in REASON_CASES}
    assert set(CONTRACT_REASONS) <= covered


def test_normalised_and_derived_fields(spark: SparkSession, validated: DataFrame) -> None:
    actual = (
        table(validated, VALUES).select("source_offset", *VALUE_COLUMNS).orderBy("source_offset")
    )
    rows = [
        (offset, *[{**BASE_EXPECTED, **changes}[c] for c in VALUE_COLUMNS])
        for offset, (_, _, changes) in enumerate(VALUE_CASES)
    ]
    expected = spark.createDataFrame(rows, VALUE_SCHEMA)
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_json_number_amount_is_rounded_from_its_exact_decimal_text(
    spark: SparkSession, validated: DataFrame
) -> None:
    actual = (
        table(validated, EXACT)
        .select("source_offset", "reject_reason", "amount")
        .orderBy("source_offset")
    )
    expected = spark.createDataFrame(
        [(0, None, Decimal("1.00")), (1, None, Decimal("1.00"))],
        "source_offset long, reject_reason string, amount decimal(18,2)",
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_amount_too_large_for_money_is_rejected_not_a_crash(spark: SparkSession) -> None:
    """1e16 fits DECIMAL(38,2) but not the DECIMAL(18,2) money type: out of range, not an error."""
    lines: list[str | None] = [
        record(amount='"10000000000000000"'),
        record(amount="1e20"),
        record(),
    ]
    frame = json_envelopes(spark, lines).transform(validate(now=NOW))
    # Every column, as the batch layer materialises it (it persists the whole validated frame).
    reasons = {row["source_offset"]: row["reject_reason"] for row in frame.collect()}
    assert reasons == {0: "amount_out_of_range", 1: "amount_out_of_range", 2: None}


# --------------------------------------------------------------------------------------------
# validate keeps the envelope; valid_events / quarantine_records split its output
# --------------------------------------------------------------------------------------------
POSITION_SCHEMA = [
    T.StructField("source", T.StringType()),
    T.StructField("source_name", T.StringType()),
    T.StructField("source_partition", T.IntegerType()),
    T.StructField("source_offset", T.LongType()),
    T.StructField("source_key", T.StringType()),
]
TYPED_EVENT_SCHEMA = [
    T.StructField("event_id", T.StringType()),
    T.StructField("order_id", T.StringType()),
    T.StructField("product_id", T.StringType()),
    *VALUE_SCHEMA.fields[3:],
]
E7_EVENT = (
    "e-7",
    "o-1",
    "p-1",
    "anonymous",
    "books",
    "eu",
    "web",
    2,
    Decimal("10.50"),
    ts(2024, 5, 1, 10, 0, 0),
    date(2024, 5, 1),
    ts(2024, 5, 1, 10, 0, 0),
    "2024-05",
    "low",
)


def test_validate_output_row(spark: SparkSession, validated: DataFrame) -> None:
    actual = table(validated, SPLIT).where(F.col("source_offset") == 0)
    schema = T.StructType(
        [
            *POSITION_SCHEMA,
            T.StructField("raw_record", T.StringType()),
            T.StructField("reject_reason", T.StringType()),
            T.StructField("defaulted", T.IntegerType()),
            *TYPED_EVENT_SCHEMA,
        ]
    )
    expected = spark.createDataFrame(
        [("kafka", "sales-events", SPLIT, 0, None, SPLIT_LINES[0], None, 1, *E7_EVENT)], schema
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_valid_events_keeps_only_valid_rows_with_event_columns(
    spark: SparkSession, validated: DataFrame
) -> None:
    actual = table(validated, SPLIT).transform(valid_events)
    expected = spark.createDataFrame(
        [(*E7_EVENT, "kafka", "sales-events", SPLIT, 0, None)],
        T.StructType([*TYPED_EVENT_SCHEMA, *POSITION_SCHEMA]),
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_quarantine_records_keep_raw_record_position_reason_and_time(
    spark: SparkSession, validated: DataFrame
) -> None:
    actual = table(validated, SPLIT).transform(quarantine_records(REJECTED_AT))
    schema = T.StructType(
        [
            *POSITION_SCHEMA,
            T.StructField("raw_record", T.StringType()),
            T.StructField("reason", T.StringType()),
            T.StructField("rejected_at", T.TimestampType()),
        ]
    )
    expected = spark.createDataFrame(
        [
            ("kafka", "sales-events", SPLIT, 1, None, "oops", "malformed", REJECTED_AT),
            (
                "kafka",
                "sales-events",
                SPLIT,
                2,
                None,
                SPLIT_LINES[2],
                "negative_amount",
                REJECTED_AT,
            ),
        ],
        schema,
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


def test_envelope_rows_built_directly(spark: SparkSession, validated: DataFrame) -> None:
    """Raw strings per field are normalised; the parser's `malformed` flag wins."""
    actual = validated.where(F.col("source") == "file").select(
        "source_offset",
        "raw_record",
        "reject_reason",
        "defaulted",
        "customer_id",
        "category",
        "region",
        "channel",
        "amount",
        "revenue_category",
    )
    expected_valid = spark.createDataFrame(
        [
            # 99.999 rounds half-up to 100.00, which is still `low`
            (2, "raw-2", None, 2, "anonymous", "toys", "eu", "unknown", Decimal("100.00"), "low"),
            (4, "raw-4", None, 0, "c-3", "toys", "eu", "web", Decimal("5.00"), "low"),
        ],
        "source_offset long, raw_record string, reject_reason string, defaulted int, "
        "customer_id string, category string, region string, channel string, "
        "amount decimal(18,2), revenue_category string",
    )
    assert_df_equality(
        actual.where(F.col("reject_reason").isNull()),
        expected_valid,
        ignore_nullable=True,
        ignore_row_order=True,
    )
    rejected = actual.where(F.col("reject_reason").isNotNull()).select(
        "source_offset", "reject_reason"
    )
    expected_rejected = spark.createDataFrame(
        [(3, "malformed")], "source_offset long, reject_reason string"
    )
    assert_df_equality(rejected, expected_rejected, ignore_nullable=True)


# --------------------------------------------------------------------------------------------
# dedupe_events
# --------------------------------------------------------------------------------------------
DEDUPE_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType()),
        T.StructField("amount", T.DecimalType(18, 2)),
        T.StructField("source", T.StringType()),
        T.StructField("source_name", T.StringType()),
        T.StructField("source_partition", T.IntegerType()),
        T.StructField("source_offset", T.LongType()),
    ]
)


def test_dedupe_keeps_lowest_position_and_counts_copies(spark: SparkSession) -> None:
    events = spark.createDataFrame(
        [
            ("e1", Decimal("1.00"), "kafka", "sales-events", 1, 5),
            ("e1", Decimal("2.00"), "kafka", "sales-events", 0, 9),
            ("e1", Decimal("3.00"), "kafka", "sales-events", 0, 7),
            ("e2", Decimal("4.00"), "kafka", "sales-events", 1, 1),
            # offsets compare as numbers: line 2 comes before line 10
            ("e3", Decimal("5.00"), "file", "landing/a.jsonl", None, 10),
            ("e3", Decimal("6.00"), "file", "landing/a.jsonl", None, 2),
            ("e4", Decimal("7.00"), "file", "landing/b.jsonl", None, 1),
            ("e4", Decimal("8.00"), "file", "landing/a.jsonl", None, 30),
        ],
        DEDUPE_SCHEMA,
    )
    actual = events.transform(dedupe_events())
    expected = spark.createDataFrame(
        [
            ("e1", Decimal("3.00"), "kafka", "sales-events", 0, 7, 3),
            ("e2", Decimal("4.00"), "kafka", "sales-events", 1, 1, 1),
            ("e3", Decimal("6.00"), "file", "landing/a.jsonl", None, 2, 2),
            ("e4", Decimal("8.00"), "file", "landing/a.jsonl", None, 30, 2),
        ],
        T.StructType([*DEDUPE_SCHEMA.fields, T.StructField("copies", T.LongType())]),
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)
