"""A batch insert that commits while the speed sink's master append runs is still caught.

The append reads the batch rows of epochs newer than the last registered one inside its own
Delta transaction; a batch commit after that read makes the append conflict, and its retry
sees the batch's rows. The race is made certain by holding the append's read once (a Python
UDF that, on its first call, waits for the batch layer's real insert to commit).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sales_core.events import parse_json_records
from sales_core.handoff import BATCH_LAYER
from sales_core.lakehouse import Lakehouse, ensure_speed_tables, read_view_increments
from sales_core.master import insert_new_events, with_ingest_metadata
from sales_core.rules import valid_events, validate
from sales_core.views import VIEWS, merge_partials
from speed_layer.deltalog import DriverAppends
from speed_layer.sink import SinkSettings, SpeedSink
from tests.oracle import compute_views, event, raw_json, rows_to_view
from tests.serving_helpers import KAFKA_RECORD

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
STREAMED = [event(f"s-{i}", amount=f"{i}.50", event_time="2026-01-15T10:00:00Z") for i in range(4)]
RACED = STREAMED[2]  # also brought by the batch layer, which commits first


def batch_insert(spark: Any, lakehouse: Lakehouse, events: list[dict[str, Any]], tag: str) -> None:
    """The batch layer's own insert of ``events`` (JSON lines through the shared rules)."""
    lines = [
        ("file", "landing.jsonl", None, i, None, json.dumps(raw_json(e)))
        for i, e in enumerate(events)
    ]
    envelopes = spark.createDataFrame(
        lines,
        "source string, source_name string, source_partition int, source_offset long, source_key string, value string",
    ).transform(parse_json_records("value"))
    rows = valid_events(envelopes.transform(validate(now=NOW))).transform(
        with_ingest_metadata(layer=BATCH_LAYER, run=tag, batch=None, ingested_at=NOW)
    )
    insert_new_events(spark, lakehouse.master_dataset, rows, retries=10)


def test_batch_insert_during_the_master_append_is_caught(spark, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    lakehouse = Lakehouse(str(tmp_path / "lakehouse"))
    ensure_speed_tables(spark, lakehouse)
    # An older epoch the state has registered, and one row of a newer epoch: the append's
    # bounded read has a row to slow down on.
    batch_insert(spark, lakehouse, [event("b-old", amount="1.00")], "batch-00000001")
    batch_insert(spark, lakehouse, [event("b-new", amount="2.00")], "batch-00000002")

    marker = tmp_path / "slept"
    attempts: list[int] = []
    original = SpeedSink.newer_batch_rows

    def slow_once(self: SpeedSink, spark_: Any) -> DataFrame:
        attempts.append(1)
        return held_once(original(self, spark_), marker)

    monkeypatch.setattr(SpeedSink, "newer_batch_rows", slow_once)
    racer = racing_batch_insert(spark, lakehouse, marker)
    sink = SpeedSink(
        SinkSettings(
            lakehouse, _kafka_conf(), replayable_up_to=-1, registered_epoch="batch-00000001"
        )
    )
    try:
        sink.write_micro_batch(kafka_rows(spark, STREAMED, offset=0), 0)
    finally:
        racer.join()

    assert len(attempts) >= 2, "the append did not conflict with the batch insert"
    master = spark.read.format("delta").load(lakehouse.master_dataset).collect()
    ids = sorted(r["event_id"] for r in master)
    assert ids == sorted(["b-old", "b-new", *[e["event_id"] for e in STREAMED]])
    raced = [r for r in master if r["event_id"] == RACED["event_id"]]
    assert [r["ingest_run"] for r in raced] == ["batch-00000003"]
    kept = [e for e in STREAMED if e is not RACED]
    for name, view in VIEWS.items():
        rows_ = (
            read_view_increments(spark, lakehouse, name).transform(merge_partials(view)).collect()
        )
        assert rows_to_view([r.asDict() for r in rows_], name) == compute_views(kept)[name], name
    metrics = spark.read.format("delta").load(lakehouse.stream_metrics).collect()
    assert [(m["input_rows"], m["valid"], m["duplicates"]) for m in metrics] == [(4, 3, 1)]


def test_batch_insert_during_the_unread_master_append_is_caught(  # type: ignore[no-untyped-def]
    spark, tmp_path, monkeypatch
) -> None:
    """The steady state appends to the master dataset without reading it, as the version
    right after the last one the stream has seen: a batch insert committing while the
    micro-batch is read takes that version, the append commits nothing, and the reading path
    sees the batch's new rows."""
    lakehouse = Lakehouse(str(tmp_path / "lakehouse"))
    ensure_speed_tables(spark, lakehouse)
    batch_insert(spark, lakehouse, [event("b-old", amount="1.00")], "batch-00000001")
    sink = SpeedSink(
        SinkSettings(
            lakehouse, _kafka_conf(), replayable_up_to=-1, registered_epoch="batch-00000001"
        )
    )
    first = [event(f"f-{i}", amount="3.00", event_time="2026-01-15T09:00:00Z") for i in range(2)]
    sink.write_micro_batch(kafka_rows(spark, first, offset=0), 0)  # the first: reads

    marker = tmp_path / "slept"
    original_records = SpeedSink.master_records
    original_append = DriverAppends.append
    outcomes: list[str] = []  # of the steady state's master append

    def slow_records(self: SpeedSink, rows: DataFrame) -> DataFrame:
        return held_once(original_records(self, rows), marker)

    def recorded(self: DriverAppends, path: str, rows: Any, **kwargs: Any) -> bool:
        done = original_append(self, path, rows, **kwargs)
        if kwargs.get("expected_version") is not None:  # the master append
            outcomes.append("committed" if done else "conflicted")
        return done

    monkeypatch.setattr(SpeedSink, "master_records", slow_records)
    monkeypatch.setattr(DriverAppends, "append", recorded)
    racer = racing_batch_insert(spark, lakehouse, marker)
    try:
        sink.write_micro_batch(kafka_rows(spark, STREAMED, offset=10), 1)
    finally:
        racer.join()

    # The steady append found its version taken by the batch insert and committed nothing;
    # the reading path saw the batch's row.
    assert outcomes == ["conflicted"], outcomes
    assert marker.exists()
    master = spark.read.format("delta").load(lakehouse.master_dataset).collect()
    ids = sorted(r["event_id"] for r in master)
    assert ids == sorted(["b-old", *[e["event_id"] for e in first + STREAMED]])
    raced = [r for r in master if r["event_id"] == RACED["event_id"]]
    assert [r["ingest_run"] for r in raced] == ["batch-00000003"]
    kept = first + [e for e in STREAMED if e is not RACED]
    for name, view in VIEWS.items():
        rows_ = (
            read_view_increments(spark, lakehouse, name).transform(merge_partials(view)).collect()
        )
        assert rows_to_view([r.asDict() for r in rows_], name) == compute_views(kept)[name], name


def committed(marker: Path) -> Path:
    """Where the racing batch insert notes that it has returned (committed or failed)."""
    return marker.with_name(marker.name + ".committed")


def held_once(rows: DataFrame, marker: Path) -> DataFrame:
    """``rows`` through a Python UDF that, on its first call anywhere, creates ``marker`` and
    waits (up to 120 s) until the batch insert it starts has returned: the race window."""
    path, done = str(marker), str(committed(marker))

    def hold_first(event_id: str) -> bool:
        if not Path(path).exists():
            Path(path).write_text("1")
            deadline = time.monotonic() + 120
            while not Path(done).exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        return True

    return rows.where(F.udf(hold_first, "boolean")(F.col("event_id")))


def racing_batch_insert(spark: Any, lakehouse: Lakehouse, marker: Path) -> threading.Thread:
    """A started thread that inserts RACED as the batch layer, once ``marker`` exists."""

    def insert() -> None:
        deadline = time.monotonic() + 180  # the test fails on the marker, never hangs
        while not marker.exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        try:
            batch_insert(spark, lakehouse, [RACED], "batch-00000003")
        finally:
            committed(marker).write_text("1")

    racer = threading.Thread(target=insert)
    racer.start()
    return racer


def kafka_rows(spark: Any, events: list[dict[str, Any]], *, offset: int) -> DataFrame:
    rows = [
        (e["event_id"].encode(), json.dumps(raw_json(e)).encode(), "t", 0, offset + i, NOW, NOW)
        for i, e in enumerate(events)
    ]
    return spark.createDataFrame(rows, KAFKA_RECORD)


def _kafka_conf() -> Any:
    from sales_core.config import load_config

    return load_config(environ={}).sources.kafka
