"""kafka-python clients: topic creation and latest offsets (for the lag metric).

Spark reads and writes the topics itself (:mod:`speed_layer.source`, :mod:`speed_layer.sink`);
these small clients do what Spark does not: create a missing topic and ask for the latest
offsets. :func:`client_options` is the one place kafka-python's connection settings
(SASL included) are built from the configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sales_core.config import KafkaSourceConf
from sales_core.errors import SourceError

log = logging.getLogger(__name__)

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
        if topic in set(admin.list_topics()):
            return False
        brokers = len(admin.describe_cluster().get("brokers", [])) or 1
        admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=min(3, brokers))],
            wait_for_metadata=True,
        )
        log.info("created Kafka topic %s with %d partition(s)", topic, partitions)
        return True
    except TopicAlreadyExistsError:
        return False
    except KafkaError as exc:
        raise unreachable(conf, exc) from None
    finally:
        admin.close()


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
