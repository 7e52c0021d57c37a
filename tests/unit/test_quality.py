"""The data-quality score of a run (completeness, validity, consistency). No Spark needed."""

from __future__ import annotations

import pytest

from sales_core.quality import EMPTY, QualityReport, quality_report
from sales_core.rules import REASON_CODES

pytestmark = pytest.mark.unit


def test_issues_are_classified_and_scored() -> None:
    report = quality_report(
        records=20,
        rejected_by_reason={
            "missing_required:event_id": 2,
            "missing_required:amount": 1,
            "malformed": 3,
            "invalid_type:amount": 1,
        },
        defaulted=2,
        duplicates=1,
    )
    # completeness 2 + 1 + 2 defaulted = 5; validity 3 + 1 = 4; consistency 1; 10 of 20 -> 50
    assert report == QualityReport(
        records=20, completeness_issues=5, validity_issues=4, consistency_issues=1
    )
    assert report.issues == 10
    assert report.score == 50.0


def test_clean_run_scores_100() -> None:
    report = quality_report(records=7, rejected_by_reason={}, defaulted=0, duplicates=0)
    assert report.score == 100.0


def test_empty_run_scores_100() -> None:
    assert (
        quality_report(records=0, rejected_by_reason={}, defaulted=0, duplicates=0).score == 100.0
    )
    assert EMPTY.score == 100.0


def test_score_never_goes_below_zero() -> None:
    report = quality_report(
        records=2, rejected_by_reason={"malformed": 1}, defaulted=0, duplicates=5
    )
    assert report.issues == 6
    assert report.score == 0.0


def test_score_is_rounded_to_four_places() -> None:
    # 1 issue in 3 records: 100 - 33.333... = 66.666... -> 66.6667
    report = quality_report(
        records=3, rejected_by_reason={"future_event_time": 1}, defaulted=0, duplicates=0
    )
    assert report.validity_issues == 1
    assert report.score == 66.6667


# Each reason code of CONTRACT §1 and the check it fails: a missing required field is a
# completeness issue, any other reason a validity issue.
REASON_CHECKS = [
    ("malformed", "validity"),
    ("missing_required:event_id", "completeness"),
    ("missing_required:order_id", "completeness"),
    ("missing_required:product_id", "completeness"),
    ("missing_required:quantity", "completeness"),
    ("invalid_type:quantity", "validity"),
    ("invalid_quantity", "validity"),
    ("missing_required:amount", "completeness"),
    ("invalid_type:amount", "validity"),
    ("negative_amount", "validity"),
    ("amount_out_of_range", "validity"),
    ("missing_required:event_time", "completeness"),
    ("invalid_type:event_time", "validity"),
    ("event_time_out_of_range", "validity"),
    ("future_event_time", "validity"),
]


@pytest.mark.parametrize(
    ("reason", "check"),
    [pytest.param(reason, check, id=f"{reason}->{check}") for reason, check in REASON_CHECKS],
)
def test_each_reason_counts_against_its_check(reason: str, check: str) -> None:
    # 3 records rejected for this reason out of 4: 75 issues in 100 -> 25
    report = quality_report(records=4, rejected_by_reason={reason: 3}, defaulted=0, duplicates=0)
    issues = {
        "completeness": report.completeness_issues,
        "validity": report.validity_issues,
        "consistency": report.consistency_issues,
    }
    assert issues == {name: 3 if name == check else 0 for name in issues}
    assert report.score == 25.0


def test_reason_checks_cover_every_reason_code() -> None:
    assert tuple(reason for reason, _ in REASON_CHECKS) == REASON_CODES


def test_defaulted_fields_are_completeness_and_duplicates_consistency_issues() -> None:
    report = quality_report(records=10, rejected_by_reason={}, defaulted=2, duplicates=3)
    assert (report.completeness_issues, report.validity_issues, report.consistency_issues) == (
        2,
        0,
        3,
    )
    assert report.score == 50.0


def test_every_non_missing_reason_is_a_validity_issue() -> None:
    reasons = {
        "malformed": 1,
        "invalid_type:quantity": 1,
        "invalid_quantity": 1,
        "invalid_type:amount": 1,
        "negative_amount": 1,
        "amount_out_of_range": 1,
        "invalid_type:event_time": 1,
        "event_time_out_of_range": 1,
        "future_event_time": 1,
    }
    report = quality_report(records=100, rejected_by_reason=reasons, defaulted=0, duplicates=0)
    assert (report.completeness_issues, report.validity_issues, report.consistency_issues) == (
        0,
        9,
        0,
    )
    assert report.score == 91.0


def test_reports_add_up_and_score_from_totals() -> None:
    first = QualityReport(
        records=10, completeness_issues=1, validity_issues=0, consistency_issues=0
    )
    second = QualityReport(
        records=10, completeness_issues=0, validity_issues=2, consistency_issues=7
    )
    total = first + second
    assert total == QualityReport(
        records=20, completeness_issues=1, validity_issues=2, consistency_issues=7
    )
    assert total.score == 50.0
    assert first + EMPTY == first


def test_as_dict_includes_score() -> None:
    report = QualityReport(
        records=4, completeness_issues=1, validity_issues=0, consistency_issues=0
    )
    assert report.as_dict() == {
        "records": 4,
        "completeness_issues": 1,
        "validity_issues": 0,
        "consistency_issues": 0,
        "score": 75.0,
    }
