"""The speed job's compaction of the increments: fewer files, the same merged views, and a
reader that lives through it (the HTTP server's) answers as a new one does."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from sales_core.lakehouse import Lakehouse
from sales_core.views import VIEWS
from serving_layer.duckdb_engine import FastServing
from speed_layer.compaction import StreamCompactor
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
    master_before = DeltaTable(lakehouse.master_dataset)
    master_files = master_before.file_uris()
    assert len(master_files) >= len(MICRO_BATCHES)  # at least a file per micro-batch
    # A batch's large file is left as it is: only files below minFileSize are rewritten.
    large = max(master_before.get_add_actions(flatten=True).column("size_bytes").to_pylist())
    copies = spark.range(150).withColumnRenamed("id", "copy")
    (  # a batch epoch's file: the stream's rows under new ids, 150 times over
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .crossJoin(copies)
        .withColumn("event_id", F.concat_ws("-", "event_id", F.col("copy").cast("string")))
        .drop("copy")
        .coalesce(1)
        .write.format("delta")
        .mode("append")
        .save(lakehouse.master_dataset)
    )
    batch_file = set(DeltaTable(lakehouse.master_dataset).file_uris()) - set(master_files)
    tables = (lakehouse.speed_increments, lakehouse.master_dataset)

    compactor = StreamCompactor(spark, tables, 1.0, min_files=100)
    assert not compactor.compact_once()  # too few files to bother
    min_file_size = "spark.databricks.delta.optimize.minFileSize"
    session_value = spark.conf.get(min_file_size)
    spark.conf.set(min_file_size, str(large + 1))
    try:
        assert StreamCompactor(spark, tables, 1.0, min_files=2).compact_once()
    finally:
        spark.conf.set(min_file_size, session_value)

    assert len(DeltaTable(lakehouse.speed_increments).file_uris()) < files_before
    master_after = set(DeltaTable(lakehouse.master_dataset).file_uris())
    assert batch_file <= master_after  # not rewritten
    assert len(master_after) == 2 and not master_after & set(master_files)
    master = spark.read.format("delta").load(lakehouse.master_dataset)
    ids = [r.event_id for r in master.select("event_id").collect()]
    assert len(ids) == len(set(ids)) == len(sent) * 151
    assert {str(e["event_id"]) for e in sent} <= set(ids)
    expected = compute_views(sent)
    for name in VIEWS:
        assert rows_to_view(reader.rows(name), name) == expected[name], name
        assert reader.rows(name) == FastServing(lakehouse.root).rows(name), name
    assert reader.health()["speed"]["last_micro_batch"] == len(MICRO_BATCHES) - 1
