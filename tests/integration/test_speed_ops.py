"""The streaming job under operational trouble: the broker goes away mid-stream, and the
nightly batch runs while the stream is running and its topic gains partitions (CONTRACT §2,
§4).

The stream is the real CLI (``lambda-sales speed``, continuous, 1 s trigger) in its own
process (the outage test against a broker of its own, which it stops and restarts); the test
process publishes, runs the batch on the shared session and checks the outcome against the
test's own oracle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from batch_layer.job import run_batch
from devtools import kafka as kafka_service
from sales_core.config import load_config
from sales_core.lakehouse import Lakehouse
from speed_layer.job import run_speed
from tests.conftest import BROKER_JAVA_OPTIONS, write_jsonl, write_stream_conf
from tests.integration.test_speed_crash import CLI, start_cli
from tests.integration.test_speed_layer import as_message, merged_views, publish
from tests.oracle import compute_views, event, raw_json
from tests.processes import free_port, wait_for_exit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.timeout(1800),  # two JVMs on two cores: the stream and the test's batch runs
]

TOPIC = "ops-sales"


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A broker of this test's own on a free port (the test stops and restarts it), and its
    data directory."""
    data_dir = tmp_path / "kafka"
    status = kafka_service.start_on_free_port(data_dir, jvm_options=BROKER_JAVA_OPTIONS)
    assert status.bootstrap is not None
    kafka_service.create_topic(status.bootstrap, TOPIC, partitions=2)
    yield status.bootstrap, data_dir
    kafka_service.stop(data_dir=data_dir)


def conf_file(base: Path, bootstrap: str, topic: str = TOPIC) -> Path:
    return write_stream_conf(base, bootstrap=bootstrap, topic=topic, landing=base / "landing")


def sales(prefix: str, n: int, *, late: bool = False) -> list[dict[str, Any]]:
    day = "2022-03-0" if late else "2026-01-1"
    return [
        event(
            f"{prefix}-{i}",
            amount=f"{i % 50 + 1}.{i % 100:02d}",
            quantity=i % 3 + 1,
            event_time=f"{day}{i % 9 + 1}T{i % 24:02d}:15:00Z",
            customer_id=f"c{i % 7}",
            region=("north", "south")[i % 2],
        )
        for i in range(n)
    ]


def micro_batches_done(log_path: Path) -> int:
    return log_path.read_text().count('"event": "speed_micro_batch"')


def wait_until(condition: Any, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def add_partitions(bootstrap: str, topic: str, *, total: int) -> None:
    from kafka.admin import KafkaAdminClient, NewPartitions

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_partitions({topic: NewPartitions(total_count=total)})
    finally:
        admin.close()


def master_commit_writers(lakehouse: Lakehouse) -> list[tuple[int, str]]:
    """Each commit of the master dataset, in version order, and who wrote it (the stream tags
    its commits ``lambda-sales-speed-…`` in ``userMetadata``; table creation is left out)."""
    writers = []
    for path in sorted((Path(lakehouse.master_dataset) / "_delta_log").glob("*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            info = json.loads(line).get("commitInfo")
            if info is None or int(path.stem) == 0:
                continue
            metadata = info.get("userMetadata") or ""
            writers.append(
                (int(path.stem), "stream" if metadata.startswith("lambda-sales-speed") else "batch")
            )
    return writers


def stream_master_ids(spark: Any, lakehouse: Lakehouse) -> list[str]:
    """The master dataset's event ids (none before the first writer has committed it)."""
    if not any((Path(lakehouse.master_dataset) / "_delta_log").glob("*.json")):
        return []
    return [
        r[0]
        for r in spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .select("event_id")
        .collect()
    ]


# The broker stays down longer than a few triggers and longer than Spark's own Kafka client
# retries, well within speed.broker_outage_seconds (300 s by default).
OUTAGE_SECONDS = 45


def test_broker_stopped_mid_stream_then_restarted(spark, tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    """A broker that comes back within the configured window is survived: the job never
    exits, and nothing published before, during or after the outage is lost or doubled."""
    bootstrap, data_dir = broker
    conf = conf_file(tmp_path, bootstrap)
    config = load_config(conf)
    assert config.speed.broker_outage_seconds > OUTAGE_SECONDS + 60
    lakehouse = Lakehouse(config.lakehouse.root)
    before, during, after = sales("b", 40), sales("d", 30), sales("a", 30)
    publish(bootstrap, TOPIC, [as_message(e, i % 2) for i, e in enumerate(before)])

    log_path = tmp_path / "speed.log"
    with log_path.open("w") as log:
        proc = start_cli(conf, "--trigger", "1 second", stderr=log)
        try:
            wait_until(
                lambda: micro_batches_done(log_path) >= 1 or proc.poll() is not None,
                "a first micro-batch",
            )
            assert proc.poll() is None, log_path.read_text()[-2000:]

            kafka_service.stop(data_dir=data_dir)
            down = time.monotonic()
            while time.monotonic() - down < OUTAGE_SECONDS:
                assert proc.poll() is None, (
                    "the job died while the broker was down:\n" + (log_path.read_text()[-3000:])
                )
                time.sleep(1)
            kafka_service.start(
                port=int(bootstrap.rsplit(":", 1)[1]),
                data_dir=data_dir,
                jvm_options=BROKER_JAVA_OPTIONS,
            )
            publish(bootstrap, TOPIC, [as_message(e, i % 2) for i, e in enumerate(during)])

            wait_until(
                lambda: (
                    proc.poll() is not None
                    or len(stream_master_ids(spark, lakehouse)) >= len(before + during)
                ),
                "the stream to catch up after the outage",
                timeout=400,
            )
            assert proc.poll() is None, (
                "the job died after the outage:\n" + (log_path.read_text()[-3000:])
            )
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        assert wait_for_exit(proc, timeout=300).returncode == 0, log_path.read_text()[-2000:]

    # A restart resumes where the checkpoint says, and nothing is lost or counted twice.
    publish(bootstrap, TOPIC, [as_message(e, i % 2) for i, e in enumerate(after)])
    run = run_speed(spark, config, available_now=True)
    assert run.status == "succeeded"
    ids = stream_master_ids(spark, lakehouse)
    assert len(ids) == len(set(ids)), "an event is in the master dataset twice"
    assert sorted(ids) == sorted(e["event_id"] for e in before + during + after)
    assert merged_views(spark, lakehouse) == compute_views(before + during + after)


def test_broker_down_at_start_is_one_line_and_non_zero(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dead = f"127.0.0.1:{free_port()}"
    conf = conf_file(tmp_path, dead)
    done = subprocess.run(
        [CLI, "speed", "--conf", str(conf), "--available-now"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"lambda-sales speed: cannot reach Kafka at {dead}: "
        f"KafkaTimeoutError: Unable to bootstrap from ['{dead}']"
    ], done.stderr


def test_batch_runs_while_the_stream_is_running(spark, tmp_path, kafka_bootstrap) -> None:  # type: ignore[no-untyped-def]
    bootstrap, topic = kafka_bootstrap, f"{TOPIC}-{uuid.uuid4().hex[:8]}"
    kafka_service.create_topic(bootstrap, topic, partitions=2)
    conf = conf_file(tmp_path, bootstrap, topic)
    config = load_config(conf)
    lakehouse = Lakehouse(config.lakehouse.root)
    landing = tmp_path / "landing"
    streamed = sales("s", 60) + sales("late", 20, late=True)
    filed = sales("f", 40)
    both = streamed[:15]  # the same events in a landing file and on the topic: they count once

    log_path = tmp_path / "speed.log"
    with log_path.open("w") as log:
        proc = start_cli(conf, "--trigger", "1 second", stderr=log)
        try:
            for round_number in range(3):
                chunk = streamed[round_number * 27 : (round_number + 1) * 27]
                if round_number == 2:  # partitions added while the stream runs
                    add_partitions(bootstrap, topic, total=4)
                partitions = 4 if round_number == 2 else 2
                publish(
                    bootstrap, topic, [as_message(e, i % partitions) for i, e in enumerate(chunk)]
                )
                if round_number == 0:  # the stream is up and writing before the first batch
                    wait_until(
                        lambda: (
                            proc.poll() is not None
                            or len(stream_master_ids(spark, lakehouse)) >= 27
                        ),
                        "the stream's first micro-batch",
                        timeout=600,
                    )
                files = filed[round_number * 14 : (round_number + 1) * 14] + (
                    both if round_number == 1 else []
                )
                write_jsonl(landing / f"round-{round_number}.jsonl", [raw_json(e) for e in files])
                record = run_batch(spark, config)  # races the stream's micro-batches
                assert record.status == "succeeded", record.error
                assert proc.poll() is None, log_path.read_text()[-2000:]
            wait_until(
                lambda: (
                    proc.poll() is not None
                    or len(stream_master_ids(spark, lakehouse)) >= len(streamed) + len(filed)
                ),
                "the stream to process every published event",
                timeout=600,
            )
            assert proc.poll() is None, log_path.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        assert wait_for_exit(proc, timeout=300).returncode == 0, log_path.read_text()[-2000:]

    # The batch ran while the stream was writing: a batch commit to the master dataset lies
    # between two of the stream's commits.
    writers = master_commit_writers(lakehouse)
    streams = [v for v, writer in writers if writer == "stream"]
    batches = [v for v, writer in writers if writer == "batch"]
    assert streams and any(streams[0] < v < streams[-1] for v in batches), writers

    ids = stream_master_ids(spark, lakehouse)
    assert len(ids) == len(set(ids)), "an event is in the master dataset twice"
    assert sorted(ids) == sorted(e["event_id"] for e in streamed + filed)
    read_from = {
        r[0]
        for r in spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .where(F.col("ingest_layer") == "speed")
        .select("source_partition")
        .collect()
    }
    assert read_from == {0, 1, 2, 3}, "the partitions added mid-stream were not read"
    assert merged_views(spark, lakehouse) == compute_views(streamed + filed)
    # And after the next batch absorbs everything the stream brought.
    run_batch(spark, config)
    assert merged_views(spark, lakehouse) == compute_views(streamed + filed)
    runs = (
        spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .where(F.col("job") == "speed")
        .collect()
    )
    assert [r["status"] for r in runs] == ["stopped"]
