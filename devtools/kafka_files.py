"""The Kafka broker's files: its jars and what its data directory holds.

The jars are resolved from Maven Central with Maven once and cached under
``.cache/kafka/<version>/libs``; after that, starting a broker never touches the network.
A data directory holds the broker's ``server.properties`` and log4j2 settings (rewritten on
every start), its cluster id (made once) and its formatted KRaft storage.
:mod:`devtools.kafka` runs the broker over these files; :mod:`devtools.kafka_cluster` runs
several, one data directory each, with :func:`quorum_voters` and :func:`replication` saying
how they form one cluster.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.processes import CACHE_ROOT, ServiceError, file_lock, last_line, require_tool

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
SCALA_BINARY = "2.13"
#: Kafka 4.x logs through SLF4J 1.7; without this bridge to its log4j2 the broker is silent.
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
KAFKA_HOME = CACHE_ROOT / "kafka"
#: The KRaft controller listens on ``port + CONTROLLER_PORT_OFFSET`` (10092 for 9092).
CONTROLLER_PORT_OFFSET = 1000
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>lambda-sales.devservices</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


LOG4J2_PROPERTIES = """\
# Written by devtools.kafka_files: broker logs go to stdout (kafka.log in the data dir).
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


@dataclass(frozen=True)
class Layout:
    """The files the broker keeps in its data directory."""

    data_dir: Path

    @property
    def props(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.data_dir / "log4j2.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "kraft-logs"

    @property
    def cluster_id(self) -> Path:
        return self.data_dir / "cluster.id"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "kafka.log"

    @property
    def lock(self) -> Path:
        return self.data_dir / ".lock"


def ensure_libs(version: str = KAFKA_VERSION) -> Path:
    """Resolve the broker jars from Maven Central once and return the cached ``libs`` dir.

    The ``MANIFEST`` file is written last, so an interrupted download is simply redone.

    Args:
        version: The Apache Kafka version.

    Raises:
        ServiceError: If Maven is missing or the resolution fails.
    """
    home = KAFKA_HOME / version
    libs = home / "libs"
    manifest = libs / "MANIFEST"
    if manifest.is_file():
        return libs
    with file_lock(home / ".lock"):
        if manifest.is_file():  # another process finished the download meanwhile
            return libs
        mvn = require_tool("mvn", "maven")
        logger.info("downloading Apache Kafka %s from Maven Central (first run only)", version)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="libs-", dir=home) as tmp:
            work = Path(tmp)
            (work / "pom.xml").write_text(
                _POM.format(scala=SCALA_BINARY, kafka=version, log4j=LOG4J_VERSION)
            )
            jars = work / "libs"
            command = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(work / "pom.xml"),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={jars}",
                "-DincludeScope=runtime",
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0 or not any(jars.glob("kafka_*.jar")):
                reason = last_line(result.stdout + result.stderr)
                raise ServiceError(f"Maven could not resolve Apache Kafka {version}: {reason}")
            shutil.rmtree(libs, ignore_errors=True)
            jars.rename(libs)
        names = sorted(p.name for p in libs.glob("*.jar"))
        (libs / "MANIFEST").write_text("\n".join(names) + "\n")
        logger.info(
            "cached %d Kafka jars in %s (%.0f s)", len(names), libs, time.monotonic() - started
        )
    return libs


def java_executable() -> str:
    """``$JAVA_HOME/bin/java``, else ``java`` on PATH (installed with apt-get if missing)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return require_tool("java", "openjdk-17-jre-headless")


@dataclass(frozen=True)
class Replication:
    """How a cluster of a given size replicates: topics, internal topics and acknowledgements.

    Attributes:
        factor: Replicas of every partition (``default.replication.factor`` and the internal
            topics' replication factors).
        min_insync: Replicas that must hold a write before an ``acks=all`` producer is
            answered (``min.insync.replicas``, ``transaction.state.log.min.isr``).
    """

    factor: int
    min_insync: int


def replication(brokers: int) -> Replication:
    """The replication of a cluster of ``brokers`` nodes: three replicas at most, and writes
    acknowledged by all but one of them, so one broker can be lost without losing a write
    or refusing one.

    Raises:
        ValueError: ``brokers`` is below 1.
    """
    if brokers < 1:
        raise ValueError(f"a Kafka cluster needs at least one broker, not {brokers}")
    factor = min(3, brokers)
    return Replication(factor=factor, min_insync=max(1, factor - 1))


def quorum_voters(host: str, ports: Sequence[int]) -> str:
    """``controller.quorum.voters`` of a cluster whose node ``i`` (1-based) has client port
    ``ports[i-1]``: ``1@host:port1+1000,2@host:port2+1000,…``."""
    return ",".join(
        f"{node_id}@{host}:{port + CONTROLLER_PORT_OFFSET}"
        for node_id, port in enumerate(ports, start=1)
    )


def server_properties(
    layout: Layout,
    host: str,
    port: int,
    *,
    node_id: int = 1,
    voters: str | None = None,
    brokers: int = 1,
) -> str:
    """The settings of one node that is broker and controller, on ``host:port`` and the
    controller on ``port + CONTROLLER_PORT_OFFSET``, for one machine's tests.

    Args:
        layout: The node's data directory.
        host: Address to listen on and advertise.
        port: The node's client port.
        node_id: The node's id in the cluster (1 for a single broker).
        voters: The cluster's :func:`quorum_voters` (default: this node alone).
        brokers: The cluster's size; above 1, every topic, the internal ones too, is
            replicated as :func:`replication` says.
    """
    controller = f"{host}:{port + CONTROLLER_PORT_OFFSET}"
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        # A static quorum: the voters are taken from this file on every start, so the broker
        # can be restarted on another port with the same data.
        "controller.quorum.voters": voters or f"{node_id}@{controller}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(layout.log_dirs),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        # The default of 50 partitions makes the first consumer group noticeably slow to join.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "message.max.bytes": str(MAX_MESSAGE_BYTES),
        "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
        "socket.request.max.bytes": str(4 * MAX_MESSAGE_BYTES),
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    if brokers > 1:
        copies = replication(brokers)
        factor, min_insync = str(copies.factor), str(copies.min_insync)
        settings.update(
            {
                "default.replication.factor": factor,
                "min.insync.replicas": min_insync,
                "offsets.topic.replication.factor": factor,
                "transaction.state.log.replication.factor": factor,
                "transaction.state.log.min.isr": min_insync,
                "share.coordinator.state.topic.replication.factor": factor,
                "share.coordinator.state.topic.min.isr": min_insync,
                # Kafka's default, stated: only an in-sync replica may become leader, so an
                # acknowledged write survives the loss of its leader.
                "unclean.leader.election.enable": "false",
            }
        )
    lines = ["# Written by devtools.kafka_files on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def configured_bootstrap(layout: Layout) -> str | None:
    """The advertised ``host:port`` in the broker's current server.properties."""
    with contextlib.suppress(OSError):
        for line in layout.props.read_text().splitlines():
            if line.startswith("advertised.listeners="):
                return line.split("//", 1)[1].split(",", 1)[0]
    return None


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A cluster id in Kafka's Uuid format that never starts with ``-``.

    Kafka's own ``Uuid.randomUuid`` draws again for an id starting with ``-`` because the
    storage tool's argument parser reads ``--cluster-id -abc…`` as a missing value followed by
    an option; one random id in 64 starts with it.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _cluster_id(layout: Layout) -> str:
    """The data directory's stable cluster id (created once, in Kafka's Uuid format).

    A stored id starting with ``-`` (written by an older version, never accepted by the
    storage tool, so no log directory was formatted with it) is replaced.
    """
    if layout.cluster_id.is_file():
        stored = layout.cluster_id.read_text().strip()
        if stored and not stored.startswith("-"):
            return stored
    cluster_id = new_cluster_id()
    layout.cluster_id.write_text(cluster_id + "\n")
    return cluster_id


def format_storage(java: str, libs: Path, layout: Layout, cluster_id: str | None = None) -> None:
    """Format the KRaft log directory once (``kafka-storage.sh format``).

    Args:
        java: The ``java`` executable.
        libs: The broker's jars.
        layout: The node's data directory (its ``server.properties`` already written).
        cluster_id: The id every node of a cluster shares (default: the data directory's own,
            made once).
    """
    if (layout.log_dirs / "meta.properties").is_file():
        return
    if cluster_id is not None:
        layout.cluster_id.write_text(cluster_id + "\n")
    command = [
        java,
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={layout.log4j}",
        "-cp",
        f"{libs}/*",
        STORAGE_TOOL_CLASS,
        "format",
        "--config",
        str(layout.props),
        "--cluster-id",
        _cluster_id(layout),
        "--ignore-formatted",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(
            f"formatting Kafka storage failed: {last_line(result.stdout + result.stderr)}"
        )
