"""The stream on a three-broker Kafka cluster that loses a broker to SIGKILL (issue 15).

A real KRaft cluster of three broker+controller nodes (``devtools.kafka_cluster``, what
``lambda-sales kafka start --brokers 3`` runs) on free ports; the topic has 3 partitions of
3 replicas. The real streaming job (``lambda-sales speed``, continuous, 1 s trigger) runs in
its own process while the test process publishes through the devtools producer (``acks=all``)
without a pause. The leader of partition 0 is killed with SIGKILL mid-stream, the stream must
go on reading and the producer go on writing on the other two, then the node is started
again and must rejoin every in-sync replica set. At the end: the job never stopped nor
restarted its query, and the merged views are the oracle's over what was published (nothing
lost, nothing doubled).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from devtools import kafka as kafka_service
from devtools import kafka_cluster
from devtools.processes import process_matches
from devtools.writers import publish_records
from sales_core.config import KafkaSourceConf, load_config
from sales_core.lakehouse import Lakehouse
from serving_layer.duckdb_engine import FastServing
from tests.conftest import BROKER_JAVA_OPTIONS, consume_all, write_stream_conf
from tests.oracle import compute_views, event, raw_json, rows_to_view
from tests.processes import wait_for_exit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.timeout(600),
]

TOPIC = "cluster-sales"
PARTITIONS = 3
BROKERS = 3
CHUNK = 8  # events a publish call sends (a producer and its acks=all round trip each)
PUBLISH_EVERY_S = 0.4
BAD_EVERY = 10  # every 10th record is rejected (quantity 0): the dead-letter writes go on too
RESENT_EVERY = 3  # every 3rd chunk also sends an event of the chunk before it again
VIEWS = ("sales_daily", "sales_hourly", "customer_totals", "revenue_category_monthly")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[kafka_cluster.ClusterStatus]:
    """This test's own three-broker cluster (it kills and restarts one node)."""
    data_dir = tmp_path / "kafka-cluster"
    status = kafka_cluster.start_cluster_on_free_ports(
        data_dir, brokers=BROKERS, jvm_options=BROKER_JAVA_OPTIONS
    )
    try:
        yield status
    finally:
        kafka_cluster.stop_cluster(data_dir)


class Publisher(threading.Thread):
    """Publishes chunks of sales until stopped; keeps what Kafka acknowledged.

    Records are published with ``devtools.writers.publish_records`` (the producer of
    ``lambda-sales generate``): a call returns only once every message of it is
    acknowledged by the in-sync replicas, and raises otherwise.
    """

    def __init__(self, conf: KafkaSourceConf) -> None:
        super().__init__(daemon=True)
        self.conf = conf
        self.valid: list[dict[str, Any]] = []  # acknowledged valid events, duplicates included
        self.rejected: list[str] = []  # event ids of acknowledged records the rules reject
        self.chunks = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        n = 0
        try:
            while not self.stopping.is_set():
                chunk: list[dict[str, Any]] = []
                bad: list[str] = []
                for _ in range(CHUNK):
                    e = sale(n)
                    if n % BAD_EVERY == BAD_EVERY - 1:
                        chunk.append({**raw_json(e), "quantity": 0})
                        bad.append(e["event_id"])
                    else:
                        chunk.append(e)
                    n += 1
                with self.lock:
                    resend = self.valid[-1] if self.chunks % RESENT_EVERY == 2 else None
                if resend is not None:
                    chunk.append(resend)
                records = [r if "event_date" not in r else raw_json(r) for r in chunk]
                publish_records(records, self.conf, partitions=PARTITIONS)
                with self.lock:
                    self.valid += [r for r in chunk if "event_date" in r]
                    self.rejected += bad
                    self.chunks += 1
                self.stopping.wait(PUBLISH_EVERY_S)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def published(self) -> tuple[int, list[dict[str, Any]]]:
        """How many chunks were acknowledged, and the valid events among them."""
        with self.lock:
            return self.chunks, list(self.valid)

    def finish(self) -> None:
        self.stopping.set()
        self.join(timeout=120)
        assert not self.is_alive(), "the publisher hangs"
        assert self.error is None, f"a publish failed: {self.error!r}"


def sale(i: int) -> dict[str, Any]:
    return event(
        f"kc-{i}",
        amount=f"{i % 40 + 1}.{i % 100:02d}",
        quantity=i % 3 + 1,
        event_time=f"2026-01-{i % 9 + 11}T{i % 24:02d}:{i % 60:02d}:00Z",
        customer_id=f"c{i % 5}",
        region=("north", "south", "east")[i % 3],
        channel=("web", "store")[i % 2],
    )


def master_ids(lakehouse: Lakehouse) -> list[str]:
    """The master dataset's event ids, read with delta-rs (none before the first commit)."""
    try:
        table = DeltaTable(lakehouse.master_dataset)
    except TableNotFoundError:
        return []
    return [str(i) for i in table.to_pyarrow_table(columns=["event_id"])["event_id"].to_pylist()]


def partitions_of(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Each partition of ``topic``: its leader, replicas and in-sync replicas (asked again
    while the request lands on the dead broker: kafka-python's admin client does not)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + 30
    while True:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kafka-cluster-test")
        try:
            (described,) = admin.describe_topics([topic])
            return sorted(described["partitions"], key=lambda p: p["partition_index"])
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
        finally:
            admin.close()
        time.sleep(0.2)


def wait_until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """Wait for ``condition``; print when it came (pytest shows it with a failure)."""
    begun = time.monotonic()
    while not condition():
        assert time.monotonic() < begun + timeout, f"timed out waiting for {what}"
        time.sleep(0.5)
    print(f"{time.strftime('%H:%M:%S')} {what} after {time.monotonic() - begun:.1f} s")


#: A log line of the job in the local (text) format: time, level, logger, message.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>\S+): ")
STOPPING = "SIGTERM: stopping after the running micro-batch"


def trouble_before_stop(log_text: str) -> list[str]:
    """The job's stderr lines, before the test stopped it, that tell of trouble: a warning or
    an error, a traceback, a query started again after a Kafka failure."""
    trouble = []
    for line in log_text.splitlines():
        if STOPPING in line:
            break
        match = LOG_LINE.match(line)
        if (
            (match and match["level"] not in ("DEBUG", "INFO"))
            or "Traceback" in line
            or "Kafka cannot be reached" in line
        ):
            trouble.append(line)
    return trouble


def test_stream_survives_a_broker_killed_and_restarted(
    tmp_path: Path, cluster: kafka_cluster.ClusterStatus
) -> None:
    print(f"{time.strftime('%H:%M:%S')} cluster started")
    started = time.monotonic()
    bootstrap = cluster.bootstrap
    assert bootstrap is not None and len(bootstrap.split(",")) == BROKERS
    assert kafka_service.create_topic(bootstrap, TOPIC, partitions=PARTITIONS)
    layout = partitions_of(bootstrap, TOPIC)
    assert [sorted(p["replica_nodes"]) for p in layout] == [[1, 2, 3]] * PARTITIONS

    conf_path = write_stream_conf(
        tmp_path, bootstrap=bootstrap, topic=TOPIC, landing=tmp_path / "landing"
    )
    config = load_config(conf_path)
    lakehouse = Lakehouse(config.lakehouse.root)
    publisher = Publisher(config.sources.kafka)
    publisher.start()

    log_path = tmp_path / "speed.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("lambda-sales")),
                "speed",
                "--conf",
                str(conf_path),
                "--trigger",
                "1 second",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )

        def running() -> None:
            assert proc.poll() is None, "the stream stopped:\n" + log_path.read_text()[-3000:]

        def caught_up(events: list[dict[str, Any]]) -> Callable[[], bool]:
            """Whether the stream has ingested ``events`` (and at least one event)."""
            wanted = {e["event_id"] for e in events}

            def check() -> bool:
                running()
                ingested = set(master_ids(lakehouse))
                return bool(ingested) and wanted <= ingested

            return check

        try:
            wait_until(caught_up([]), "the stream's first micro-batch", timeout=240)

            # SIGKILL the leader of partition 0 while the producer and the stream run.
            victim = partitions_of(bootstrap, TOPIC)[0]["leader_id"]
            pid = kafka_cluster.cluster_status(cluster.data_dir).node(victim).pid
            assert pid is not None
            chunks_at_kill, _ = publisher.published()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not process_matches(pid, "kafka.Kafka"), "the kill", timeout=30)

            # The controller fences the dead broker: it leaves every in-sync replica set, and
            # acks=all writes go on with min.insync.replicas = 2.
            wait_until(
                lambda: all(victim not in p["isr_nodes"] for p in partitions_of(bootstrap, TOPIC)),
                "the dead broker to leave the in-sync replicas",
                timeout=60,
            )
            down = partitions_of(bootstrap, TOPIC)
            assert all(p["leader_id"] not in (victim, -1) for p in down), down
            assert all(len(p["isr_nodes"]) == BROKERS - 1 for p in down), down
            wait_until(
                lambda: publisher.published()[0] >= chunks_at_kill + 3,
                "publishing on two brokers",
                timeout=60,
            )
            _, while_down = publisher.published()
            # A leader's loss pauses the stream about 15 s (speed_layer.source.CLIENT_TIMEOUTS),
            # not the minute Spark's offset fetch would otherwise wait on the dead broker.
            wait_until(caught_up(while_down), "the stream to read on two brokers", timeout=50)
            assert not process_matches(pid, "kafka.Kafka")

            # The node starts again on its ports with its data, and catches up.
            restarted = kafka_cluster.start_cluster(
                kafka_cluster.ports_of(cluster),
                data_dir=cluster.data_dir,
                jvm_options=BROKER_JAVA_OPTIONS,
            )
            print(f"{time.strftime('%H:%M:%S')} broker {victim} restarted")
            assert restarted.running and restarted.node(victim).pid not in (None, pid)
            wait_until(
                lambda: all(
                    sorted(p["isr_nodes"]) == [1, 2, 3] for p in partitions_of(bootstrap, TOPIC)
                ),
                "the restarted broker back in every in-sync replica set",
                timeout=90,
            )
            chunks_back, _ = publisher.published()
            wait_until(
                lambda: publisher.published()[0] >= chunks_back + 2,
                "publishing on three brokers again",
                timeout=60,
            )
            publisher.finish()
            _, published = publisher.published()
            wait_until(caught_up(published), "the stream to read everything", timeout=120)
            running()
        finally:
            publisher.stopping.set()
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        ended = wait_for_exit(proc, timeout=120)
    assert ended.returncode == 0, log_path.read_text()[-3000:]

    # The job never failed nor restarted its query: no warning, no error until it was stopped.
    log_text = log_path.read_text()
    assert STOPPING in log_text
    assert trouble_before_stop(log_text) == []
    assert log_text.count('"event": "speed_micro_batch"') >= 3

    # Every published event is in the master dataset once and counted once in every view.
    ids = master_ids(lakehouse)
    assert len(ids) == len(set(ids)), "an event is in the master dataset twice"
    assert set(ids) == {e["event_id"] for e in published}
    assert len(published) > len(set(ids)), "no event was published twice"
    fast = FastServing(lakehouse.root)
    assert {name: rows_to_view(fast.rows(name), name) for name in VIEWS} == compute_views(published)
    # Every rejected record reached the dead-letter topic (at least once).
    dead_letters = consume_all(bootstrap, config.sources.kafka.dlq_topic, len(publisher.rejected))
    assert {m.key.decode() for m in dead_letters} == set(publisher.rejected)
    assert all(
        sorted(p["replica_nodes"]) == [1, 2, 3]
        for p in partitions_of(bootstrap, config.sources.kafka.dlq_topic)
    )
    print(f"kafka cluster test: {time.monotonic() - started:.1f} s after the cluster started")
