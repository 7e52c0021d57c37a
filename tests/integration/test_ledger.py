"""An ingest ledger written before sources kept their own positions (the typed ``size``,
``modified_at``, ``watermark_*`` columns) is still read: what its epochs took is not taken
again, and its interrupted epoch is finished as it was planned."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch_layer.job import run_batch
from batch_layer.ledger import (
    LEDGER_APP_ID,
    IngestPlan,
    read_ledger,
    record_ingested,
    record_plan,
)
from batch_layer.sources.base import Entry
from batch_layer.sources.files import FilesSource, file_entry, list_landing_files
from sales_core.lakehouse import LEDGER_SCHEMA, Lakehouse
from tests.conftest import write_jsonl
from tests.oracle import compute_views, event, raw_json
from tests.serving_helpers import published_views

pytestmark = pytest.mark.integration

# The ledger's schema before this change, as its tables on disk still have it.
OLD_LEDGER_SCHEMA = T.StructType(
    [
        T.StructField("epoch", T.LongType(), False),
        T.StructField("state", T.StringType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("name", T.StringType(), False),
        T.StructField("size", T.LongType(), True),
        T.StructField("modified_at", T.TimestampType(), True),
        T.StructField("watermark_low", T.StringType(), True),
        T.StructField("watermark_high", T.StringType(), True),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("recorded_at", T.TimestampType(), False),
    ]
)
A = event("a1", amount="10.00")
B = event("b1", amount="20.00", region="south")
C = event("c1", amount="30.00", channel="store")


def test_an_old_ledger_is_read_and_its_interrupted_epoch_finished(
    spark, make_config, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    lakehouse = Lakehouse(config.lakehouse.root)
    landing = tmp_path / "landing"
    write_jsonl(landing / "a.jsonl", [raw_json(A)])
    write_jsonl(landing / "b.jsonl", [raw_json(B)])
    files = {f.path.rsplit("/", 1)[-1]: f for f in list_landing_files(spark, str(landing))}
    at = datetime(2026, 1, 10, 2, 0, tzinfo=timezone.utc)

    def row(epoch: int, state: str, name: str) -> dict:  # type: ignore[type-arg]
        f = files[name]
        return {
            "epoch": epoch,
            "state": state,
            "source": "file",
            "name": f.path,
            "size": f.size,
            "modified_at": f.modified_at,
            "run_id": "batch-old",
            "recorded_at": at,
        }

    jdbc = {
        "epoch": 1,
        "state": "ingested",
        "source": "jdbc",
        "name": "sales_data",
        "watermark_low": None,
        "watermark_high": "2026-01-09 23:59:59.5",
        "run_id": "batch-old",
        "recorded_at": at,
    }
    old_rows = [row(1, "planned", "a.jsonl"), row(1, "ingested", "a.jsonl"), jdbc]
    old_rows.append(row(2, "planned", "b.jsonl"))  # epoch 2 was killed before it finished
    spark.createDataFrame(old_rows, OLD_LEDGER_SCHEMA).write.format("delta").save(
        lakehouse.ingest_ledger
    )
    write_jsonl(landing / "c.jsonl", [raw_json(C)])

    # Read as entries: the interrupted epoch's files count as taken, after the ingested ones.
    before = read_ledger(spark, lakehouse.ingest_ledger)
    assert before.pending is not None and before.pending.epoch == 2
    assert before.pending.entries == (file_entry(files["b.jsonl"]),)
    assert before.taken_from("file") == (file_entry(files["a.jsonl"]), file_entry(files["b.jsonl"]))
    assert before.next_epoch == 3

    record = run_batch(spark, config)

    assert record.status == "succeeded"
    assert record.details["epochs"] == [2, 3]
    assert (record.records_read, record.valid) == (2, 2)  # b and c; a was taken by epoch 1
    master = spark.read.format("delta").load(lakehouse.master_dataset)
    assert sorted((r["event_id"], r["ingest_run"]) for r in master.collect()) == [
        ("b1", "batch-00000002"),
        ("c1", "batch-00000003"),
    ]
    assert published_views(spark, lakehouse) == compute_views([B, C])

    # The old rows stay; the new ones carry positions; all read as the same kind of entry.
    ledger = spark.read.format("delta").load(lakehouse.ingest_ledger)
    assert ledger.where(F.col("position").isNull()).count() == len(old_rows)
    state = read_ledger(spark, lakehouse.ingest_ledger)
    assert state.pending is None and state.next_epoch == 4
    listing = list_landing_files(spark, str(landing))
    assert sorted(state.taken_from("file"), key=lambda e: e.name) == [
        file_entry(f) for f in listing
    ]
    assert [e.fields for e in state.taken_from("jdbc")] == [
        {"watermark_high": "2026-01-09 23:59:59.5"}
    ]
    again = FilesSource(str(landing)).plan(spark, state.taken_from("file"), epoch=4)
    assert again.entries == ()


def test_an_epoch_committed_again_is_recorded_once_whichever_writer_committed_it(
    spark, make_config
) -> None:  # type: ignore[no-untyped-def]
    """An epoch's ``ingested`` commit carries the epoch as its application transaction: a
    second commit of the same epoch is skipped, whether the first came from Spark's writer (a
    lakehouse on object storage) or the driver's (a local one)."""
    path = Lakehouse(make_config().lakehouse.root).ingest_ledger
    at = datetime(2026, 1, 10, 2, 0, tzinfo=timezone.utc)
    first = IngestPlan(1, at, (Entry("file", "/landing/a.jsonl", '{"size":1}'),))
    second = IngestPlan(2, at, (Entry("file", "/landing/b.jsonl", '{"size":2}'),))
    committed_by_spark = {
        "epoch": 1,
        "state": "ingested",
        "source": "file",
        "name": "/landing/a.jsonl",
        "position": '{"size":1}',
        "run_id": "run-1",
        "recorded_at": at,
    }
    (
        spark.createDataFrame([committed_by_spark], LEDGER_SCHEMA)
        .write.format("delta")
        .option("txnAppId", LEDGER_APP_ID)
        .option("txnVersion", 1)
        .save(path)
    )

    record_ingested(spark, path, first, "run-1-again", at)
    record_plan(spark, path, second, "run-2")
    record_ingested(spark, path, second, "run-2", at)
    record_ingested(spark, path, second, "run-2-again", at)

    rows = spark.read.format("delta").load(path).collect()
    assert sorted((r["epoch"], r["state"], r["run_id"]) for r in rows) == [
        (1, "ingested", "run-1"),
        (2, "ingested", "run-2"),
        (2, "planned", "run-2"),
    ]
    state = read_ledger(spark, path)
    assert state.pending is None and state.next_epoch == 3
    assert state.taken == first.entries + second.entries
