"""A real single-node Apache Kafka broker (KRaft mode) for development and the tests.

Its jars and the files of its data directory are :mod:`devtools.kafka_files`' job; after the
first start, starting a broker never touches the network. The broker runs detached (it
survives the Python process that started it) and keeps its configuration, logs, pid file and
cluster id in ``data_dir``::

    from devtools import kafka

    kafka.start(port=19092)            # idempotent; returns once topics can be listed
    kafka.create_topic("127.0.0.1:19092", "sales-events", partitions=3)
    kafka.stop()

:mod:`devtools.kafka_cluster` runs several such brokers as one cluster with the same
launching and waiting. Only ``kafka-python`` is imported, and only by the functions that
talk to the broker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    replication,
    server_properties,
)
from devtools.processes import (
    PortInUseError,
    ServiceError,
    file_lock,
    free_port,
    log_tail,
    port_free,
    port_open,
    process_matches,
    read_pid,
    terminate,
)

logger = logging.getLogger(__name__)


DEFAULT_DATA_DIR = KAFKA_HOME / "data"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9092
START_TIMEOUT_S = 90.0
#: Launches tried when a signal from outside kills the broker while it starts.
START_ATTEMPTS = 3
STOP_TIMEOUT_S = 30.0
JVM_OPTIONS = ("-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError")
MAIN_CLASS = "kafka.Kafka"

#: Brokers started by this process. Holding on to the Popen objects keeps Python from
#: warning that they are "still running" when they are garbage collected.
_launched: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class KafkaStatus:
    """Whether the broker of a data directory is running, and where.

    Attributes:
        running: True if the broker process is alive.
        pid: Its process id (None when stopped).
        bootstrap: ``host:port`` clients connect to (None when stopped).
        data_dir: The broker's data directory.
    """

    running: bool
    pid: int | None
    bootstrap: str | None
    data_dir: Path

    def __str__(self) -> str:
        if self.running:
            return f"kafka: running (pid {self.pid}) on {self.bootstrap}, data in {self.data_dir}"
        return f"kafka: stopped, data in {self.data_dir}"


def _resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    # Resolved always, the default too: the broker's command line names this path, and a
    # later status() must find it there whichever spelling (a symlinked .cache) it is given.
    return Path(data_dir or DEFAULT_DATA_DIR).expanduser().resolve()


# --------------------------------------------------------------------------------------
# Broker lifecycle
# --------------------------------------------------------------------------------------


def running_pid(layout: Layout) -> int | None:
    """The pid of this data directory's broker if it is alive, else None."""
    pid = read_pid(layout.pid_file)
    if pid is not None and process_matches(pid, str(layout.props)):
        return pid
    return None


def _broker_responds(bootstrap: str) -> bool:
    """Whether a kafka-python client can connect and list topics."""
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="lambda-sales-devservices",
            request_timeout_ms=5000,
        )
    except Exception:  # NoBrokersAvailable and friends: not ready yet
        return False
    try:
        admin.list_topics()
        return True
    except Exception:  # request timeouts while the broker is still starting
        return False
    finally:
        admin.close()


class BrokerExited(ServiceError):
    """The broker ended before it became ready; ``signal_number`` says which signal killed it."""

    def __init__(self, message: str, signal_number: int | None) -> None:
        super().__init__(message)
        self.signal_number = signal_number


def _exit_description(process: subprocess.Popen[bytes] | None) -> tuple[str, int | None]:
    """How a launched broker ended, e.g. ``"killed by SIGKILL"`` or ``"exit status 1"``."""
    code = process.poll() if process is not None else None
    if code is None:
        return "exited", None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}", -code
    return f"exited with status {code}", None


def wait_until_ready(
    pid: int,
    layout: Layout,
    bootstrap: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Return once the broker of ``layout`` (process ``pid``) answers on ``bootstrap``.

    Raises:
        BrokerExited: The process ended first.
        ServiceError: It did not answer within ``timeout`` seconds.
    """
    host, port = bootstrap.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Our own child: poll() keeps its exit status (process_matches would reap it unseen).
        alive = (
            process.poll() is None
            if process is not None
            else process_matches(pid, str(layout.props))
        )
        if not alive:
            how, signal_number = _exit_description(process)
            raise BrokerExited(
                f"Kafka broker {how} during start-up; log tail: {log_tail(layout.log_file)}",
                signal_number,
            )
        if port_open(host, int(port)) and _broker_responds(bootstrap):
            return
        time.sleep(0.5)
    raise ServiceError(
        f"Kafka broker not ready on {bootstrap} after {timeout:.0f} s; "
        f"log tail: {log_tail(layout.log_file)}"
    )


def start(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    data_dir: str | os.PathLike[str] | None = None,
    timeout: float = START_TIMEOUT_S,
    jvm_options: Sequence[str] = JVM_OPTIONS,
) -> KafkaStatus:
    """Start the broker (idempotent) and return once it answers a topic listing.

    Args:
        host: Address to listen on and advertise.
        port: Client (PLAINTEXT) port; the controller uses ``port + 1000``.
        data_dir: Configuration, logs and topic data (default ``.cache/kafka/data``).
        timeout: Seconds to wait for the broker to become ready.
        jvm_options: The broker JVM's options (heap, collector, compiler).

    Returns:
        The broker's status.

    Raises:
        ServiceError: If Java or Maven is missing, the jars cannot be resolved, a port is
            taken by another program, or the broker does not become ready in time.
    """
    layout = Layout(_resolve_data_dir(data_dir))
    bootstrap = f"{host}:{port}"
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(layout.lock):
        pid = running_pid(layout)
        if pid is not None:
            running_on = configured_bootstrap(layout)
            if running_on != bootstrap:
                raise ServiceError(
                    f"the Kafka broker of {layout.data_dir} already runs on {running_on}; "
                    "stop it first or use another data dir"
                )
            wait_until_ready(pid, layout, bootstrap, timeout)
            logger.info("Kafka broker already running on %s (pid %d)", bootstrap, pid)
            return status(data_dir=layout.data_dir)

        for busy in (port, port + CONTROLLER_PORT_OFFSET):
            if port_open(host, busy):
                raise PortInUseError(
                    f"port {host}:{busy} is in use by another program, not the Kafka broker "
                    f"of {layout.data_dir}"
                )
        java = java_executable()
        libs = ensure_libs()
        layout.props.write_text(server_properties(layout, host, port))
        layout.log4j.write_text(LOG4J2_PROPERTIES)
        format_storage(java, libs, layout)

        command = broker_command(java, libs, layout, jvm_options)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                _launch(command, layout, bootstrap, timeout)
                break
            except BrokerExited as exited:
                # A signal from outside (another program's clean-up, the OOM killer) is not
                # the broker's fault and does not repeat; a broker that fails by itself does.
                if exited.signal_number is None or attempt == START_ATTEMPTS:
                    raise
                logger.warning("%s; starting it again (attempt %d)", exited, attempt + 1)
        return status(data_dir=layout.data_dir)


def free_broker_port(host: str = DEFAULT_HOST) -> int:
    """A client port nothing uses right now whose controller port (``+1000``) is free too."""
    while True:
        port = free_port(host)
        if port + CONTROLLER_PORT_OFFSET <= 65535 and port_free(
            host, port + CONTROLLER_PORT_OFFSET
        ):
            return port


def start_on_free_port(
    data_dir: str | os.PathLike[str],
    host: str = DEFAULT_HOST,
    attempts: int = 5,
    jvm_options: Sequence[str] = JVM_OPTIONS,
) -> KafkaStatus:
    """Start the broker of ``data_dir`` on ports nothing uses, for the tests and benchmarks.

    Several brokers may then run on one machine at once (pytest-xdist workers, other
    checkouts), each with its own data directory. A port another program takes between the
    choice and the start is given up for another one. :func:`start` with the port of the
    returned ``bootstrap`` starts the same broker again after a :func:`stop`.

    Raises:
        ServiceError: As :func:`start`; PortInUseError after ``attempts`` taken ports.
    """
    for _ in range(attempts - 1):
        with contextlib.suppress(PortInUseError):
            return start(
                host=host, port=free_broker_port(host), data_dir=data_dir, jvm_options=jvm_options
            )
    return start(host=host, port=free_broker_port(host), data_dir=data_dir, jvm_options=jvm_options)


def broker_command(
    java: str, libs: Path, layout: Layout, jvm_options: Sequence[str] = JVM_OPTIONS
) -> list[str]:
    """The command line of the broker of ``layout`` (its ``server.properties`` names it)."""
    return [
        java,
        *jvm_options,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={layout.log4j}",
        "-cp",
        f"{libs}/*",
        MAIN_CLASS,
        str(layout.props),
    ]


def launch(command: list[str], layout: Layout) -> subprocess.Popen[bytes]:
    """Run a broker in its own session (it outlives this process), its output in
    ``kafka.log`` and its pid in ``kafka.pid``; returns at once."""
    with layout.log_file.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=layout.data_dir,
            start_new_session=True,
        )
    _launched[process.pid] = process
    layout.pid_file.write_text(f"{process.pid}\n")
    return process


def _launch(command: list[str], layout: Layout, bootstrap: str, timeout: float) -> None:
    """Run the broker in its own session and wait until it answers; stop it if it does not."""
    logger.info("starting Kafka %s on %s (data in %s)", KAFKA_VERSION, bootstrap, layout.data_dir)
    started = time.monotonic()
    process = launch(command, layout)
    try:
        wait_until_ready(process.pid, layout, bootstrap, timeout, process)
    except ServiceError:
        if process.poll() is None:
            terminate(process.pid, str(layout.props), timeout=10.0)
        _launched.pop(process.pid, None)
        layout.pid_file.unlink(missing_ok=True)
        raise
    logger.info("Kafka broker ready on %s in %.1f s", bootstrap, time.monotonic() - started)


def stop(
    data_dir: str | os.PathLike[str] | None = None, timeout: float = STOP_TIMEOUT_S
) -> KafkaStatus:
    """Stop the broker of ``data_dir`` (idempotent): SIGTERM, then SIGKILL after ``timeout``.

    Args:
        data_dir: The broker's data directory (default ``.cache/kafka/data``).
        timeout: Seconds to wait for a clean shutdown.

    Returns:
        The (stopped) status.
    """
    layout = Layout(_resolve_data_dir(data_dir))
    if not layout.data_dir.is_dir():
        return status(data_dir=layout.data_dir)
    with file_lock(layout.lock):
        pid = running_pid(layout)
        if pid is not None:
            logger.info("stopping Kafka broker (pid %d)", pid)
            terminate(pid, str(layout.props), timeout=timeout)
            _launched.pop(pid, None)
        layout.pid_file.unlink(missing_ok=True)
    return status(data_dir=layout.data_dir)


def status(data_dir: str | os.PathLike[str] | None = None) -> KafkaStatus:
    """The status of the broker of ``data_dir`` (default ``.cache/kafka/data``)."""
    layout = Layout(_resolve_data_dir(data_dir))
    pid = running_pid(layout)
    if pid is None:
        return KafkaStatus(running=False, pid=None, bootstrap=None, data_dir=layout.data_dir)
    return KafkaStatus(
        running=True, pid=pid, bootstrap=configured_bootstrap(layout), data_dir=layout.data_dir
    )


# --------------------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------------------


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> bool:
    """Create topic ``name`` if it does not exist yet, with one replica on each broker of the
    cluster, three at most (one on a single broker).

    Args:
        bootstrap: The brokers' ``host:port`` list, comma-separated.
        name: Topic name.
        partitions: Number of partitions for a new topic (an existing one is left as is).

    Returns:
        True if the topic was created, False if it already existed.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="lambda-sales-devservices")
    try:
        brokers = len(admin.describe_cluster().get("brokers", [])) or 1
        copies = replication(brokers).factor
        admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": copies}},
            wait_for_metadata=True,
        )
        logger.info(
            "created topic %s with %d partition(s), %d replica(s) each", name, partitions, copies
        )
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()


def delete_topic(bootstrap: str, name: str) -> bool:
    """Delete topic ``name`` if it exists.

    Returns:
        True if the topic was deleted, False if there was no such topic.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import UnknownTopicOrPartitionError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="lambda-sales-devservices")
    try:
        admin.delete_topics([name])
        logger.info("deleted topic %s", name)
        return True
    except UnknownTopicOrPartitionError:
        return False
    finally:
        admin.close()
