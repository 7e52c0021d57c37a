"""The local dev services: a real Kafka broker and a real PostgreSQL server, end to end.

The brokers run the demo's configuration with the tests' JVM options (``BROKER_JAVA_OPTIONS``:
C1 alone and the serial collector, as every broker of the tests)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import kafka, postgres
from devtools.processes import PROJECT_ROOT, PortInUseError, free_port
from tests.conftest import BROKER_JAVA_OPTIONS, postgres_data_dir

pytestmark = pytest.mark.integration

PG_PASSWORD = "integration-test-password"


@pytest.fixture
def kafka_data(tmp_path: Path) -> Iterator[Path]:
    """A Kafka data directory whose broker is stopped after the test, whatever happens."""
    data_dir = tmp_path / "kafka"
    yield data_dir
    kafka.stop(data_dir=data_dir)


@pytest.fixture
def pg_data() -> Iterator[Path]:
    """A PostgreSQL data directory whose server is stopped after the test, whatever happens."""
    with postgres_data_dir() as data_dir:
        yield data_dir


def test_kafka_broker_round_trip(kafka_data: Path) -> None:
    port = kafka.free_broker_port()
    first = kafka.start(port=port, data_dir=kafka_data, jvm_options=BROKER_JAVA_OPTIONS)
    assert first.running and first.bootstrap == f"127.0.0.1:{port}"
    again = kafka.start(port=port, data_dir=kafka_data, jvm_options=BROKER_JAVA_OPTIONS)
    assert again.pid == first.pid, "a second start must reuse the running broker"
    assert "running" in str(kafka.status(data_dir=kafka_data))

    from kafka import KafkaConsumer, KafkaProducer

    bootstrap = first.bootstrap
    assert kafka.create_topic(bootstrap, "devservices-test", partitions=3) is True
    assert kafka.create_topic(bootstrap, "devservices-test", partitions=3) is False

    big = b"x" * (2 * 1024 * 1024)  # the broker must accept 2 MB messages
    sent = {(0, b"k0", b"first"), (1, b"k1", b"second"), (2, b"k2", big)}
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    for partition, key, value in sorted(sent):
        producer.send("devservices-test", key=key, value=value, partition=partition)
    producer.flush(timeout=30)
    producer.close()

    consumer = KafkaConsumer(
        "devservices-test",
        bootstrap_servers=bootstrap,
        group_id="devservices-test",
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,
        fetch_max_bytes=8 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    received = set()
    for record in consumer:
        received.add((record.partition, record.key, record.value))
        if len(received) == len(sent):
            break
    consumer.close()
    assert received == sent

    assert kafka.delete_topic(bootstrap, "devservices-test") is True
    stopped = kafka.stop(data_dir=kafka_data)
    assert not stopped.running and stopped.pid is None
    assert not kafka.status(data_dir=kafka_data).running
    assert not kafka.stop(data_dir=kafka_data).running, "stop must be idempotent"


def test_kafka_start_survives_a_signal_that_kills_the_broker_while_it_starts(
    kafka_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program's clean-up (or the OOM killer) may kill the JVM before it answers: start
    launches it again instead of failing, and says how the first one ended."""
    killed: list[int] = []

    def kill_first_launch() -> None:
        pid_file = kafka_data / "kafka.pid"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_launch)
    killer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="devtools.kafka"):
            started = kafka.start_on_free_port(kafka_data, jvm_options=BROKER_JAVA_OPTIONS)
    finally:
        killer.join()
    assert killed, "the test never saw the broker's pid file"
    assert started.running and started.pid != killed[0]
    assert any("killed by SIGKILL" in r.getMessage() for r in caplog.records)
    assert kafka.create_topic(started.bootstrap or "", "after-restart", partitions=1) is True


def test_brokers_on_free_ports_run_side_by_side(kafka_bootstrap: str, kafka_data: Path) -> None:
    """What two pytest-xdist workers do: each its own broker, data dir and ports."""
    other = kafka.start_on_free_port(kafka_data, jvm_options=BROKER_JAVA_OPTIONS)

    assert other.running and other.bootstrap not in (None, kafka_bootstrap)
    assert other.data_dir == kafka_data.resolve()
    assert kafka.create_topic(kafka_bootstrap, "side-by-side", partitions=1) is True
    assert kafka.create_topic(other.bootstrap or "", "side-by-side", partitions=1) is True


def test_kafka_start_refuses_a_port_taken_by_another_program(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(PortInUseError, match="in use by another program"):
            kafka.start(port=port, data_dir=tmp_path / "kafka")


def test_postgres_round_trip(pg_data: Path) -> None:
    port = free_port()
    first = postgres.start(port=port, data_dir=pg_data, password=PG_PASSWORD)
    assert first.running and first.port == port
    again = postgres.start(port=port, data_dir=pg_data, password=PG_PASSWORD)
    assert again.pid == first.pid, "a second start must reuse the running server"

    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=port, user="sales", password=PG_PASSWORD, dbname="sales"
    ) as conn:
        conn.execute("CREATE TABLE sales_data (id int PRIMARY KEY, product text, amount numeric)")
        conn.execute(
            "INSERT INTO sales_data VALUES (%s, %s, %s), (%s, %s, %s)",
            [1, "widget", 9.5, 2, "gadget", 20],
        )
        rows = conn.execute("SELECT id, product, amount FROM sales_data ORDER BY id").fetchall()
    assert [(r[0], r[1], float(r[2])) for r in rows] == [(1, "widget", 9.5), (2, "gadget", 20.0)]

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1", port=port, user="sales", password="wrong", dbname="sales"
        ).close()
    assert PG_PASSWORD not in (pg_data / "postgres.log").read_text()

    stopped = postgres.stop(data_dir=pg_data)
    assert not stopped.running
    assert "stopped" in str(postgres.status(data_dir=pg_data))
    assert not postgres.stop(data_dir=pg_data).running, "stop must be idempotent"


def test_cli_reports_status_and_one_line_errors(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devtools", *args],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    status = cli("kafka", "status", "--data-dir", str(tmp_path / "kafka"))
    assert status.returncode == 0
    assert status.stdout.startswith("kafka: stopped")

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        failed = cli("kafka", "start", "--port", str(port), "--data-dir", str(tmp_path / "k"))
    assert failed.returncode == 1
    assert failed.stderr.strip().count("\n") == 0, failed.stderr
    assert failed.stderr.startswith("error: ") and "Traceback" not in failed.stderr
