"""What ``validate`` returns and how it is split (valid events, quarantine), and CONTRACT §2:
duplicates by ``event_id``, the first one ingested wins.

Every expected value is worked out by hand from the inline rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from sales_core.events import parse_json_records
from sales_core.rules import dedupe_events, quarantine_records, valid_events, validate
from tests.unit.cases import INPUT_SCHEMA, NOW, UTC, params, record, ts

pytestmark = pytest.mark.unit

REJECTED_AT = datetime(2024, 6, 1, 12, 30, 0, tzinfo=UTC)

# Three Kafka records at offsets 0, 1, 2 of partition 3: a valid event, a malformed record,
# a negative amount.
LINES = [record(event_id='"e-7"', customer_id=None), "oops", record(event_id='"e-8"', amount="-3")]
POSITION_SCHEMA = [
    T.StructField("source", T.StringType()),
    T.StructField("source_name", T.StringType()),
    T.StructField("source_partition", T.IntegerType()),
    T.StructField("source_offset", T.LongType()),
    T.StructField("source_key", T.StringType()),
]
EVENT_SCHEMA = [
    T.StructField("event_id", T.StringType()),
    T.StructField("order_id", T.StringType()),
    T.StructField("product_id", T.StringType()),
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


@pytest.fixture(scope="module")
def validated(spark: SparkSession) -> DataFrame:
    rows = [("kafka", "sales-events", 3, offset, None, line) for offset, line in enumerate(LINES)]
    frame = spark.createDataFrame(rows, INPUT_SCHEMA).transform(parse_json_records("value"))
    return frame.transform(validate(now=NOW)).cache()


def test_validate_keeps_position_and_raw_record_and_adds_the_typed_event(
    spark: SparkSession, validated: DataFrame
) -> None:
    schema = T.StructType(
        [
            *POSITION_SCHEMA,
            T.StructField("raw_record", T.StringType()),
            T.StructField("reject_reason", T.StringType()),
            T.StructField("defaulted", T.IntegerType()),
            *EVENT_SCHEMA,
        ]
    )
    expected = spark.createDataFrame(
        [("kafka", "sales-events", 3, 0, None, LINES[0], None, 1, *E7_EVENT)], schema
    )
    assert_df_equality(validated.where("source_offset = 0"), expected, ignore_nullable=True)


def test_valid_events_keeps_only_valid_rows_with_event_columns(
    spark: SparkSession, validated: DataFrame
) -> None:
    expected = spark.createDataFrame(
        [(*E7_EVENT, "kafka", "sales-events", 3, 0, None)],
        T.StructType([*EVENT_SCHEMA, *POSITION_SCHEMA]),
    )
    assert_df_equality(validated.transform(valid_events), expected, ignore_nullable=True)


def test_quarantine_records_keep_raw_record_position_reason_and_time(
    spark: SparkSession, validated: DataFrame
) -> None:
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
            ("kafka", "sales-events", 3, 1, None, "oops", "malformed", REJECTED_AT),
            ("kafka", "sales-events", 3, 2, None, LINES[2], "negative_amount", REJECTED_AT),
        ],
        schema,
    )
    actual = validated.transform(quarantine_records(REJECTED_AT))
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


# --------------------------------------------------------------------------------------------
# dedupe_events: one row per event_id, the first by position; `copies` counts the rows.
# A case's rows share one event_id (its case id); each row is
# (amount, source, source_name, source_partition, source_offset), and the expected row is the
# one kept with its `copies`.
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


@dataclass(frozen=True)
class DedupeCase:
    """Rows sharing one ``event_id`` (the case's id), each ``(amount, source, source_name,
    source_partition, source_offset)``; the one row ``dedupe_events`` must keep, with its copies."""

    id: str
    rows: tuple[tuple[Any, ...], ...]
    kept: tuple[Any, ...]
    copies: int


def dedupe_case(
    case_id: str, rows: list[tuple[Any, ...]], kept: tuple[Any, ...], copies: int
) -> DedupeCase:
    assert 1 <= len(rows) <= 3
    return DedupeCase(case_id, tuple(rows), kept, copies)


DEDUPE = [
    dedupe_case(
        "single_copy->kept",
        [(Decimal("4.00"), "kafka", "sales-events", 1, 1)],
        (Decimal("4.00"), "kafka", "sales-events", 1, 1),
        1,
    ),
    dedupe_case(
        "kafka_lower_partition_then_offset->first_wins",
        [
            (Decimal("1.00"), "kafka", "sales-events", 1, 5),
            (Decimal("2.00"), "kafka", "sales-events", 0, 9),
            (Decimal("3.00"), "kafka", "sales-events", 0, 7),
        ],
        (Decimal("3.00"), "kafka", "sales-events", 0, 7),
        3,
    ),
    # offsets compare as numbers: line 2 comes before line 10
    dedupe_case(
        "file_line_2_before_line_10->first_wins",
        [
            (Decimal("5.00"), "file", "landing/a.jsonl", None, 10),
            (Decimal("6.00"), "file", "landing/a.jsonl", None, 2),
        ],
        (Decimal("6.00"), "file", "landing/a.jsonl", None, 2),
        2,
    ),
    dedupe_case(
        "file_a_before_file_b->first_wins",
        [
            (Decimal("7.00"), "file", "landing/b.jsonl", None, 1),
            (Decimal("8.00"), "file", "landing/a.jsonl", None, 30),
        ],
        (Decimal("8.00"), "file", "landing/a.jsonl", None, 30),
        2,
    ),
    # rows without a position (database rows) fall back to their content: the same row on
    # every run, whatever order the rows arrive in
    dedupe_case(
        "no_position->lowest_content_wins",
        [
            (Decimal("9.50"), "jdbc", "sales_data", None, None),
            (Decimal("9.25"), "jdbc", "sales_data", None, None),
        ],
        (Decimal("9.25"), "jdbc", "sales_data", None, None),
        2,
    ),
]


@pytest.fixture(scope="module")
def deduped(spark: SparkSession) -> DataFrame:
    """Every dedupe case in one DataFrame, deduplicated."""
    events = spark.createDataFrame([(c.id, *row) for c in DEDUPE for row in c.rows], DEDUPE_SCHEMA)
    return events.transform(dedupe_events()).cache()


@pytest.fixture(scope="module")
def kept_rows(deduped: DataFrame) -> dict[str, list[tuple[Any, ...]]]:
    """The rows kept per case id: ``(amount, source, ..., source_offset, copies)``."""
    kept: dict[str, list[tuple[Any, ...]]] = {}
    for row in deduped.collect():
        kept.setdefault(row["event_id"], []).append(tuple(row)[1:])
    return kept


@pytest.mark.parametrize("rule", params(DEDUPE))
def test_dedupe_keeps_the_first_by_position(
    kept_rows: dict[str, list[tuple[Any, ...]]], rule: DedupeCase
) -> None:
    assert kept_rows[rule.id] == [(*rule.kept, rule.copies)], rule.rows


def test_dedupe_all_cases_in_one_frame_with_the_event_columns_and_copies(
    spark: SparkSession, deduped: DataFrame
) -> None:
    expected = spark.createDataFrame(
        [(c.id, *c.kept, c.copies) for c in DEDUPE],
        T.StructType([*DEDUPE_SCHEMA.fields, T.StructField("copies", T.LongType())]),
    )
    assert_df_equality(deduped, expected, ignore_nullable=True, ignore_row_order=True)
