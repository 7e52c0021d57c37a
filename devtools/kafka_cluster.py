"""A real Apache Kafka cluster of several brokers (KRaft) on this machine, for development
and the tests of what a broker loss does.

Every node is broker and controller (combined mode), with a static controller quorum of
all of them (``controller.quorum.voters``), its own data directory ``node-<id>`` under the
cluster's, its own client port and its controller port 1000 above it. The nodes are the
brokers of :mod:`devtools.kafka` (same jars, same launch, same files), formatted with one
cluster id and replicated as :func:`devtools.kafka_files.replication` says: three replicas of
every topic, writes acknowledged by two (``min.insync.replicas``), so one broker can be
lost::

    from devtools import kafka_cluster

    cluster = kafka_cluster.start_cluster(kafka_cluster.consecutive_ports(19092, 3))
    cluster.bootstrap                  # "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    kafka_cluster.stop_cluster()

Starting is idempotent: it starts the nodes that are not running (a killed one rejoins) and
returns once every node answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devtools import kafka
from devtools.kafka_files import (
    CONTROLLER_PORT_OFFSET,
    KAFKA_HOME,
    KAFKA_VERSION,
    LOG4J2_PROPERTIES,
    Layout,
    configured_bootstrap,
    ensure_libs,
    format_storage,
    java_executable,
    new_cluster_id,
    quorum_voters,
    server_properties,
)
from devtools.processes import PortInUseError, ServiceError, file_lock, port_open

logger = logging.getLogger(__name__)

DEFAULT_CLUSTER_DIR = KAFKA_HOME / "cluster"
DEFAULT_BROKERS = 3
CLUSTER_ID_FILE = "cluster.id"
NODE_PREFIX = "node-"


@dataclass(frozen=True)
class NodeStatus:
    """One node of the cluster.

    Attributes:
        node_id: Its ``node.id`` (1-based).
        running: True if its process is alive.
        pid: Its process id (None when stopped).
        address: The ``host:port`` it advertises (None before its first start).
        data_dir: Its data directory.
    """

    node_id: int
    running: bool
    pid: int | None
    address: str | None
    data_dir: Path

    def __str__(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return f"  broker {self.node_id}: {state} on {self.address}, data in {self.data_dir}"


@dataclass(frozen=True)
class ClusterStatus:
    """The nodes of a cluster's data directory, in node id order.

    Attributes:
        data_dir: The cluster's data directory (a ``node-<id>`` directory per node).
        nodes: Each node's status.
    """

    data_dir: Path
    nodes: tuple[NodeStatus, ...]

    @property
    def running(self) -> bool:
        """True if every node runs."""
        return bool(self.nodes) and all(node.running for node in self.nodes)

    @property
    def bootstrap(self) -> str | None:
        """Every node's ``host:port``, comma-separated: what clients are given."""
        addresses = [node.address for node in self.nodes if node.address]
        return ",".join(addresses) or None

    def node(self, node_id: int) -> NodeStatus:
        """The status of node ``node_id``.

        Raises:
            KeyError: The cluster has no such node.
        """
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"the cluster of {self.data_dir} has no node {node_id}")

    def __str__(self) -> str:
        if not self.nodes:
            return f"kafka cluster: none, data in {self.data_dir}"
        up = sum(node.running for node in self.nodes)
        state = "running" if up == len(self.nodes) else "stopped" if up == 0 else "degraded"
        head = (
            f"kafka cluster: {state}, {up} of {len(self.nodes)} brokers running; "
            f"bootstrap {self.bootstrap}, data in {self.data_dir}"
        )
        return "\n".join([head, *(str(node) for node in self.nodes)])


def consecutive_ports(port: int, brokers: int) -> list[int]:
    """Client ports ``port, port + 1, …`` of ``brokers`` nodes (controllers 1000 above)."""
    if brokers < 1:
        raise ValueError(f"a Kafka cluster needs at least one broker, not {brokers}")
    return [port + i for i in range(brokers)]


def node_dir(cluster_dir: Path, node_id: int) -> Path:
    """The data directory of node ``node_id`` of the cluster in ``cluster_dir``."""
    return cluster_dir / f"{NODE_PREFIX}{node_id}"


def _resolve(data_dir: str | os.PathLike[str] | None) -> Path:
    # Resolved as devtools.kafka does: node command lines name these paths.
    return Path(data_dir or DEFAULT_CLUSTER_DIR).expanduser().resolve()


def _node_ids(cluster_dir: Path) -> list[int]:
    """The ids of the nodes the cluster directory holds."""
    if not cluster_dir.is_dir():
        return []
    ids = [
        int(path.name.removeprefix(NODE_PREFIX))
        for path in cluster_dir.glob(f"{NODE_PREFIX}*")
        if path.is_dir() and path.name.removeprefix(NODE_PREFIX).isdigit()
    ]
    return sorted(ids)


def _node_status(cluster_dir: Path, node_id: int) -> NodeStatus:
    layout = Layout(node_dir(cluster_dir, node_id))
    pid = kafka.running_pid(layout)
    return NodeStatus(
        node_id=node_id,
        running=pid is not None,
        pid=pid,
        address=configured_bootstrap(layout),
        data_dir=layout.data_dir,
    )


def cluster_status(data_dir: str | os.PathLike[str] | None = None) -> ClusterStatus:
    """The status of every node of the cluster in ``data_dir`` (default ``.cache/kafka/cluster``)."""
    cluster_dir = _resolve(data_dir)
    return ClusterStatus(
        data_dir=cluster_dir,
        nodes=tuple(_node_status(cluster_dir, i) for i in _node_ids(cluster_dir)),
    )


def _cluster_id(cluster_dir: Path) -> str:
    """The id every node is formatted with (made once, kept in the cluster directory)."""
    path = cluster_dir / CLUSTER_ID_FILE
    if path.is_file():
        stored = path.read_text().strip()
        if stored:
            return stored
    cluster_id = new_cluster_id()
    path.write_text(cluster_id + "\n")
    return cluster_id


def start_cluster(
    ports: Sequence[int],
    host: str = kafka.DEFAULT_HOST,
    data_dir: str | os.PathLike[str] | None = None,
    timeout: float = kafka.START_TIMEOUT_S,
    jvm_options: Sequence[str] = kafka.JVM_OPTIONS,
) -> ClusterStatus:
    """Start the nodes of the cluster that are not running (idempotent) and return once every
    node answers a topic listing.

    Args:
        ports: The client port of node 1, 2, …; the node count is ``len(ports)``, and a
            cluster keeps it (its controller quorum is formatted into every node).
        host: Address to listen on and advertise.
        data_dir: The cluster's directory (default ``.cache/kafka/cluster``).
        timeout: Seconds to wait for the nodes to become ready.
        jvm_options: Heap and JIT options of the nodes' JVMs (tests that start clusters
            often may trade the brokers' peak speed for a quicker start).

    Returns:
        The cluster's status.

    Raises:
        ServiceError: As :func:`devtools.kafka.start`; also when ``data_dir`` holds a cluster
            of another size or a running node on other ports.
    """
    if len(set(ports)) != len(ports) or not ports:
        raise ValueError(f"one distinct client port per broker, not {list(ports)}")
    cluster_dir = _resolve(data_dir)
    cluster_dir.mkdir(parents=True, exist_ok=True)
    wanted = {i: f"{host}:{port}" for i, port in enumerate(ports, start=1)}
    with file_lock(cluster_dir / ".lock"):
        existing = _node_ids(cluster_dir)
        if existing and existing != sorted(wanted):
            raise ServiceError(
                f"{cluster_dir} holds a cluster of {len(existing)} broker(s), not {len(ports)}; "
                "stop it and remove it, or use another data dir"
            )
        to_start = []
        for node_id, address in wanted.items():
            node = _node_status(cluster_dir, node_id)
            if node.running and node.address != address:
                raise ServiceError(
                    f"broker {node_id} of {cluster_dir} already runs on {node.address}; "
                    "stop the cluster first or use another data dir"
                )
            if not node.running:
                to_start.append(node_id)
        if to_start:
            _start_nodes(cluster_dir, host, list(ports), to_start, timeout, jvm_options)
        for node_id, address in wanted.items():  # the nodes that ran already answer too
            node = _node_status(cluster_dir, node_id)
            if node.pid is not None and node_id not in to_start:
                kafka.wait_until_ready(node.pid, Layout(node.data_dir), address, timeout)
        return cluster_status(cluster_dir)


def _start_nodes(
    cluster_dir: Path,
    host: str,
    ports: list[int],
    node_ids: list[int],
    timeout: float,
    jvm_options: Sequence[str],
) -> None:
    """Write, format and launch the nodes ``node_ids`` together (a node answers only once a
    majority of the quorum runs), then wait for each; a node a signal from outside kills
    while it starts is launched again, as :func:`devtools.kafka.start` does."""
    for node_id in node_ids:
        port = ports[node_id - 1]
        for busy in (port, port + CONTROLLER_PORT_OFFSET):
            if port_open(host, busy):
                raise PortInUseError(
                    f"port {host}:{busy} is in use by another program, not broker {node_id} "
                    f"of {cluster_dir}"
                )
    java = java_executable()
    libs = ensure_libs()
    cluster_id = _cluster_id(cluster_dir)
    voters = quorum_voters(host, ports)
    commands: dict[int, tuple[Layout, list[str]]] = {}
    for node_id in node_ids:
        layout = Layout(node_dir(cluster_dir, node_id))
        layout.data_dir.mkdir(parents=True, exist_ok=True)
        layout.props.write_text(
            server_properties(
                layout, host, ports[node_id - 1], node_id=node_id, voters=voters, brokers=len(ports)
            )
        )
        layout.log4j.write_text(LOG4J2_PROPERTIES)
        commands[node_id] = (layout, kafka.broker_command(java, libs, layout, jvm_options))
    # One storage tool JVM per node, side by side: a few seconds each, mostly its start-up.
    with ThreadPoolExecutor(max_workers=len(node_ids)) as pool:
        formatted = [
            pool.submit(format_storage, java, libs, layout, cluster_id)
            for layout, _ in commands.values()
        ]
    for done in formatted:
        done.result()

    logger.info(
        "starting Kafka %s broker(s) %s of %d on %s (data in %s)",
        KAFKA_VERSION,
        ",".join(map(str, node_ids)),
        len(ports),
        host,
        cluster_dir,
    )
    started = time.monotonic()
    processes = {i: kafka.launch(commands[i][1], commands[i][0]) for i in node_ids}
    try:
        for node_id in node_ids:
            layout, command = commands[node_id]
            address = f"{host}:{ports[node_id - 1]}"
            for attempt in range(1, kafka.START_ATTEMPTS + 1):
                process = processes[node_id]
                try:
                    left = max(timeout - (time.monotonic() - started), 1.0)
                    kafka.wait_until_ready(process.pid, layout, address, left, process)
                    break
                except kafka.BrokerExited as exited:
                    if exited.signal_number is None or attempt == kafka.START_ATTEMPTS:
                        raise
                    logger.warning(
                        "broker %d %s; starting it again (attempt %d)", node_id, exited, attempt + 1
                    )
                    processes[node_id] = kafka.launch(command, layout)
    except ServiceError:
        _stop_nodes([node_dir(cluster_dir, i) for i in node_ids], timeout=10.0)
        raise
    logger.info(
        "Kafka broker(s) %s ready in %.1f s",
        ",".join(map(str, node_ids)),
        time.monotonic() - started,
    )


def _stop_nodes(node_dirs: list[Path], timeout: float) -> None:
    """SIGTERM every running node at once (a node shutting down alone waits for a quorum the
    others may already have left), then stop each: SIGKILL for one still there at the end."""
    for path in node_dirs:
        pid = kafka.running_pid(Layout(path))
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for path in node_dirs:
        kafka.stop(data_dir=path, timeout=max(deadline - time.monotonic(), 1.0))


def stop_cluster(
    data_dir: str | os.PathLike[str] | None = None, timeout: float = kafka.STOP_TIMEOUT_S
) -> ClusterStatus:
    """Stop every node of the cluster (idempotent): SIGTERM, then SIGKILL after ``timeout``.

    Args:
        data_dir: The cluster's directory (default ``.cache/kafka/cluster``).
        timeout: Seconds to wait for a clean shutdown of all nodes.

    Returns:
        The (stopped) status.
    """
    cluster_dir = _resolve(data_dir)
    if not cluster_dir.is_dir():
        return cluster_status(cluster_dir)
    with file_lock(cluster_dir / ".lock"):
        nodes = [node_dir(cluster_dir, i) for i in _node_ids(cluster_dir)]
        logger.info("stopping the Kafka cluster of %s", cluster_dir)
        _stop_nodes(nodes, timeout)
    return cluster_status(cluster_dir)


def free_cluster_ports(brokers: int, host: str = kafka.DEFAULT_HOST) -> list[int]:
    """Client ports for ``brokers`` nodes that nothing uses right now, nor their controller
    ports (each ``+1000``), all distinct."""
    ports: list[int] = []
    while len(ports) < brokers:
        port = kafka.free_broker_port(host)
        taken = {*ports, *(p + CONTROLLER_PORT_OFFSET for p in ports)}
        if port not in taken and port + CONTROLLER_PORT_OFFSET not in taken:
            ports.append(port)
    return ports


def start_cluster_on_free_ports(
    data_dir: str | os.PathLike[str],
    brokers: int = DEFAULT_BROKERS,
    host: str = kafka.DEFAULT_HOST,
    attempts: int = 5,
    jvm_options: Sequence[str] = kafka.JVM_OPTIONS,
) -> ClusterStatus:
    """Start a cluster of ``brokers`` nodes in ``data_dir`` on ports nothing uses, for the
    tests and benchmarks. :func:`start_cluster` with the ports of the returned ``bootstrap``
    starts the same nodes again (one killed, or all after a :func:`stop_cluster`).

    Raises:
        ServiceError: As :func:`start_cluster`; PortInUseError after ``attempts`` taken ports.
    """
    for _ in range(attempts - 1):
        with contextlib.suppress(PortInUseError):
            return start_cluster(
                free_cluster_ports(brokers, host),
                host=host,
                data_dir=data_dir,
                jvm_options=jvm_options,
            )
    return start_cluster(
        free_cluster_ports(brokers, host), host=host, data_dir=data_dir, jvm_options=jvm_options
    )


def ports_of(status: ClusterStatus) -> list[int]:
    """The client ports of the cluster's nodes, in node order (to start it again)."""
    return [int(node.address.rsplit(":", 1)[1]) for node in status.nodes if node.address]
