"""kafka-python clients: topic creation, latest offsets (for the lag metric) and publishing.

Spark reads and writes the topics itself (:mod:`speed_layer.source`, :mod:`speed_layer.sink`);
these small clients do what Spark does not: create a missing topic, ask for the latest
offsets, and publish generated sales (``lambda-sales generate --to kafka``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from sales_core.config import KafkaSourceConf
from sales_core.errors import SourceError
from sales_core.generator import to_json_line

log = logging.getLogger(__name__)

# Values up to the dev broker's message.max.bytes (8 MB) plus headers.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
PROGRESS_EVERY = 50_000


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


def _unreachable(conf: KafkaSourceConf, exc: BaseException) -> SourceError:
    return SourceError(
        f"cannot reach Kafka at {conf.bootstrap_servers}: {type(exc).__name__}: {exc}".rstrip(": ")
    )


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
        raise _unreachable(conf, exc) from None
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
        raise _unreachable(conf, exc) from None
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


def publish_records(
    records: Iterable[dict[str, Any] | str],
    conf: KafkaSourceConf,
    *,
    partitions: int,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Publish records to ``conf.topic`` (created if missing); returns how many were sent.

    One JSON object per message, key = ``event_id`` (none for a record without one);
    batched (``linger_ms``, large batches) with ``acks=all``. Returns only once every
    message is acknowledged.

    Raises:
        SourceError: the brokers cannot be reached or a message was not acknowledged.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    ensure_topic(conf, conf.topic, partitions=partitions)
    try:
        producer = KafkaProducer(
            client_id="lambda-sales-generate",
            acks="all",
            linger_ms=20,
            batch_size=512 * 1024,
            max_request_size=MAX_REQUEST_BYTES,
            **client_options(conf),
        )
    except KafkaError as exc:
        raise _unreachable(conf, exc) from None
    failures: list[BaseException] = []
    sent = 0
    started = time.monotonic()
    try:
        for record in records:
            key = record.get("event_id") if isinstance(record, dict) else None
            value = to_json_line(record).encode("utf-8")
            future = producer.send(
                conf.topic, key=None if key is None else str(key).encode("utf-8"), value=value
            )
            future.add_errback(failures.append)
            sent += 1
            if progress and sent % PROGRESS_EVERY == 0:
                rate = sent / max(time.monotonic() - started, 1e-9)
                progress(f"published {sent} records ({rate:,.0f}/s)")
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise SourceError(
            f"{len(failures)} of {sent} messages were not acknowledged by Kafka: {failures[0]}"
        )
    if progress:
        elapsed = time.monotonic() - started
        progress(
            f"published {sent} records to {conf.topic} in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):,.0f}/s)"
        )
    return sent
