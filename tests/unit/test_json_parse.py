"""The JSON parser reads each record once (a VARIANT) and keeps every number exact.

Cases beyond tests/unit/test_rules.py: numbers the variant holds as doubles (exponent form,
more than 38 digits) are read again exactly; duplicate keys and text after the object are
malformed. Expected values are worked out by hand from the inline lines.
"""

from __future__ import annotations

import contextlib
import io
from decimal import Decimal

import pytest
from pyspark.sql import DataFrame, SparkSession

from sales_core.events import parse_json_records
from sales_core.rules import validate
from tests.unit.cases import INPUT_SCHEMA, NOW, record

pytestmark = pytest.mark.unit

CASES: list[tuple[str, str, str | None, Decimal | None, int | None]] = [
    # (case id, line, reject_reason, amount, quantity)
    ("amount_exponent_exact", record(amount="1.0049999999999999e0"), None, Decimal("1.00"), 2),
    ("amount_exponent_half_up", record(amount="1.0005E3"), None, Decimal("1000.50"), 2),
    ("amount_exponent_rounds", record(amount="1000005e-3"), None, Decimal("1000.01"), 2),
    (
        "amount_more_than_38_digits",
        record(amount="1.00499999999999999999999999999999999999999999"),
        None,
        Decimal("1.00"),
        2,
    ),
    ("amount_1000_005", record(amount="1000.005"), None, Decimal("1000.01"), 2),
    ("amount_trailing_zeros", record(amount="2.50"), None, Decimal("2.50"), 2),
    ("quantity_exponent_whole", record(quantity="3E0"), None, Decimal("10.50"), 3),
    ("quantity_exponent_fraction", record(quantity="25e-1"), "invalid_type:quantity", None, None),
    ("quantity_2_00", record(quantity="2.00"), None, Decimal("10.50"), 2),
    ("duplicate_key", record()[:-1] + ', "amount": 3}', "malformed", None, None),
    ("object_then_text", record() + " x", "malformed", None, None),
    ("object_then_array", record() + "[1]", "malformed", None, None),
    ("object_then_object_spaced", record() + " \t" + record(), "malformed", None, None),
    ("brace_in_string_then_text", record(note='"a} b"'), None, Decimal("10.50"), 2),
    ("nan_amount", record(amount="NaN"), "malformed", None, None),
    ("leading_zero_amount", record(amount="01"), "malformed", None, None),
    ("unescaped_tab_in_string", record(category='"a\tb"'), "malformed", None, None),
]


@pytest.fixture(scope="module")
def validated(spark: SparkSession) -> DataFrame:
    rows = [("kafka", "t", 0, i, None, line) for i, (_, line, *_x) in enumerate(CASES)]
    return (
        spark.createDataFrame(rows, INPUT_SCHEMA)
        .transform(parse_json_records("value"))
        .transform(validate(now=NOW))
        .cache()
    )


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_exact_numbers_and_strict_objects(validated: DataFrame, index: int) -> None:
    _, line, reason, amount, quantity = CASES[index]
    row = validated.where(validated.source_offset == index).first()
    assert row is not None
    assert row["reject_reason"] == reason, line
    if reason is None:
        assert (row["amount"], row["quantity"]) == (amount, quantity), line


def test_one_json_parse_per_record(spark: SparkSession) -> None:
    """The optimised plan parses the record text once: one parse_json, no from_json outside
    the branch taken only by numbers held as doubles."""
    frame = spark.createDataFrame([("kafka", "t", 0, 0, None, record())], INPUT_SCHEMA).transform(
        parse_json_records("value")
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        frame.explain(mode="extended")
    text = printed.getvalue()
    plan = text[text.index("== Optimized Logical Plan ==") : text.index("== Physical Plan ==")]
    parses = plan.count("parse_json(") + plan.count("parseJson(")
    assert parses == 1, plan
    assert plan.count("from_json(") == 2, (
        plan
    )  # amount and quantity, each under CASE WHEN ... DOUBLE
    assert plan.count("DOUBLE") >= 2, plan
