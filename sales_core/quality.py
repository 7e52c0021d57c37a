"""The data-quality score of a run: the seed's completeness, validity and consistency checks.

- completeness: records missing a required field (rejected ``missing_required:*``) plus valid
  records that had an optional field defaulted (``anonymous``/``unknown``);
- validity: records rejected for any other reason (malformed, wrong type, out of range);
- consistency: duplicate records.

``score = max(0, 100 - 100 * issues / records)``; a run that read nothing scores 100.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class QualityReport:
    records: int
    completeness_issues: int
    validity_issues: int
    consistency_issues: int

    @property
    def issues(self) -> int:
        return self.completeness_issues + self.validity_issues + self.consistency_issues

    @property
    def score(self) -> float:
        if self.records == 0:
            return 100.0
        return round(max(0.0, 100.0 - 100.0 * self.issues / self.records), 4)

    def __add__(self, other: QualityReport) -> QualityReport:
        return QualityReport(
            self.records + other.records,
            self.completeness_issues + other.completeness_issues,
            self.validity_issues + other.validity_issues,
            self.consistency_issues + other.consistency_issues,
        )

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "score": self.score}


def quality_report(
    *, records: int, rejected_by_reason: Mapping[str, int], defaulted: int, duplicates: int
) -> QualityReport:
    """Score a run from its counts (see the module docstring for the checks)."""
    completeness = sum(
        n for reason, n in rejected_by_reason.items() if reason.startswith("missing_required:")
    )
    validity = sum(
        n for reason, n in rejected_by_reason.items() if not reason.startswith("missing_required:")
    )
    return QualityReport(
        records=records,
        completeness_issues=completeness + defaulted,
        validity_issues=validity,
        consistency_issues=duplicates,
    )


EMPTY = QualityReport(0, 0, 0, 0)
