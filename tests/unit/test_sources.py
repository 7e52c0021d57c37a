"""The pure parts of the batch sources: ledger entries (old rows too). Expected values are
written by hand."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from batch_layer.ledger import entry_of
from batch_layer.sources.base import Entry
from batch_layer.sources.files import LandingFile
from batch_layer.sources.files import _entry as file_entry

pytestmark = pytest.mark.unit


def test_new_ledger_rows_hold_the_entry_as_written() -> None:
    entry = Entry.of("jdbc", "sales_data", {"watermark_low": None, "watermark_high": "7"})
    row = {"source": "jdbc", "name": "sales_data", "position": entry.position, "size": None}
    assert entry_of(row) == entry
    assert entry.fields == {"watermark_low": None, "watermark_high": "7"}


def test_old_ledger_rows_read_as_the_positions_the_sources_write_now() -> None:
    """Rows of the ledger schema before sources kept their own positions (typed columns)."""
    modified = datetime(2026, 1, 15, 12, 30, 5, 250000, tzinfo=timezone.utc)
    old_file = {
        "source": "file",
        "name": "file:/landing/a.jsonl",
        "size": 1234,
        "modified_at": modified,
        "watermark_low": None,
        "watermark_high": None,
    }
    assert entry_of(old_file) == file_entry(LandingFile("file:/landing/a.jsonl", 1234, modified))
    assert entry_of(old_file).fields == {
        "size": 1234,
        "modified_at": "2026-01-15T12:30:05.250000+00:00",
    }
    old_jdbc = {
        "source": "jdbc",
        "name": "sales_data",
        "size": None,
        "modified_at": None,
        "watermark_low": None,
        "watermark_high": "2026-01-15 12:00:00.123",
    }
    assert entry_of(old_jdbc) == Entry(
        "jdbc", "sales_data", '{"watermark_high":"2026-01-15 12:00:00.123"}'
    )
    assert entry_of({**old_jdbc, "watermark_low": "2026-01-14 00:00:00"}).fields == {
        "watermark_low": "2026-01-14 00:00:00",
        "watermark_high": "2026-01-15 12:00:00.123",
    }
