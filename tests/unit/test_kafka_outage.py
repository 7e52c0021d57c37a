"""How the streaming job waits out an unreachable Kafka (``speed.broker_outage_seconds``):
which failures are retried, how long apart, and when the run fails."""

from __future__ import annotations

import pytest

from speed_layer.job import KafkaOutage, kafka_unreachable

pytestmark = pytest.mark.unit

TIMEOUT = RuntimeError(
    "[STREAM_FAILED] Query terminated with exception: "
    "org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node assignment."
)
DATA_LOSS = RuntimeError(
    "[STREAM_FAILED] Partition sales-0's offset was changed from 78 to 0, some data may have "
    "been missed. Some data may have been lost because they are not available in Kafka any "
    "more; either the data was aged out by Kafka or the topic may have been deleted"
)


def test_only_an_unreachable_cluster_is_retried() -> None:
    assert kafka_unreachable(TIMEOUT)
    assert kafka_unreachable(RuntimeError("Timeout of 60000ms expired before the position"))
    assert not kafka_unreachable(DATA_LOSS)
    assert not kafka_unreachable(ValueError("the views do not balance"))
    outage = KafkaOutage(300)
    assert outage.retry_after(DATA_LOSS, batches_done=3) is None


def test_retries_back_off_and_stop_at_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("speed_layer.job.time.monotonic", lambda: clock[0])
    outage = KafkaOutage(60)
    delays = []
    while (delay := outage.retry_after(TIMEOUT, batches_done=5)) is not None:
        delays.append(delay)
        clock[0] += delay
    assert delays[:6] == [1, 2, 4, 8, 16, 29]  # the last one cut to what is left of the window
    assert sum(delays) == 60
    assert "broker_outage_seconds" in str(outage.failure(TIMEOUT, "127.0.0.1:9092"))


def test_a_finished_micro_batch_starts_a_new_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("speed_layer.job.time.monotonic", lambda: clock[0])
    outage = KafkaOutage(10)
    assert outage.retry_after(TIMEOUT, batches_done=1) == 1
    clock[0] += 9
    assert outage.retry_after(TIMEOUT, batches_done=2) == 1  # progress since: a fresh window
    clock[0] += 11
    assert outage.retry_after(TIMEOUT, batches_done=2) is None


def test_a_window_of_zero_fails_at_once() -> None:
    assert KafkaOutage(0).retry_after(TIMEOUT, batches_done=0) is None
