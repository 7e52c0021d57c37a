"""kafka-python clients: topic creation and latest offsets (for the lag metric).

Spark reads and writes the topics itself (:mod:`speed_layer.source`, :mod:`speed_layer.sink`);
these small clients do what Spark does not: create a missing topic and ask for the latest
offsets. :func:`client_options` is the one place kafka-python's connection settings
(SASL included) are built from the configuration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sales_core.config import KafkaSourceConf
from sales_core.errors import SourceError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Values up to the dev broker's message.max.bytes (8 MB) plus headers.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def client_options(conf: KafkaSourceConf) -> dict[str, Any]:
    """Connection settings for kafka-python clients (holds the SASL password: never log)."""
    options: dict[str, Any] = {
        "bootstrap_servers": conf.bootstrap_servers.split(","),
        "security_protocol": conf.security_protocol,
    }
    if conf.security_protocol.upper().startswith("SASL"):
        options.update(
            sasl_mechanism=conf.sasl_mechanism or "PLAIN",
            sasl_plain_username=conf.sasl_username,
            sasl_plain_password=conf.sasl_password.get(),
        )
    return options


def unreachable(conf: KafkaSourceConf, exc: BaseException) -> SourceError:
    """The one-line error for brokers a kafka-python client could not reach."""
    name, text = type(exc).__name__, str(exc)
    reason = text if text.startswith(name) else f"{name}: {text}"
    return SourceError(f"cannot reach Kafka at {conf.bootstrap_servers}: {reason}".rstrip(": "))


def ensure_topic(conf: KafkaSourceConf, topic: str, *, partitions: int) -> bool:
    """Create ``topic`` unless it exists; returns True when it was created.

    The replication factor is the cluster's broker count, capped at 3.

    Raises:
        SourceError: the brokers cannot be reached.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(client_id="lambda-sales-admin", **client_options(conf))
    except KafkaError as exc:
        raise unreachable(conf, exc) from None
    try:
        if topic in set(with_failover(conf, admin.list_topics)):
            return False
        cluster = with_failover(conf, admin.describe_cluster)
        brokers = len(cluster.get("brokers", [])) or 1
        with_failover(
            conf,
            lambda: admin.create_topics(
                [NewTopic(topic, num_partitions=partitions, replication_factor=min(3, brokers))],
                wait_for_metadata=True,
            ),
        )
        log.info("created Kafka topic %s with %d partition(s)", topic, partitions)
        return True
    except TopicAlreadyExistsError:
        return False
    except KafkaError as exc:
        raise unreachable(conf, exc) from None
    finally:
        admin.close()


#: How long an admin request is tried again on other brokers of a cluster.
FAILOVER_SECONDS = 15.0


def with_failover(conf: KafkaSourceConf, request: Callable[[], T]) -> T:
    """``request()`` (one kafka-python admin request), tried again while it fails on a
    broker that cannot be reached, when the cluster has others.

    kafka-python sends an admin request to one broker of its metadata, picked at random
    among those not in a reconnect backoff, and fails with that broker's error; a dead broker
    stays in the metadata until the controller fences it (``broker.session.timeout.ms``). So
    with one broker of three down, a third of the requests would fail. With a single
    bootstrap server the request is tried once.

    Raises:
        KafkaError: not retriable, or still failing after :data:`FAILOVER_SECONDS`.
    """
    from kafka.errors import KafkaError

    deadline = time.monotonic() + FAILOVER_SECONDS
    several = len(conf.bootstrap_servers.split(",")) > 1
    while True:
        try:
            return request()
        except KafkaError as exc:
            if not (several and exc.retriable) or time.monotonic() > deadline:
                raise
            log.debug("Kafka admin request failed (%s); trying another broker", exc)
            time.sleep(0.2)


class LatestOffsets:
    """Asks the brokers for a topic's latest offsets; one consumer, reused, closed at the end."""

    def __init__(self, conf: KafkaSourceConf) -> None:
        self._conf = conf
        self._consumer: Any = None

    def __call__(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """The latest offset (offset of the next message) of each partition of ``topic``."""
        from kafka import KafkaConsumer, TopicPartition

        if self._consumer is None:
            self._consumer = KafkaConsumer(
                client_id="lambda-sales-speed-lag",
                enable_auto_commit=False,
                **client_options(self._conf),
            )
        wanted = [TopicPartition(topic, p) for p in sorted(set(partitions))]
        if not wanted:
            return {}
        ends = self._consumer.end_offsets(wanted, timeout_ms=5_000)
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
