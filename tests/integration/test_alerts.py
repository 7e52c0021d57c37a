"""Webhook alerts against real HTTP servers on loopback: one that answers, one that answers 500,
one that never answers in time; and the jobs that send them (batch quality gate, speed lag and
freshness) carrying on regardless.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sales_core import alerts
from sales_core.config import Secret, load_config
from sales_core.errors import QualityGateError
from tests.conftest import write_jsonl
from tests.oracle import event, raw_json


class Webhook:
    """A real HTTP server on 127.0.0.1 that records every POST and answers per a script.

    ``statuses`` are the answers in order (the last one repeats); ``delay`` seconds are slept
    before answering (longer than the client's timeout: a webhook that hangs).
    """

    def __init__(self, statuses: list[int], delay: float = 0.0) -> None:
        self.statuses, self.delay = statuses, delay
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    index = len(webhook.requests)
                    webhook.requests.append(
                        {
                            "path": self.path,
                            "content_type": self.headers.get("Content-Type"),
                            "json": json.loads(body),
                        }
                    )
                    webhook.times.append(time.monotonic())
                if webhook.delay:
                    time.sleep(webhook.delay)
                status = webhook.statuses[min(index, len(webhook.statuses) - 1)]
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"ok" if status < 300 else b"no")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout case)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0/secret-token"

    def kinds(self) -> list[str]:
        return [r["json"]["kind"] for r in self.requests]

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def alerts_conf(url: str, **overrides: Any) -> Any:
    config = load_config(environ={"LAMBDA_SALES__ALERTS__WEBHOOK_URL": url})
    return replace(
        config.alerts, **{"timeout_seconds": 1.0, "retries": 2, "backoff_seconds": 0.2, **overrides}
    )


pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_delivers_slack_compatible_json_with_structured_fields() -> None:
    with Webhook([200]) as hook:
        delivered = alerts.notify(
            alerts_conf(hook.url),
            alerts.RECONCILIATION_DRIFT,
            "sales_daily differs by 3 rows",
            {"view": "sales_daily", "rows": 3},
        )
    assert delivered is True
    assert len(hook.requests) == 1
    request = hook.requests[0]
    assert request["path"] == "/hooks/T0/secret-token"
    assert request["content_type"] == "application/json"
    body = request["json"]
    assert body["text"] == "[lambda-sales] reconciliation_drift: sales_daily differs by 3 rows"
    assert (body["kind"], body["summary"], body["details"], body["source"]) == (
        "reconciliation_drift",
        "sales_daily differs by 3 rows",
        {"view": "sales_daily", "rows": 3},
        "lambda-sales",
    )
    assert body["at"].endswith("+00:00")


def test_500_is_retried_with_exponential_backoff_until_accepted() -> None:
    with Webhook([500, 503, 200]) as hook:
        delivered = alerts.notify(
            alerts_conf(hook.url, retries=3, backoff_seconds=0.3), alerts.JOB_FAILED, "boom"
        )
    assert delivered is True
    assert hook.kinds() == ["job_failed"] * 3
    gaps = [b - a for a, b in zip(hook.times, hook.times[1:], strict=False)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps  # 0.3 s, then 0.6 s


def test_webhook_that_always_fails_gives_up_after_the_retries_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Webhook([500]) as hook:
        delivered = alerts.notify(
            alerts_conf(hook.url, retries=2, backoff_seconds=0.05), alerts.JOB_FAILED, "boom"
        )
    assert delivered is False
    assert len(hook.requests) == 3
    assert "secret-token" not in caplog.text  # the URL is a secret, even in failure logs
    assert "HTTP 500" in caplog.text


def test_client_error_is_not_retried() -> None:
    with Webhook([404]) as hook:
        assert (
            alerts.notify(
                alerts_conf(hook.url, retries=3, backoff_seconds=0.05), alerts.JOB_FAILED, "boom"
            )
            is False
        )
    assert len(hook.requests) == 1


def test_webhook_that_hangs_times_out_each_attempt_and_gives_up() -> None:
    with Webhook([200], delay=3.0) as hook:
        started = time.monotonic()
        delivered = alerts.notify(
            alerts_conf(hook.url, timeout_seconds=0.5, retries=2, backoff_seconds=0.1),
            alerts.JOB_FAILED,
            "boom",
        )
        elapsed = time.monotonic() - started
    assert delivered is False
    assert len(hook.requests) == 3
    assert 1.5 <= elapsed < 3.0, elapsed  # three 0.5 s timeouts and 0.3 s of backoff, not 3 s hangs


def test_unreachable_webhook_and_no_webhook_never_raise() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    conf = alerts_conf(f"http://127.0.0.1:{closed_port}/hook", retries=1, backoff_seconds=0.01)
    assert alerts.notify(conf, alerts.JOB_FAILED, "boom") is False
    assert alerts.notify(replace(conf, webhook_url=Secret("")), alerts.JOB_FAILED, "boom") is False
    assert (
        alerts.notify(replace(conf, webhook_url=Secret("not a url")), alerts.JOB_FAILED, "boom")
        is False
    )


def test_stream_alerts_are_rate_limited_per_kind() -> None:
    now = [1000.0]
    with Webhook([200]) as hook:
        conf = alerts_conf(
            hook.url, max_lag=10, max_freshness_seconds=60.0, min_interval_seconds=300.0
        )
        stream = alerts.StreamAlerts(conf, "speed", clock=lambda: now[0])
        assert stream.observe(0, kafka_lag=5, freshness_ms=1_000) == []
        assert stream.observe(1, kafka_lag=11, freshness_ms=61_000) == [
            "stream_lag",
            "stream_freshness",
        ]
        now[0] += 299
        assert stream.observe(2, kafka_lag=50, freshness_ms=120_000) == []  # within the interval
        now[0] += 2
        assert stream.observe(3, kafka_lag=50, freshness_ms=1_000) == ["stream_lag"]
        assert stream.observe(4, kafka_lag=None, freshness_ms=None) == []
        stream.close()
    assert sorted(hook.kinds()) == ["stream_freshness", "stream_lag", "stream_lag"]
    lag = [r["json"] for r in hook.requests if r["json"]["kind"] == "stream_lag"]
    assert sorted(r["details"]["kafka_lag"] for r in lag) == [11, 50]


# --- the jobs that send them --------------------------------------------------------------


def test_batch_quality_refusal_alerts_even_when_the_webhook_hangs(
    spark, make_config, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from batch_layer.job import run_batch

    write_jsonl(
        tmp_path / "landing" / "part-1.jsonl",
        [raw_json(event("q1", amount="5.00")), "not json", "{}"],
    )
    with Webhook([200], delay=2.0) as hook:
        config = make_config(
            LAMBDA_SALES__QUALITY__MIN_SCORE="99",
            LAMBDA_SALES__ALERTS__WEBHOOK_URL=hook.url,
            LAMBDA_SALES__ALERTS__TIMEOUT_SECONDS="0.5",
            LAMBDA_SALES__ALERTS__RETRIES="1",
            LAMBDA_SALES__ALERTS__BACKOFF_SECONDS="0.1",
        )
        with pytest.raises(QualityGateError, match="below the threshold"):
            run_batch(spark, config)
    assert hook.kinds() == ["quality_below_threshold"] * 2  # the first attempt and one retry
    details = hook.requests[0]["json"]["details"]
    assert (
        details["job"] == "batch"
        and details["min_score"] == 99.0
        and details["quality_score"] < 99.0
    )


def test_speed_job_succeeds_while_freshness_alerts_get_500(
    spark, make_config, kafka_bootstrap: str
) -> None:  # type: ignore[no-untyped-def]
    from kafka import KafkaProducer

    from devtools import kafka as kafka_service
    from speed_layer.job import run_speed

    topic = f"alerts-{uuid.uuid4().hex[:8]}"
    kafka_service.create_topic(kafka_bootstrap, topic, partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        # Message timestamps an hour old: every micro-batch serves stale data.
        old_ms = int((time.time() - 3600) * 1000)
        for i in range(6):
            producer.send(
                topic,
                key=f"f{i}".encode(),
                value=json.dumps(raw_json(event(f"f{i}", amount="1.00"))).encode(),
                timestamp_ms=old_ms,
            )
        producer.flush()
    finally:
        producer.close()
    with Webhook([500]) as hook:
        config = make_config(
            LAMBDA_SALES__SOURCES__KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
            LAMBDA_SALES__SOURCES__KAFKA__TOPIC=topic,
            LAMBDA_SALES__SOURCES__KAFKA__DLQ_TOPIC=f"{topic}-dlq",
            LAMBDA_SALES__SOURCES__KAFKA__MAX_OFFSETS_PER_TRIGGER="2",  # three micro-batches
            LAMBDA_SALES__ALERTS__WEBHOOK_URL=hook.url,
            LAMBDA_SALES__ALERTS__MAX_FRESHNESS_SECONDS="60",
            LAMBDA_SALES__ALERTS__MAX_LAG="0",
            LAMBDA_SALES__ALERTS__RETRIES="2",
            LAMBDA_SALES__ALERTS__BACKOFF_SECONDS="0.1",
            LAMBDA_SALES__ALERTS__TIMEOUT_SECONDS="1",
        )
        run = run_speed(spark, config, available_now=True)
    assert run.status == "succeeded"
    assert (run.totals.batches, run.totals.valid) == (3, 6)
    # One freshness alert for three stale micro-batches (rate-limited), tried 1 + 2 times.
    assert hook.kinds() == ["stream_freshness"] * 3
    details = hook.requests[0]["json"]["details"]
    assert details["stream"] == "speed" and details["freshness_seconds"] > 3500
