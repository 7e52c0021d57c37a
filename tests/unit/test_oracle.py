"""The test oracle's own reading of CONTRACT §1 (``tests.oracle.judge``, pure Python) agrees
with every hand-worked rule case of ``test_rules``: the crash tests compute what must come out
of generated input with it, so it must not share a mistake with the pipeline by accident."""

from __future__ import annotations

import pytest

from tests.oracle import judge, parse_json_text, read_landing_file
from tests.unit.cases import NOW, Case, params
from tests.unit.test_rules import FIELD_CASES, FIRST_REASON_WINS

pytestmark = pytest.mark.unit

JSON_CASES = [
    c for c in [*FIELD_CASES, *FIRST_REASON_WINS] if all(isinstance(r, str) for r in c.rows)
]


@pytest.mark.parametrize("rule", params(JSON_CASES))
def test_oracle_judges_each_rule_case_as_the_contract(rule: Case) -> None:
    got = []
    for row in rule.rows:
        judged = judge(parse_json_text(row), NOW)  # type: ignore[arg-type]
        got.append(judged if isinstance(judged, str) else None)
    assert tuple(got) == rule.expected


def test_oracle_normalises_a_valid_record() -> None:
    judged = judge(
        {
            "event_id": " e-1 ",
            "order_id": "o-1",
            "product_id": "p-1",
            "customer_id": None,
            "category": "  Books ",
            "region": "NORTH",
            "quantity": "2",
            "amount": 1000.005,
            "event_time": "2024-05-01T12:30:00+02:00",
        },
        NOW,
    )
    assert isinstance(judged, dict)
    assert (judged["event_id"], judged["customer_id"], judged["category"]) == (
        "e-1",
        "anonymous",
        "books",
    )
    assert (judged["region"], judged["channel"], judged["quantity"]) == ("north", "unknown", 2)
    assert str(judged["amount"]) == "1000.01" and judged["revenue_category"] == "high"
    assert judged["event_hour"].isoformat() == "2024-05-01T10:00:00+00:00"


def test_a_csv_line_of_another_field_count_than_the_header_is_malformed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """As the batch's CSV reader flags it (sales_core.events.parse_csv_records)."""
    path = tmp_path / "sales.csv"
    path.write_text("event_id,order_id,amount\ne1,,3\nnot json at all\n1,2,3,4\n")
    records = read_landing_file(path)
    assert records[0] == {"event_id": "e1", "order_id": None, "amount": "3"}
    assert [judge(r, NOW) for r in records[1:]] == ["malformed", "malformed"]
