"""The speed layer on a real Kafka broker, real Spark and Delta tables (CONTRACT §2, §3, §4).

Each test publishes to its own topic, runs the streaming job in-process with
``--available-now`` semantics (``run_speed``) and checks the tables against values worked
out from the test's own inputs (``tests.oracle``).
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from batch_layer.job import run_batch
from devtools import kafka as kafka_service
from sales_core.lakehouse import Lakehouse, read_view_increments
from sales_core.views import VIEWS, merge_partials
from serving_layer import spark_engine
from serving_layer.duckdb_engine import FastServing
from serving_layer.query import ViewQuery
from speed_layer.checkpoint import CheckpointMismatchError, CheckpointState, disagreement
from speed_layer.job import run_speed
from speed_layer.sink import SinkSettings, SpeedSink
from speed_layer.source import BATCH_TIME, KAFKA_COLUMNS
from tests.conftest import consume_all, write_jsonl
from tests.oracle import compute_views, event, raw_json, rows_to_view

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CLI = str(Path(sys.executable).with_name("lambda-sales"))
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def new_topic(bootstrap: str, prefix: str, partitions: int = 1) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kafka_service.create_topic(bootstrap, name, partitions=partitions)
    return name


def speed_config(make_config: Any, bootstrap: str, topic: str, **env: str) -> Any:
    return make_config(
        LAMBDA_SALES__SOURCES__KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        LAMBDA_SALES__SOURCES__KAFKA__TOPIC=topic,
        LAMBDA_SALES__SOURCES__KAFKA__DLQ_TOPIC=f"{topic}-dlq",
        **env,
    )


Message = tuple[int, bytes | None, bytes | None]  # partition, key, value


def publish(bootstrap: str, topic: str, messages: list[Message]) -> list[tuple[int, int]]:
    """Publish in order; returns each message's (partition, offset)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=8 * 1024 * 1024
    )
    try:
        futures = [producer.send(topic, key=k, value=v, partition=p) for p, k, v in messages]
        producer.flush()
        return [(md.partition, md.offset) for md in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


def as_message(e: dict[str, Any], partition: int, **overrides: Any) -> Message:
    body = {**raw_json(e), **overrides}
    return partition, e["event_id"].encode(), json.dumps(body).encode()


def master_rows(spark: Any, lakehouse: Lakehouse) -> list[dict[str, Any]]:
    return [r.asDict() for r in spark.read.format("delta").load(lakehouse.master_dataset).collect()]


def increments_view(
    spark: Any, lakehouse: Lakehouse, name: str, *, above: int = -1
) -> dict[Any, Any]:
    """The speed increments of view ``name`` with batch_id above ``above``, merged."""
    rows = (
        read_view_increments(spark, lakehouse, name)
        .where(F.col("batch_id") > above)
        .transform(merge_partials(VIEWS[name]))
        .collect()
    )
    return rows_to_view([r.asDict() for r in rows], name)


def merged_views(
    spark: Any, lakehouse: Lakehouse, storage_options: dict[str, str] | None = None
) -> dict[str, Any]:
    """What the serving layer answers for each view (its fast path, as ``lambda-sales serve``
    and ``query`` do), checked equal to its Spark engine's answer. ``storage_options``:
    delta-rs's, for a lakehouse on S3."""
    fast = FastServing(lakehouse.root, storage_options=storage_options)
    views = {}
    for name, view in VIEWS.items():
        views[name] = rows_to_view(fast.rows(name), name)
        by_spark = spark_engine.answer(spark, lakehouse, ViewQuery(view)).rows
        assert rows_to_view(by_spark, name) == views[name], f"the two engines differ on {name}"
    return views


GOOD = [
    event(
        "s1", amount="10.005", quantity=2, event_time="2024-05-01T23:30:00-02:00", category="books"
    ),
    event(
        "s2", amount="150.00", event_time="2024-05-02T00:10:00Z", category="toys", customer_id="c2"
    ),
    event("s3", amount="1000.01", quantity=3, event_time="2024-05-02T01:59:59Z", channel="mobile"),
    event(
        "s4",
        amount="99.99",
        event_time="2024-06-30T12:00:00+00:00",
        region="south",
        customer_id="c2",
    ),
    event(
        "s5", amount="5.00", event_time="2023-01-15T08:00:00Z", region="east", channel="store"
    ),  # late
    event(
        "s6", amount="0.10", event_time="2024-05-01T10:00:00Z", category="home", customer_id="c3"
    ),
]
NOT_UTF8 = b'{"event_id": "bad-\xff", "order_id": "o", "product_id": "p", "quantity": 1, "amount": 1, "event_time": "2024-05-01T00:00:00Z"}'
GARBAGE = random.Random(7).randbytes(1024 * 1024)


def test_end_to_end_three_partitions_poison_messages_and_dead_letters(
    spark, make_config, kafka_bootstrap
) -> None:  # type: ignore[no-untyped-def]
    topic = new_topic(kafka_bootstrap, "e2e", partitions=3)
    config = speed_config(make_config, kafka_bootstrap, topic)
    lakehouse = Lakehouse(config.lakehouse.root)
    valid = [as_message(e, i % 3) for i, e in enumerate(GOOD)]
    duplicate = as_message(GOOD[0], 0, amount="999.00")  # same partition, later: the first wins
    poison: list[tuple[Message, str]] = [
        ((0, b"p-empty", b""), "malformed"),
        ((1, b"p-null", None), "malformed"),
        ((2, b"p-utf8", NOT_UTF8), "malformed"),
        ((0, b"p-text", b"not json {"), "malformed"),
        ((1, b"p-big", GARBAGE), "malformed"),
        (as_message(event("p-neg", amount="1.00"), 2, amount="-3.50"), "negative_amount"),
    ]
    positions = publish(kafka_bootstrap, topic, valid + [duplicate] + [m for m, _ in poison])

    run = run_speed(spark, config, available_now=True)

    # Master dataset: each valid event once, the first copy, with its Kafka position.
    master = master_rows(spark, lakehouse)
    assert sorted(r["event_id"] for r in master) == sorted(e["event_id"] for e in GOOD)
    by_id = {r["event_id"]: r for r in master}
    for e, (partition, offset) in zip(GOOD, positions[: len(GOOD)], strict=True):
        row = by_id[e["event_id"]]
        assert (
            row["source"],
            row["source_name"],
            row["source_partition"],
            row["source_offset"],
        ) == ("kafka", topic, partition, offset)
        assert (row["amount"], row["ingest_layer"], row["ingest_run"], row["source_key"]) == (
            e["amount"],
            "speed",
            "speed",
            e["event_id"],
        )
    assert by_id["s1"]["amount"] == Decimal("10.01")

    # Quarantine: every poison message, with its position, reason and raw record.
    quarantine = {
        (r["source_partition"], r["source_offset"]): r.asDict()
        for r in spark.read.format("delta").load(lakehouse.quarantine).collect()
    }
    poison_positions = positions[len(valid) + 1 :]
    assert set(quarantine) == set(poison_positions)
    for ((_, key, value), reason), position in zip(poison, poison_positions, strict=True):
        row = quarantine[position]
        assert (row["reason"], row["source_name"], row["source_key"], row["ingest_layer"]) == (
            reason,
            topic,
            key.decode(),  # type: ignore[union-attr]
            "speed",
        )
        if value is None:
            assert row["raw_record"] is None
        elif value in (NOT_UTF8, GARBAGE):
            assert row["raw_record"].startswith("base64:")
            assert base64.b64decode(row["raw_record"][len("base64:") :]) == value
        else:
            assert row["raw_record"] == value.decode()

    # Dead-letter topic: the original key and bytes, the reason and position in headers.
    letters = consume_all(kafka_bootstrap, f"{topic}-dlq", expected=len(poison))
    got = {}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        got[(int(headers["source_partition"]), int(headers["source_offset"]))] = (
            headers["source_topic"],
            headers["reason"],
            letter.key,
            letter.value,
        )
    assert got == {
        position: (topic, reason, key, value)
        for ((_, key, value), reason), position in zip(poison, poison_positions, strict=True)
    }

    # Speed increments, merged, equal the views worked out independently.
    for name in VIEWS:
        assert increments_view(spark, lakehouse, name) == compute_views(GOOD)[name], name

    # Metrics: every record accounted for; lag zero once drained; fresh timestamps.
    metrics = [
        r.asDict() for r in spark.read.format("delta").load(lakehouse.stream_metrics).collect()
    ]
    total = {
        k: sum(m[k] for m in metrics) for k in ("input_rows", "valid", "duplicates", "quarantined")
    }
    assert total == {
        "input_rows": len(positions),
        "valid": len(GOOD),
        "duplicates": 1,
        "quarantined": len(poison),
    }
    last = max(metrics, key=lambda m: m["batch_id"])
    assert last["kafka_lag"] == 0 and last["freshness_ms"] is not None and last["freshness_ms"] >= 0
    assert (run.status, run.totals.input_rows, run.totals.quarantined) == (
        "succeeded",
        len(positions),
        len(poison),
    )
    runs = (
        spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .where(F.col("job") == "speed")
        .collect()
    )
    assert [
        (r["status"], r["records_read"], r["valid"], r["duplicates"], r["quarantined"])
        for r in runs
    ] == [("succeeded", len(positions), len(GOOD), 1, len(poison))]


def test_duplicates_of_batch_events_count_once_and_late_events_hand_off(
    spark, make_config, kafka_bootstrap, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    topic = new_topic(kafka_bootstrap, "handoff", partitions=2)
    config = speed_config(make_config, kafka_bootstrap, topic)
    lakehouse = Lakehouse(config.lakehouse.root)
    write_jsonl(tmp_path / "landing" / "day1.jsonl", [raw_json(e) for e in GOOD[:3]])
    run_batch(spark, config)

    # s1 again (the batch layer has it), a late event and a new one, through Kafka.
    late = event("late-1", amount="7.25", event_time="2023-03-01T09:00:00Z", customer_id="c1")
    publish(
        kafka_bootstrap,
        topic,
        [as_message(GOOD[0], 0, amount="999.00"), as_message(late, 1), as_message(GOOD[3], 0)],
    )
    run_speed(spark, config, available_now=True)

    master = master_rows(spark, lakehouse)
    assert sorted(r["event_id"] for r in master) == sorted(["s1", "s2", "s3", "s4", "late-1"])
    s1 = [r for r in master if r["event_id"] == "s1"]
    assert len(s1) == 1 and s1[0]["source"] == "file" and s1[0]["amount"] == Decimal("10.01")
    for name in VIEWS:
        assert increments_view(spark, lakehouse, name) == compute_views([late, GOOD[3]])[name], name
    assert merged_views(spark, lakehouse) == compute_views(GOOD[:4] + [late])

    # The next batch absorbs the stream's events: still exactly once.
    record = run_batch(spark, config)
    assert record.details["handoff"] == {"speed": 0}
    assert merged_views(spark, lakehouse) == compute_views(GOOD[:4] + [late])

    # A late event after the batch counts as soon as the stream has processed it.
    later = event("late-2", amount="3.00", event_time="2022-12-24T18:00:00Z", customer_id="c9")
    publish(kafka_bootstrap, topic, [as_message(later, 1), as_message(late, 0)])
    run_speed(spark, config, available_now=True)
    assert merged_views(spark, lakehouse) == compute_views(GOOD[:4] + [late, later])


def test_replayed_micro_batch_writes_nothing_twice(spark, make_config, kafka_bootstrap) -> None:  # type: ignore[no-untyped-def]
    topic = new_topic(kafka_bootstrap, "replay", partitions=2)
    config = speed_config(make_config, kafka_bootstrap, topic)
    lakehouse = Lakehouse(config.lakehouse.root)
    publish(
        kafka_bootstrap,
        topic,
        [as_message(e, i % 2) for i, e in enumerate(GOOD[:4])] + [(1, b"bad", b"[1, 2]")],
    )
    batch_time = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
    micro_batch = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .select(*KAFKA_COLUMNS, F.lit(batch_time).cast("timestamp").alias(BATCH_TIME))
    )
    sink = SpeedSink(SinkSettings(lakehouse, config.sources.kafka))

    def outcome() -> dict[str, Any]:
        tables = {
            "master": lakehouse.master_dataset,
            "quarantine": lakehouse.quarantine,
            "metrics": lakehouse.stream_metrics,
            "increments": lakehouse.speed_increments,
        }
        return {
            name: sorted(
                (
                    tuple(r)
                    for r in spark.read.format("delta")
                    .load(path)
                    .drop(
                        "started_at",
                        "ended_at",
                        "duration_ms",
                        "rows_per_second",
                        "kafka_lag",
                        "freshness_ms",
                    )
                    .collect()
                ),
                key=repr,
            )
            for name, path in tables.items()
        }

    try:
        sink.write_micro_batch(micro_batch, 7)
        first = outcome()
        sink.write_micro_batch(micro_batch, 7)
        second = outcome()
    finally:
        sink.close()

    assert second == first
    assert (
        len(first["master"]) == 4 and len(first["quarantine"]) == 1 and len(first["metrics"]) == 1
    )
    assert {r[-1] for r in first["master"]} == {
        datetime(2026, 1, 15, 12, 0)
    }  # ingested_at = batch time
    for name in VIEWS:
        assert increments_view(spark, lakehouse, name) == compute_views(GOOD[:4])[name], name


def test_refuses_to_start_when_checkpoint_and_tables_disagree(
    spark, make_config, kafka_bootstrap, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    topic = new_topic(kafka_bootstrap, "refuse")
    config = speed_config(make_config, kafka_bootstrap, topic)
    lakehouse = Lakehouse(config.lakehouse.root)
    checkpoint = Path(lakehouse.speed_checkpoint)
    publish(kafka_bootstrap, topic, [as_message(GOOD[0], 0)])
    run_speed(spark, config, available_now=True)  # micro-batch 0
    after_0 = tmp_path / "checkpoint-after-0"
    shutil.copytree(checkpoint, after_0)
    publish(kafka_bootstrap, topic, [as_message(GOOD[1], 0)])
    run_speed(spark, config, available_now=True)  # micro-batch 1

    # A deleted checkpoint would re-read the topic from the start.
    shutil.move(checkpoint, tmp_path / "checkpoint-current")
    with pytest.raises(
        CheckpointMismatchError,
        match=r"is missing or empty, but the lakehouse already holds micro-batches of stream 'speed' up to 1",
    ):
        run_speed(spark, config, available_now=True)

    # An older checkpoint (a backup) would plan micro-batch 1 again over other offsets.
    shutil.copytree(after_0, checkpoint)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"planned micro-batches up to 0, but the master dataset holds micro-batch 1",
    ):
        run_speed(spark, config, available_now=True)

    # Another topic's checkpoint.
    other = speed_config(make_config, kafka_bootstrap, new_topic(kafka_bootstrap, "other"))
    with pytest.raises(
        CheckpointMismatchError, match=r"reads topic\(s\) refuse-.*not the configured topic"
    ):
        run_speed(spark, other, available_now=True)

    # Tables deleted under a kept checkpoint would skip what the checkpoint says is done.
    shutil.rmtree(checkpoint)
    shutil.move(tmp_path / "checkpoint-current", checkpoint)
    shutil.rmtree(lakehouse.stream_metrics)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"committed micro-batches up to 1, but the lakehouse records .* only up to -1",
    ):
        run_speed(spark, config, available_now=True)
    assert sorted(r["event_id"] for r in master_rows(spark, lakehouse)) == ["s1", "s2"]


def _state(
    committed: int | None, planned: int | None, topics: tuple[str, ...] = ("t",)
) -> CheckpointState:
    return CheckpointState("ckpt", planned is not None, committed, planned, frozenset(topics), {})


@pytest.mark.parametrize(
    ("state", "master", "metrics", "problem"),
    [
        (_state(None, None, ()), None, None, None),  # first start
        (_state(None, 0), 0, None, None),  # killed in micro-batch 0 after the master insert
        (_state(4, 5), 5, 4, None),  # killed in micro-batch 5 before its metrics
        (_state(4, 5), 5, 5, None),  # killed before Spark's commit of micro-batch 5
        (_state(5, 5), 3, 5, None),  # micro-batches 4 and 5 brought no new events
        (_state(None, None, ()), None, 0, "is missing or empty"),
        (_state(4, 4), 5, 4, "master dataset holds micro-batch 5"),
        (_state(4, 4), 4, 5, "stream_metrics records micro-batch 5"),
        (_state(4, 5), 4, 3, "only up to 3"),
        (_state(4, 5, ("u",)), 4, 4, "not the configured topic 't'"),
    ],
)
def test_checkpoint_rules(
    state: CheckpointState, master: int | None, metrics: int | None, problem: str | None
) -> None:
    reason = disagreement(
        state, topic="t", stream="speed", master_batch=master, metrics_batch=metrics
    )
    if problem is None:
        assert reason is None
    else:
        assert reason is not None and problem in reason and "\n" not in reason


def test_generate_to_kafka_publishes_keyed_records(kafka_bootstrap, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``lambda-sales generate --to kafka`` (no Spark): creates the topic, keys by event_id."""
    import os

    from kafka import KafkaAdminClient

    topic = f"generate-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "LAMBDA_SALES__SOURCES__KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LAMBDA_SALES__SOURCES__KAFKA__TOPIC": topic,
    }
    result = subprocess.run(
        [
            CLI,
            "generate",
            "--to",
            "kafka",
            "--events",
            "500",
            "--seed",
            "3",
            "--partitions",
            "3",
            "--quiet",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"published 500 records to Kafka topic {topic}" in result.stdout

    from devtools.generator import GeneratorSpec, generate_records

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    assert len(described[0]["partitions"]) == 3
    messages = consume_all(kafka_bootstrap, topic, expected=500)
    assert len(messages) == 500
    # Same seed, same records (the generator's own end time moves, so compare ids and keys).
    spec_ids = [
        r.get("event_id") if isinstance(r, dict) else None
        for r in generate_records(GeneratorSpec(events=500, seed=3))
    ]
    assert sorted(str(m.key.decode()) if m.key else "" for m in messages) == sorted(
        str(i) if i else "" for i in spec_ids
    )
    for m in messages:
        if m.key is not None:
            assert json.loads(m.value)["event_id"] == m.key.decode()


def test_refuses_to_start_when_the_state_was_deleted(spark, make_config, kafka_bootstrap) -> None:  # type: ignore[no-untyped-def]
    """The de-duplication state lives in the checkpoint: without it, ids the stream already
    took would be accepted again."""
    topic = new_topic(kafka_bootstrap, "state")
    config = speed_config(make_config, kafka_bootstrap, topic)
    lakehouse = Lakehouse(config.lakehouse.root)
    publish(kafka_bootstrap, topic, [as_message(GOOD[0], 0)])
    run_speed(spark, config, available_now=True)
    shutil.rmtree(Path(lakehouse.speed_checkpoint) / "state")
    publish(kafka_bootstrap, topic, [as_message(GOOD[0], 0)])  # a copy the state would have dropped
    with pytest.raises(CheckpointMismatchError, match=r"no de-duplication state \(state/ was"):
        run_speed(spark, config, available_now=True)
    assert [r["event_id"] for r in master_rows(spark, lakehouse)] == [GOOD[0]["event_id"]]
