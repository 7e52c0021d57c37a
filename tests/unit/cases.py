"""Rule cases for the unit tests of CONTRACT §1: small inline inputs named by the rule they test.

A :class:`Case` is one to three input rows (JSON lines, as a Kafka value or a JSONL line, or
envelopes, as any parser emits them) and, for each row, what the contract makes of it. All the
cases of a test module go through ``validate`` in one DataFrame, because planning ``validate``
costs far more than its rows do: every row carries its case's id in ``source_key``, which the
parsers and ``validate`` pass through untouched, and the results are grouped back by that id,
so a broken rule fails the test of its own case, under the case's id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from sales_core.events import ENVELOPE_COLUMNS, ENVELOPE_SCHEMA, EVENT_FIELDS, parse_json_records
from sales_core.rules import validate

UTC = timezone.utc
# The processing time every case is judged against (`future_event_time`).
NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)

# A Kafka record as the speed layer reads it: its position and its value.
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


def ts(*parts: int) -> datetime:
    """A UTC timestamp."""
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


def record(**fields: str | None) -> str:
    """The base event as one JSON line, fields replaced by raw JSON text (None drops the key)."""
    merged = {**BASE_FIELDS, **fields}
    return "{" + ", ".join(f'"{k}": {v}' for k, v in merged.items() if v is not None) + "}"


@dataclass(frozen=True)
class Envelope:
    """An envelope row as a parser emits it: each field as its raw text (None when absent)."""

    fields: Mapping[str, str | None]
    malformed: bool = False
    raw_record: str | None = None


def envelope(
    *, malformed: bool = False, raw_record: str | None = None, **fields: str | None
) -> Envelope:
    """The base event as an envelope, fields replaced by the given texts (None: absent)."""
    base = {name: text.strip('"') for name, text in BASE_FIELDS.items()}
    return Envelope({**base, **fields}, malformed, raw_record)


Row = str | None | Envelope


@dataclass(frozen=True)
class Case:
    """One to three input rows and, for each, what the contract says becomes of it."""

    id: str
    rows: tuple[Row, ...]
    expected: tuple[Any, ...]

    def __post_init__(self) -> None:
        assert 1 <= len(self.rows) <= 3, f"{self.id}: a case has one to three rows"
        assert len(self.expected) == len(self.rows), f"{self.id}: one expectation per row"


def case(case_id: str, row: Row, expected: Any) -> Case:
    """A case of one row."""
    return Case(case_id, (row,), (expected,))


def params(cases: Iterable[Any]) -> list[Any]:
    """``pytest.param`` per case (anything with an ``id``), the case's id as the test id."""
    cases = list(cases)
    ids = [c.id for c in cases]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicated, f"case ids must be unique: {duplicated}"
    return [pytest.param(c, id=c.id) for c in cases]


def validated_cases(spark: SparkSession, cases: Sequence[Case]) -> DataFrame:
    """Every row of every case, validated in one DataFrame judged at :data:`NOW`.

    JSON rows are Kafka records (topic ``sales-events``, partition 0, the row's index within
    its case as the offset); envelope rows are ``source = "envelope"``. ``source_key`` is the
    case's id.
    """
    json_rows = []
    envelope_rows = []
    for c in cases:
        for index, row in enumerate(c.rows):
            if isinstance(row, Envelope):
                values = {
                    "source": "envelope",
                    "source_offset": index,
                    "source_key": c.id,
                    "raw_record": row.raw_record,
                    "malformed": row.malformed,
                    **{name: row.fields.get(name) for name in EVENT_FIELDS},
                }
                envelope_rows.append(tuple(values.get(name) for name in ENVELOPE_COLUMNS))
            else:
                json_rows.append(("kafka", "sales-events", 0, index, c.id, row))
    envelopes = spark.createDataFrame(json_rows, INPUT_SCHEMA).transform(
        parse_json_records("value")
    )
    if envelope_rows:
        envelopes = envelopes.unionByName(spark.createDataFrame(envelope_rows, ENVELOPE_SCHEMA))
    return envelopes.transform(validate(now=NOW))


def rows_by_case(frame: DataFrame, *columns: str) -> dict[str, list[dict[str, Any]]]:
    """``columns`` of a :func:`validated_cases` frame, per case id, its rows in input order.

    The whole frame is collected (every column is computed, as the layers materialise it);
    only ``columns`` are returned.
    """
    grouped: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for row in frame.collect():
        values = row.asDict()
        grouped.setdefault(values["source_key"], []).append(
            (values["source_offset"], {c: values[c] for c in columns})
        )
    return {
        key: [values for _, values in sorted(rows, key=lambda r: r[0])]
        for key, rows in grouped.items()
    }
