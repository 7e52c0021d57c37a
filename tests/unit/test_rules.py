"""CONTRACT §1, the reject reasons: each field's rules, malformed records, and the rule order.

A case is one input (a JSON line, or an envelope as any parser emits it) and the reason the
contract gives it, worked out by hand from the contract's table; ``valid`` means no reason.
Every case is validated in one DataFrame (see ``tests/unit/cases.py``) and asserted on its own.
"""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from sales_core.rules import REASON_CODES
from tests.unit.cases import (
    Case,
    Row,
    case,
    envelope,
    params,
    record,
    rows_by_case,
    validated_cases,
)

pytestmark = pytest.mark.unit

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


def rejects(name: str, row: Row, reason: str | None) -> Case:
    """A case ``name->reason`` (``name->valid`` when no reason applies)."""
    return case(f"{name}->{reason or 'valid'}", row, reason)


# A record that is not one JSON object is malformed; one that is (padded with whitespace,
# with unknown fields) is read.
MALFORMED = [
    rejects("base_event", record(), None),
    rejects("not_json", "this is not json", "malformed"),
    rejects("truncated_object", '{"event_id": "e-1", "order_id": ', "malformed"),
    rejects("json_array", "[" + record() + "]", "malformed"),
    rejects("json_number", "42", "malformed"),
    rejects("json_string", '"e-1"', "malformed"),
    rejects("json_true", "true", "malformed"),
    rejects("json_null_literal", "null", "malformed"),
    rejects("empty_string", "", "malformed"),
    rejects("whitespace_only", "   ", "malformed"),
    rejects("null_value", None, "malformed"),
    rejects("two_objects_on_one_line", record() + record(event_id='"e-2"'), "malformed"),
    rejects(
        "single_quoted_pseudo_json",
        "{'event_id': 'e-1', 'order_id': 'o-1', 'product_id': 'p-1', 'quantity': 2, "
        "'amount': 10.5, 'event_time': '2024-05-01T10:00:00Z'}",
        "malformed",
    ),
    rejects("object_padded_with_whitespace", "  " + record() + "\t ", None),
    rejects(
        "unknown_fields_ignored",
        record(coupon='{"code": "X", "tiers": [1, {"a": null}]}', schema_version="2", note='"hi"'),
        None,
    ),
]

# The required text fields: missing, null or blank is `missing_required:<field>`.
REQUIRED_IDS = [
    rejects("event_id_absent", record(event_id=None), "missing_required:event_id"),
    rejects("event_id_null", record(event_id="null"), "missing_required:event_id"),
    rejects("event_id_empty", record(event_id='""'), "missing_required:event_id"),
    rejects("event_id_blank", record(event_id='"   "'), "missing_required:event_id"),
    # a tab and a newline (JSON escapes): blank as well
    rejects("event_id_blank_tab_newline", record(event_id='"\\t\\n"'), "missing_required:event_id"),
    rejects("empty_object", "{}", "missing_required:event_id"),
    rejects("order_id_absent", record(order_id=None), "missing_required:order_id"),
    rejects("order_id_null", record(order_id="null"), "missing_required:order_id"),
    rejects("order_id_empty", record(order_id='""'), "missing_required:order_id"),
    rejects("order_id_blank", record(order_id='" "'), "missing_required:order_id"),
    rejects("product_id_absent", record(product_id=None), "missing_required:product_id"),
    rejects("product_id_null", record(product_id="null"), "missing_required:product_id"),
    rejects("product_id_empty", record(product_id='""'), "missing_required:product_id"),
    rejects("product_id_blank", record(product_id='"  "'), "missing_required:product_id"),
    # the optional fields never reject: they take a default (see test_normalise.py)
    rejects(
        "optional_fields_missing",
        record(customer_id=None, category="null", region='""', channel='"  "'),
        None,
    ),
]

QUANTITY = [
    rejects("quantity_absent", record(quantity=None), "missing_required:quantity"),
    rejects("quantity_null", record(quantity="null"), "missing_required:quantity"),
    rejects("quantity_empty_string", record(quantity='""'), "missing_required:quantity"),
    rejects("quantity_blank_string", record(quantity='"  "'), "missing_required:quantity"),
    rejects("quantity_json_2_5", record(quantity="2.5"), "invalid_type:quantity"),
    rejects("quantity_string_2_5", record(quantity='"2.5"'), "invalid_type:quantity"),
    rejects("quantity_string_abc", record(quantity='"abc"'), "invalid_type:quantity"),
    rejects("quantity_json_true", record(quantity="true"), "invalid_type:quantity"),
    rejects("quantity_json_array", record(quantity="[2]"), "invalid_type:quantity"),
    rejects(
        "quantity_string_barely_fractional",
        record(quantity='"2.0000000000000001"'),
        "invalid_type:quantity",
    ),
    # an integer too large for the INT quantity column is not an integer quantity
    rejects("quantity_beyond_int", record(quantity="3000000000"), "invalid_type:quantity"),
    rejects("quantity_zero", record(quantity="0"), "invalid_quantity"),
    rejects("quantity_minus_one", record(quantity="-1"), "invalid_quantity"),
    rejects("quantity_string_zero", record(quantity='"0"'), "invalid_quantity"),
    rejects("quantity_one", record(quantity="1"), None),
    rejects("quantity_2_0", record(quantity="2.0"), None),
    rejects("quantity_numeric_string", record(quantity='"3"'), None),
]

AMOUNT = [
    rejects("amount_absent", record(amount=None), "missing_required:amount"),
    rejects("amount_null", record(amount="null"), "missing_required:amount"),
    rejects("amount_empty_string", record(amount='""'), "missing_required:amount"),
    rejects("amount_blank_string", record(amount='"  "'), "missing_required:amount"),
    rejects("amount_decimal_comma", record(amount='"12,5"'), "invalid_type:amount"),
    rejects("amount_string_abc", record(amount='"abc"'), "invalid_type:amount"),
    rejects("amount_with_currency", record(amount='"12.50 EUR"'), "invalid_type:amount"),
    rejects("amount_json_true", record(amount="true"), "invalid_type:amount"),
    rejects("amount_minus_0_01", record(amount="-0.01"), "negative_amount"),
    rejects("amount_string_minus_5", record(amount='"-5"'), "negative_amount"),
    # half-up rounds away from zero: -0.005 is -0.01, negative; -0.004 is 0.00, valid
    rejects("amount_minus_0_005_rounds_to_minus_0_01", record(amount="-0.005"), "negative_amount"),
    rejects("amount_minus_0_004_rounds_to_zero", record(amount="-0.004"), None),
    rejects("amount_zero", record(amount="0"), None),
    rejects("amount_1000000_004_rounds_to_max", record(amount="1000000.004"), None),
    rejects(
        "amount_1000000_005_rounds_above_max", record(amount="1000000.005"), "amount_out_of_range"
    ),
    rejects("amount_string_1000000_01", record(amount='"1000000.01"'), "amount_out_of_range"),
    rejects("amount_json_1e400", record(amount="1e400"), "amount_out_of_range"),
    rejects("amount_string_1e400", record(amount='"1e400"'), "amount_out_of_range"),
    rejects("amount_json_minus_1e400", record(amount="-1e400"), "negative_amount"),
    rejects("amount_string_minus_1e400", record(amount='"-1e400"'), "negative_amount"),
    # 1e16 fits DECIMAL(38,2) but not the DECIMAL(18,2) money type: out of range, not an error
    # (the fixture collects every column, as the batch layer materialises the validated frame)
    rejects(
        "amount_string_1e16_beyond_money",
        record(amount='"10000000000000000"'),
        "amount_out_of_range",
    ),
    rejects("amount_json_1e20_beyond_money", record(amount="1e20"), "amount_out_of_range"),
    # where the text reaches validate as it is (CSV, typed rows), validate rounds it half-up
    rejects("amount_text_minus_0_005", envelope(amount="-0.005"), "negative_amount"),
    rejects("amount_text_1000000_005", envelope(amount="1000000.005"), "amount_out_of_range"),
    rejects("amount_text_1000000_004", envelope(amount="1000000.004"), None),
]

# NOW is 2024-06-01T12:00:00Z: the bound for `future_event_time` is 12:05:00Z.
EVENT_TIME = [
    rejects("event_time_absent", record(event_time=None), "missing_required:event_time"),
    rejects("event_time_null", record(event_time="null"), "missing_required:event_time"),
    rejects("event_time_empty", record(event_time='""'), "missing_required:event_time"),
    rejects("event_time_blank", record(event_time='"  "'), "missing_required:event_time"),
    rejects("event_time_not_a_date", record(event_time='"not a date"'), "invalid_type:event_time"),
    rejects("event_time_epoch_seconds", record(event_time="1714557600"), "invalid_type:event_time"),
    rejects(
        "event_time_february_30",
        record(event_time='"2024-02-30T10:00:00Z"'),
        "invalid_type:event_time",
    ),
    rejects(
        "event_time_1999_12_31",
        record(event_time='"1999-12-31T23:59:59Z"'),
        "event_time_out_of_range",
    ),
    # without a zone the time is UTC: one second before 2000-01-01T00:00:00Z
    rejects(
        "event_time_1999_12_31_no_zone",
        record(event_time='"1999-12-31T23:59:59"'),
        "event_time_out_of_range",
    ),
    # 01:00 at +02:00 on 2000-01-01 is 1999-12-31T23:00Z
    rejects(
        "event_time_before_2000_in_utc",
        record(event_time='"2000-01-01T01:00:00+02:00"'),
        "event_time_out_of_range",
    ),
    rejects("event_time_2000_01_01", record(event_time='"2000-01-01T00:00:00Z"'), None),
    rejects("event_time_now_plus_4min", record(event_time='"2024-06-01T12:04:00Z"'), None),
    rejects("event_time_now_plus_exactly_5min", record(event_time='"2024-06-01T12:05:00Z"'), None),
    rejects(
        "event_time_now_plus_exactly_5min_no_zone", record(event_time='"2024-06-01T12:05:00"'), None
    ),
    rejects(
        "event_time_now_plus_6min", record(event_time='"2024-06-01T12:06:00Z"'), "future_event_time"
    ),
    rejects(
        "event_time_now_plus_5min_1s",
        record(event_time='"2024-06-01T12:05:01Z"'),
        "future_event_time",
    ),
    # without a zone the time is UTC: 12:05:01Z, a second past the bound
    rejects(
        "event_time_now_plus_5min_1s_no_zone",
        record(event_time='"2024-06-01T12:05:01"'),
        "future_event_time",
    ),
    # 13:06 at +01:00 is 12:06Z: six minutes after NOW
    rejects(
        "event_time_future_via_offset",
        record(event_time='"2024-06-01T13:06:00+01:00"'),
        "future_event_time",
    ),
]

FIELD_CASES = [*MALFORMED, *REQUIRED_IDS, *QUANTITY, *AMOUNT, *EVENT_TIME]

# Several problems: the first reason in the table's order wins. The chain gives each reason
# (up to the last field's) a row that also has a problem in every later field; envelopes, so
# that a parser's `malformed` flag can meet fields that have problems of their own.
FIRST_REASON_WINS = [
    rejects("malformed_flag_on_valid_fields", envelope(malformed=True), "malformed"),
    case(
        "malformed_flag_and_every_later_problem->malformed",
        envelope(
            malformed=True,
            event_id=None,
            order_id=None,
            product_id=None,
            quantity="0",
            amount="-1",
            event_time="x",
        ),
        "malformed",
    ),
    case(
        "no_event_id_and_every_later_problem->missing_required:event_id",
        envelope(
            event_id=None,
            order_id=None,
            product_id="",
            quantity=None,
            amount="abc",
            event_time=None,
        ),
        "missing_required:event_id",
    ),
    case(
        "no_order_id_and_every_later_problem->missing_required:order_id",
        envelope(
            order_id=" ",
            product_id=None,
            quantity="2.5",
            amount=None,
            event_time="2030-01-01T00:00:00Z",
        ),
        "missing_required:order_id",
    ),
    case(
        "no_product_id_and_every_later_problem->missing_required:product_id",
        envelope(product_id="", quantity="0", amount="2000000", event_time="not a time"),
        "missing_required:product_id",
    ),
    case(
        "no_quantity_and_every_later_problem->missing_required:quantity",
        envelope(quantity="", amount="-1", event_time="1999-12-31T23:59:59Z"),
        "missing_required:quantity",
    ),
    case(
        "text_quantity_and_every_later_problem->invalid_type:quantity",
        envelope(quantity="abc", amount="", event_time="2030-01-01T00:00:00Z"),
        "invalid_type:quantity",
    ),
    case(
        "negative_quantity_and_every_later_problem->invalid_quantity",
        envelope(quantity="-3", amount="abc", event_time=None),
        "invalid_quantity",
    ),
    case(
        "no_amount_and_a_bad_time->missing_required:amount",
        envelope(amount=None, event_time="x"),
        "missing_required:amount",
    ),
    case(
        "text_amount_and_no_time->invalid_type:amount",
        envelope(amount="1,5", event_time=""),
        "invalid_type:amount",
    ),
    case(
        "negative_amount_and_an_old_time->negative_amount",
        envelope(amount="-0.50", event_time="1999-01-01T00:00:00Z"),
        "negative_amount",
    ),
    case(
        "huge_amount_and_a_future_time->amount_out_of_range",
        envelope(amount="1000000.01", event_time="2030-01-01T00:00:00Z"),
        "amount_out_of_range",
    ),
    # the same, from JSON lines
    rejects(
        "no_order_id_and_negative_amount",
        record(order_id=None, amount="-5"),
        "missing_required:order_id",
    ),
    rejects(
        "no_event_id_and_no_order_id",
        record(event_id=None, order_id=None),
        "missing_required:event_id",
    ),
    rejects(
        "no_product_id_and_zero_quantity",
        record(product_id='""', quantity="0"),
        "missing_required:product_id",
    ),
    rejects(
        "no_quantity_and_negative_amount",
        record(quantity=None, amount="-1"),
        "missing_required:quantity",
    ),
    rejects(
        "fractional_quantity_and_no_amount",
        record(quantity="2.5", amount=None),
        "invalid_type:quantity",
    ),
    rejects(
        "zero_quantity_and_bad_amount",
        record(quantity="0", amount='"abc"'),
        "invalid_quantity",
    ),
    rejects(
        "bad_amount_and_bad_time", record(amount='"x"', event_time='"x"'), "invalid_type:amount"
    ),
    rejects(
        "negative_amount_and_future_time",
        record(amount="-1", event_time='"2030-01-01T00:00:00Z"'),
        "negative_amount",
    ),
    rejects(
        "huge_amount_and_no_time",
        record(amount="2000000", event_time=None),
        "amount_out_of_range",
    ),
    rejects(
        "no_time_and_no_optional_fields",
        record(event_time=None, customer_id=None, region=None),
        "missing_required:event_time",
    ),
]


@pytest.fixture(scope="module")
def reasons(spark: SparkSession) -> dict[str, list[str | None]]:
    """``reject_reason`` of every row, per case id."""
    frame = validated_cases(spark, [*FIELD_CASES, *FIRST_REASON_WINS])
    return {
        case_id: [row["reject_reason"] for row in rows]
        for case_id, rows in rows_by_case(frame, "reject_reason").items()
    }


@pytest.mark.parametrize("rule", params(FIELD_CASES))
def test_field_rule(reasons: dict[str, list[str | None]], rule: Case) -> None:
    assert reasons[rule.id] == list(rule.expected), rule.rows


@pytest.mark.parametrize("rule", params(FIRST_REASON_WINS))
def test_first_reason_wins(reasons: dict[str, list[str | None]], rule: Case) -> None:
    assert reasons[rule.id] == list(rule.expected), rule.rows


def test_reason_codes_are_the_contracts_in_table_order() -> None:
    assert REASON_CODES == CONTRACT_REASONS


def test_every_reason_code_has_a_case_of_its_own_and_a_case_where_it_wins() -> None:
    assert {r for c in FIELD_CASES for r in c.expected} == {*CONTRACT_REASONS, None}
    # every reason up to the last field's, which has no later field to compete with
    assert set(CONTRACT_REASONS[:11]) <= {r for c in FIRST_REASON_WINS for r in c.expected}
