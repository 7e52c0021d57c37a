"""The synthetic sales generator: seeded, with the shares it is asked for."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from devtools.generator import GeneratorSpec, generate_records
from devtools.writers import to_db_row, write_landing_files

pytestmark = pytest.mark.unit
END = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_same_seed_same_records_other_seed_other_records() -> None:
    a = list(generate_records(GeneratorSpec(events=500, seed=7, end=END)))
    b = list(generate_records(GeneratorSpec(events=500, seed=7, end=END)))
    c = list(generate_records(GeneratorSpec(events=500, seed=8, end=END)))
    assert a == b and a != c and len(a) == 500


def test_shares_of_bad_duplicate_and_late_records() -> None:
    records = list(
        generate_records(
            GeneratorSpec(
                events=20_000,
                seed=1,
                end=END,
                bad_share=0.1,
                duplicate_share=0.05,
                late_share=0.2,
                days=7,
            )
        )
    )
    dicts = [r for r in records if isinstance(r, dict)]
    ids = [r.get("event_id") for r in dicts if r.get("event_id")]
    duplicates = len(ids) - len(set(ids))
    malformed = len(records) - len(dicts)
    late = [
        r for r in dicts if isinstance(r.get("event_time"), str) and r["event_time"] < "2025-12-25"
    ]
    assert 0.035 < duplicates / len(records) < 0.065
    assert 0.002 < malformed / len(records) < 0.02  # one bad kind in fifteen is malformed
    assert 0.15 < len(late) / len(records) < 0.25


def test_invalid_share_is_refused() -> None:
    with pytest.raises(ValueError, match="bad_share must be between 0 and 1"):
        GeneratorSpec(bad_share=1.5)


def test_landing_files_are_written_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    paths = write_landing_files(
        generate_records(GeneratorSpec(events=250, end=END)), tmp_path, fmt="csv", rows_per_file=100
    )
    assert [p.suffix for p in paths] == [".csv"] * 3
    assert not list(tmp_path.glob(".*.tmp"))
    assert sum(len(p.read_text().splitlines()) - 1 for p in paths) == 250


def test_db_rows_are_typed_or_skipped() -> None:
    row = to_db_row(
        {
            "event_id": "e",
            "order_id": "o",
            "product_id": "p",
            "quantity": 2,
            "amount": 12.345,
            "event_time": "2024-05-01T10:00:00Z",
        }
    )
    assert row is not None and str(row[8]) == "12.3450" and row[9].tzinfo is not None
    assert to_db_row("not json") is None
    assert to_db_row({"quantity": "two"}) is None
