"""The speed job's compaction of the increments: fewer files, the same merged views, and a
reader that lives through it (the HTTP server's) answers as a new one does."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from sales_core.lakehouse import Lakehouse
from sales_core.views import VIEWS
from serving_layer.duckdb_engine import FastServing
from speed_layer.compaction import IncrementsCompactor
from tests.oracle import compute_views, event, rows_to_view
from tests.serving_helpers import raw, speed_micro_batch

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MICRO_BATCHES = [
    [
        event(
            f"e{n}-{i}",
            amount=f"{n}.{i}5",
            event_time=f"2024-05-0{1 + n % 3}T1{i}:00:00Z",
            customer_id=f"c{(n + i) % 4}",
        )
        for i in range(3)
    ]
    for n in range(3)
]


def test_compaction_keeps_every_merged_view(spark, make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    lakehouse = Lakehouse(config.lakehouse.root)
    reader = FastServing(lakehouse.root)
    sent: list[dict[str, object]] = []
    for batch_id, events in enumerate(MICRO_BATCHES):
        speed_micro_batch(spark, config, batch_id, raw(events), first_offset=10 * batch_id)
        sent += events
        assert (
            rows_to_view(reader.rows("sales_daily"), "sales_daily")
            == (compute_views(sent)["sales_daily"])
        )
    files_before = len(DeltaTable(lakehouse.speed_increments).file_uris())
    assert files_before == len(MICRO_BATCHES)  # a small file per micro-batch

    compactor = IncrementsCompactor(spark, lakehouse.speed_increments, 1.0, min_files=100)
    assert not compactor.compact_once()  # too few files to bother
    compactor = IncrementsCompactor(spark, lakehouse.speed_increments, 1.0, min_files=2)
    assert compactor.compact_once()

    assert len(DeltaTable(lakehouse.speed_increments).file_uris()) < files_before
    expected = compute_views(sent)
    for name in VIEWS:
        assert rows_to_view(reader.rows(name), name) == expected[name], name
        assert reader.rows(name) == FastServing(lakehouse.root).rows(name), name
    assert reader.health()["speed"]["last_micro_batch"] == len(MICRO_BATCHES) - 1
