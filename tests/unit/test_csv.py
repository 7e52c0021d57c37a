"""CSV lines into the envelope (header names, quoting, token counts), then through ``validate``.

Each data line is a case named by what it exercises; its id rides in ``source_key``, which
the parser and ``validate`` carry through untouched. All lines are parsed (one parser per
header) and validated in one DataFrame. Every expected value is worked out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from chispa import assert_df_equality
from chispa.schema_comparer import assert_schema_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_core.events import (
    ENVELOPE_COLUMNS,
    ENVELOPE_SCHEMA,
    EVENT_FIELDS,
    csv_header_fields,
    parse_csv_records,
)
from sales_core.rules import validate
from tests.unit.cases import INPUT_SCHEMA, NOW, params, ts

pytestmark = pytest.mark.unit

# Header order differs from the contract's; a BOM, quotes, padding and upper case; an extra
# column `coupon` that is not an event field.
HEADER_A = (
    '\ufeffAmount, event_id ,"ORDER_ID",product_id,quantity,event_time,category,coupon,region,'
    "channel,customer_id"
)
# Headers that lack some optional fields: customer_id and channel; customer_id, region, channel.
HEADER_B = "event_id,order_id,product_id,quantity,amount,event_time,category,region"
HEADER_C = "event_id,order_id,product_id,quantity,amount,event_time,category"
FILES = {HEADER_A: "a.csv", HEADER_B: "b.csv", HEADER_C: "c.csv"}
TEN = "2024-05-01T10:00:00Z"

# The validated columns compared for a line that was read (after the case and its reason).
EVENT_SCHEMA = (
    "defaulted int, event_id string, order_id string, customer_id string, category string, "
    "region string, channel string, quantity int, amount decimal(18,2), event_time timestamp, "
    "event_date date"
)
EVENT_COLUMNS = [f.split()[0] for f in EVENT_SCHEMA.split(", ")]


@dataclass(frozen=True)
class CsvCase:
    """A data line under a header: the envelope's field texts (None: flagged malformed, every
    field null), the reject reason (None: valid), and for a line that was read, the validated
    event (every column of :data:`EVENT_COLUMNS`)."""

    id: str
    header: str
    line: str | None
    fields: dict[str, str] | None
    reason: str | None
    event: dict[str, Any] | None = None


def line_of(case: CsvCase) -> int:
    """The case's line in its file (line 1 is the header)."""
    return 2 + [c for c in CASES if c.header == case.header].index(case)


CASES = [
    CsvCase(
        "header_reordered_quoted_padded_extra_column->valid",
        HEADER_A,
        '12.345,e-2,o-2,p-2,2,2024-05-01T10:00:00Z,"Books, Used",SPRING10, EU ,Web, c-2 ',
        {
            "amount": "12.345",
            "event_id": "e-2",
            "order_id": "o-2",
            "product_id": "p-2",
            "quantity": "2",
            "event_time": TEN,
            "category": "Books, Used",
            "region": " EU ",
            "channel": "Web",
            "customer_id": " c-2 ",
        },
        None,
        {
            "defaulted": 0,
            "event_id": "e-2",
            "order_id": "o-2",
            "customer_id": "c-2",
            "category": "books, used",
            "region": "eu",
            "channel": "web",
            "quantity": 2,
            "amount": Decimal("12.35"),
            "event_time": ts(2024, 5, 1, 10, 0, 0),
            "event_date": date(2024, 5, 1),
        },
    ),
    CsvCase(
        "every_field_quoted->valid",
        HEADER_A,
        '"7.5","e-9","o-9","p-9","3","2024-05-01T10:00:00+02:00","toys","","eu","app","c-9"',
        {
            "amount": "7.5",
            "event_id": "e-9",
            "order_id": "o-9",
            "product_id": "p-9",
            "quantity": "3",
            "event_time": "2024-05-01T10:00:00+02:00",
            "category": "toys",
            "region": "eu",
            "channel": "app",
            "customer_id": "c-9",
        },
        None,
        {
            "defaulted": 0,
            "event_id": "e-9",
            "order_id": "o-9",
            "customer_id": "c-9",
            "category": "toys",
            "region": "eu",
            "channel": "app",
            "quantity": 3,
            "amount": Decimal("7.50"),
            "event_time": ts(2024, 5, 1, 8, 0, 0),
            "event_date": date(2024, 5, 1),
        },
    ),
    CsvCase(
        "header_without_customer_id_and_channel->valid",
        HEADER_B,
        "e-20,o-20,p-20,1,100.01,2024-05-01T23:30:00-02:00,Toys,US",
        {
            "event_id": "e-20",
            "order_id": "o-20",
            "product_id": "p-20",
            "quantity": "1",
            "amount": "100.01",
            "event_time": "2024-05-01T23:30:00-02:00",
            "category": "Toys",
            "region": "US",
        },
        None,
        {
            "defaulted": 2,
            "event_id": "e-20",
            "order_id": "o-20",
            "customer_id": "anonymous",
            "category": "toys",
            "region": "us",
            "channel": "unknown",
            "quantity": 1,
            "amount": Decimal("100.01"),
            "event_time": ts(2024, 5, 2, 1, 30, 0),
            "event_date": date(2024, 5, 2),
        },
    ),
    # RFC 4180 (Python's csv, PostgreSQL COPY): a quote inside a quoted field is written twice
    CsvCase(
        "doubled_quotes_inside_quotes->valid",
        HEADER_C,
        'e-30,o-30,p-30,1,5,2024-05-01T10:00:00Z,"Kids ""Deluxe"" Toys"',
        {
            "event_id": "e-30",
            "order_id": "o-30",
            "product_id": "p-30",
            "quantity": "1",
            "amount": "5",
            "event_time": TEN,
            "category": 'Kids "Deluxe" Toys',
        },
        None,
        {
            "defaulted": 3,
            "event_id": "e-30",
            "order_id": "o-30",
            "customer_id": "anonymous",
            "category": 'kids "deluxe" toys',
            "region": "unknown",
            "channel": "unknown",
            "quantity": 1,
            "amount": Decimal("5.00"),
            "event_time": ts(2024, 5, 1, 10, 0, 0),
            "event_date": date(2024, 5, 1),
        },
    ),
    CsvCase(
        "empty_order_id->missing_required:order_id",
        HEADER_A,
        "5,e-5,,p-5,1,2024-05-01T10:00:00Z,books,,eu,web,c-5",
        {
            "amount": "5",
            "event_id": "e-5",
            "product_id": "p-5",
            "quantity": "1",
            "event_time": TEN,
            "category": "books",
            "region": "eu",
            "channel": "web",
            "customer_id": "c-5",
        },
        "missing_required:order_id",
        {
            "defaulted": 0,
            "event_id": "e-5",
            "order_id": None,
            "customer_id": "c-5",
            "category": "books",
            "region": "eu",
            "channel": "web",
            "quantity": 1,
            "amount": Decimal("5.00"),
            "event_time": ts(2024, 5, 1, 10, 0, 0),
            "event_date": date(2024, 5, 1),
        },
    ),
    CsvCase(
        "quoted_thousands_separator->invalid_type:amount",
        HEADER_A,
        '"1,000.50",e-6,o-6,p-6,1,2024-05-01T10:00:00Z,books,,eu,web,c-6',
        {
            "amount": "1,000.50",
            "event_id": "e-6",
            "order_id": "o-6",
            "product_id": "p-6",
            "quantity": "1",
            "event_time": TEN,
            "category": "books",
            "region": "eu",
            "channel": "web",
            "customer_id": "c-6",
        },
        "invalid_type:amount",
        {
            "defaulted": 0,
            "event_id": "e-6",
            "order_id": "o-6",
            "customer_id": "c-6",
            "category": "books",
            "region": "eu",
            "channel": "web",
            "quantity": 1,
            "amount": None,
            "event_time": ts(2024, 5, 1, 10, 0, 0),
            "event_date": date(2024, 5, 1),
        },
    ),
    CsvCase(
        "ten_tokens_for_eleven_columns->malformed",
        HEADER_A,
        "5,e-3,o-3,p-3,1,2024-05-01T10:00:00Z,books,X,eu,web",
        None,
        "malformed",
    ),
    CsvCase(
        "twelve_tokens_for_eleven_columns->malformed",
        HEADER_A,
        "5,e-4,o-4,p-4,1,2024-05-01T10:00:00Z,books,X,eu,web,c-4,surplus",
        None,
        "malformed",
    ),
    CsvCase(
        "unterminated_quote->malformed",
        HEADER_A,
        '5,e-7,o-7,p-7,1,2024-05-01T10:00:00Z,"unterminated,X,eu,web,c-7',
        None,
        "malformed",
    ),
    CsvCase("null_line->malformed", HEADER_A, None, None, "malformed"),
    # an empty line has too few tokens for the header, like any short line
    CsvCase("empty_line->malformed", HEADER_C, "", None, "malformed"),
]


@pytest.fixture(scope="module")
def envelopes(spark: SparkSession) -> DataFrame:
    """Every case, parsed with its file's header, in one DataFrame."""
    frames = []
    for header, name in FILES.items():
        rows = [("file", name, None, line_of(c), c.id, c.line) for c in CASES if c.header == header]
        lines = spark.createDataFrame(rows, INPUT_SCHEMA)
        frames.append(lines.transform(parse_csv_records(csv_header_fields(header))))
    first, *others = frames
    for frame in others:
        first = first.unionByName(frame)
    return first.cache()


@pytest.fixture(scope="module")
def validated(envelopes: DataFrame) -> DataFrame:
    return envelopes.transform(validate(now=NOW)).withColumnRenamed("source_key", "case").cache()


@pytest.fixture(scope="module")
def envelope_rows(envelopes: DataFrame) -> dict[str, dict[str, Any]]:
    return {row["source_key"]: row.asDict() for row in envelopes.collect()}


@pytest.fixture(scope="module")
def reasons(validated: DataFrame) -> dict[str, str | None]:
    return {row["case"]: row["reject_reason"] for row in validated.collect()}


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


@pytest.mark.parametrize("line", params(CASES))
def test_envelope(envelope_rows: dict[str, dict[str, Any]], line: CsvCase) -> None:
    """Position and raw line kept; each field's text under its header name, or the line
    flagged malformed with every field null."""
    expected = {
        "source": "file",
        "source_name": FILES[line.header],
        "source_partition": None,
        "source_offset": line_of(line),
        "source_key": line.id,
        "raw_record": line.line,
        "malformed": line.fields is None,
        **{name: (line.fields or {}).get(name) for name in EVENT_FIELDS},
    }
    assert envelope_rows[line.id] == {name: expected[name] for name in ENVELOPE_COLUMNS}


def test_envelope_schema(envelopes: DataFrame) -> None:
    assert_schema_equality(envelopes.schema, ENVELOPE_SCHEMA, ignore_nullable=True)


@pytest.mark.parametrize("line", params(CASES))
def test_reject_reason(reasons: dict[str, str | None], line: CsvCase) -> None:
    assert reasons[line.id] == line.reason


def test_lines_that_were_read_validated(spark: SparkSession, validated: DataFrame) -> None:
    actual = validated.where(~F.col("reject_reason").eqNullSafe("malformed"))
    expected = spark.createDataFrame(
        [
            (c.id, c.reason, *[c.event[name] for name in EVENT_COLUMNS])
            for c in CASES
            if c.event is not None
        ],
        f"case string, reject_reason string, {EVENT_SCHEMA}",
    )
    assert_df_equality(
        actual.select(*expected.columns), expected, ignore_nullable=True, ignore_row_order=True
    )
