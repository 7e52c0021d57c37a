"""``lambda-sales maintain`` while the stream writes and a reader reads.

A real streaming query (the job's own ``run_speed``, 1-second trigger, a real broker) runs in a
thread of this process; a long-lived fast-path reader (what ``lambda-sales serve`` holds) reads
every merged view in a loop on another thread; the batch publishes a generation that absorbs
the first micro-batches. Then maintenance runs and more events arrive during it. Nothing a
reader sees fails, the merged views equal the oracle over every event sent (each once), the
compacted tables have fewer files, and the increments every kept generation covers are gone.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from batch_layer.job import run_batch
from batch_layer.maintain import maintain
from devtools.writers import publish_records
from sales_core.handoff import current_generation
from sales_core.lakehouse import Lakehouse
from sales_core.views import VIEWS
from serving_layer.duckdb_engine import FastServing
from speed_layer.job import run_speed
from tests.conftest import write_jsonl
from tests.integration.test_speed_layer import merged_views
from tests.oracle import compute_views, event, raw_json, rows_to_view

pytestmark = [pytest.mark.integration]


def _events(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        event(
            f"{prefix}-{i}",
            amount=f"{i + 1}.25",
            event_time=f"2024-05-0{1 + i % 3}T1{i % 10}:00:00Z",
            customer_id=f"c{i % 5}",
            channel=("web", "store")[i % 2],
        )
        for i in range(n)
    ]


def _wait_for(condition, what: str, timeout: float = 300) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


@pytest.mark.timeout(900)
def test_maintenance_with_the_stream_and_a_reader_running(
    spark, make_config, kafka_bootstrap
) -> None:  # type: ignore[no-untyped-def]
    topic = f"maintain-{uuid.uuid4().hex[:8]}"
    config = make_config(
        LAMBDA_SALES__SOURCES__KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        LAMBDA_SALES__SOURCES__KAFKA__TOPIC=topic,
        LAMBDA_SALES__SOURCES__KAFKA__DLQ_TOPIC=f"{topic}-dlq",
        LAMBDA_SALES__BATCH__KEEP_GENERATIONS="1",
        LAMBDA_SALES__MAINTENANCE__VACUUM_RETENTION_HOURS="1",
        LAMBDA_SALES__SPEED__COMPACT_INTERVAL_SECONDS="0",  # maintenance does it here
    )
    lakehouse = Lakehouse(config.lakehouse.root)
    landing = config.sources.files.landing
    sent: list[dict[str, Any]] = []

    def master_count() -> int:
        if not DeltaTable.isDeltaTable(spark, lakehouse.master_dataset):
            return 0
        return spark.read.format("delta").load(lakehouse.master_dataset).count()

    def send(events: list[dict[str, Any]]) -> None:
        publish_records([raw_json(e) for e in events], config.sources.kafka, partitions=2)
        sent.extend(events)

    stop = threading.Event()
    stream_errors: list[BaseException] = []

    def stream() -> None:
        try:
            run_speed(spark, config, trigger="1 second", stop=stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            stream_errors.append(exc)

    filed = _events("f", 20)
    write_jsonl(Path(landing) / "day-1.jsonl", [raw_json(e) for e in filed])
    run_batch(spark, config)
    sent.extend(filed)

    streaming = threading.Thread(target=stream, daemon=True)
    streaming.start()
    for round_number in range(4):  # several micro-batches: several small files
        send(_events(f"s{round_number}", 15))
        _wait_for(lambda: master_count() == len(sent) or bool(stream_errors), "the stream")
    assert not stream_errors, stream_errors
    run_batch(spark, config)  # absorbs those micro-batches: they are covered now
    generation = current_generation(spark, lakehouse)
    assert generation is not None and generation.handoff.get("speed", -1) >= 0
    send(_events("late", 10))  # above the mark: must stay
    _wait_for(lambda: master_count() == len(sent) or bool(stream_errors), "the stream")

    reader_errors: list[BaseException] = []
    reads = [0]
    reading = threading.Event()
    reading.set()
    reader = FastServing(lakehouse.root)

    def read_in_a_loop() -> None:
        while reading.is_set():
            try:
                for name in VIEWS:
                    reader.rows(name)
                reads[0] += 1
                time.sleep(0.2)  # a reader, not a load test
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                reader_errors.append(exc)
                return

    reading_thread = threading.Thread(target=read_in_a_loop, daemon=True)
    reading_thread.start()
    increments_before = (
        spark.read.format("delta").load(lakehouse.speed_increments).select("batch_id").collect()
    )
    mark = generation.handoff["speed"]
    during = _events("during", 12)
    sender = threading.Thread(target=send, args=(during,), daemon=True)
    sender.start()  # events arrive while maintenance runs
    record = maintain(spark, config, progress=lambda _: None)
    sender.join()
    _wait_for(lambda: master_count() == len(sent) or bool(stream_errors), "the stream")
    reading.clear()
    reading_thread.join(timeout=120)
    stop.set()
    streaming.join(timeout=300)
    assert not stream_errors, stream_errors
    assert not reader_errors, reader_errors
    assert reads[0] > 0

    assert record.status == "succeeded", record.error
    files = record.details["files"]
    assert files["master_dataset"]["after"] < files["master_dataset"]["before"], files
    assert files["speed_increments"]["after"] < files["speed_increments"]["before"], files
    assert record.details["expired_increment_rows"] > 0
    left = spark.read.format("delta").load(lakehouse.speed_increments)
    assert left.where(F.col("batch_id") <= mark).count() == 0  # covered: expired
    above = {r["batch_id"] for r in increments_before if r["batch_id"] > mark}
    assert above and above <= {r["batch_id"] for r in left.select("batch_id").collect()}

    # nothing lost, nothing doubled: the oracle over every event sent
    master = spark.read.format("delta").load(lakehouse.master_dataset)
    assert master.count() == master.select("event_id").distinct().count() == len(sent)
    expected = compute_views(sent)
    assert merged_views(spark, lakehouse) == expected
    for name in VIEWS:  # the long-lived reader too, after the files it held were compacted
        assert rows_to_view(reader.rows(name), name) == expected[name], name
    runs = (
        spark.read.format("delta").load(lakehouse.pipeline_runs).where(F.col("job") == "maintain")
    )
    assert [r["status"] for r in runs.collect()] == ["succeeded"]
