"""Webhook alerts: job failures, the quality gate, reconciliation drift, stream lag and freshness.

One JSON POST an alert, Slack-compatible (``{"text": ...}``, which Slack, Mattermost and
Teams' incoming-webhook shims all show) plus structured fields for anything else that reads
it (``kind``, ``summary``, ``details``, ``at``). An alert is advice about a job, never part of
it: a webhook that is down, slow or answers 500 is retried with exponential backoff, then
logged and dropped. :func:`notify` never raises.

The URL is a secret (``LAMBDA_SALES__ALERTS__WEBHOOK_URL``, environment only): it carries the
channel's token, so it never appears in a log line.

Every alert is also recorded, webhook or not: one row appended with delta-rs to the
lakehouse's ``meta/alerts`` table (:func:`record_alert`), which the console shows. Recording
is as optional as delivery: it never raises, and it never creates a lakehouse that does not
exist yet (an alert about a job that failed before writing anything leaves no trace there).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sales_core.config import AlertsConf, Config
from sales_core.delta_log import local_path

log = logging.getLogger(__name__)

JOB_FAILED = "job_failed"
QUALITY_BELOW_THRESHOLD = "quality_below_threshold"
RECONCILIATION_DRIFT = "reconciliation_drift"
STREAM_LAG = "stream_lag"
STREAM_FRESHNESS = "stream_freshness"
KINDS = (JOB_FAILED, QUALITY_BELOW_THRESHOLD, RECONCILIATION_DRIFT, STREAM_LAG, STREAM_FRESHNESS)

_USER_AGENT = "lambda-sales-alerts/1"


@dataclass(frozen=True)
class Alert:
    """One notification: what happened (``kind``), one line for people, details for machines."""

    kind: str
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def payload(self) -> dict[str, Any]:
        """The JSON body: Slack's ``text`` first, then the structured fields."""
        return {
            "text": f"[lambda-sales] {self.kind}: {self.summary}",
            "source": "lambda-sales",
            "kind": self.kind,
            "summary": self.summary,
            "details": dict(self.details),
            "at": self.at.isoformat(),
        }


def post_alert(
    url: str, alert: Alert, *, timeout_seconds: float, retries: int, backoff_seconds: float
) -> bool:
    """POST ``alert`` to ``url``; True when the webhook accepted it (2xx).

    Retries connection errors, timeouts, 429 and 5xx ``retries`` times, waiting
    ``backoff_seconds`` × 2^attempt in between; any other 4xx is final (a retry would get the
    same answer). Never raises.
    """
    body = json.dumps(alert.payload(), default=str).encode("utf-8")
    attempts = 1 + max(0, retries)
    for attempt in range(attempts):
        reason = ""
        retryable = True
        try:
            request = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": _USER_AGENT},
            )
            with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
                response.read()
                log.info("alert %s sent (attempt %d)", alert.kind, attempt + 1)
                return True
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
            retryable = exc.code == 429 or exc.code >= 500
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            # The URL holds the webhook's token: name the failure, never the address.
            cause = getattr(exc, "reason", exc)
            reason = type(cause).__name__ if not str(cause) else f"{type(cause).__name__}: {cause}"
        except Exception as exc:  # a malformed URL, say: still never the job's problem
            reason = f"{type(exc).__name__}"
            retryable = False
        if not retryable or attempt == attempts - 1:
            log.warning(
                "alert %s not delivered after %d attempt(s): %s", alert.kind, attempt + 1, reason
            )
            return False
        delay = backoff_seconds * 2**attempt
        log.info(
            "alert %s attempt %d failed (%s); retrying in %.2fs",
            alert.kind,
            attempt + 1,
            reason,
            delay,
        )
        time.sleep(delay)
    return False


def notify(
    config: Config | AlertsConf,
    kind: str,
    summary: str,
    details: Mapping[str, Any] | None = None,
    *,
    lakehouse_root: str | None = None,
    storage_options: dict[str, str] | None = None,
) -> bool:
    """Send one alert with the configured webhook and record it; True when it was delivered.

    For any job: batch failures and the quality gate, the speed job's lag and freshness, the
    serving layer's reconciliation (``RECONCILIATION_DRIFT``). Without a webhook URL the alert
    is only logged, at INFO: the job reports the same failure on its own, so a command's
    error stays one line. It is recorded in ``meta/alerts`` under ``lakehouse_root`` (by
    default the root of ``config`` when that is the whole configuration; none: not
    recorded). Never raises, whatever the webhook or the table do.
    """
    delivered = False
    try:
        alerts = config.alerts if isinstance(config, Config) else config
        root = lakehouse_root or (config.lakehouse.root if isinstance(config, Config) else None)
        alert = Alert(kind, summary, dict(details or {}))
        if not alerts.webhook_url:
            log.info("alert %s (no webhook configured): %s", kind, summary)
        else:
            log.info("alert %s: %s", kind, summary)
            delivered = post_alert(
                alerts.webhook_url.get(),
                alert,
                timeout_seconds=alerts.timeout_seconds,
                retries=alerts.retries,
                backoff_seconds=alerts.backoff_seconds,
            )
        if root:
            options = storage_options
            if isinstance(config, Config):
                from sales_core.object_store import delta_rs_table

                root, options = delta_rs_table(config.lakehouse.s3, root)
            record_alert(
                root,
                alert,
                webhook=bool(alerts.webhook_url),
                delivered=delivered,
                storage_options=options,
            )
    except Exception:  # an alert must never fail the job that sends it
        log.exception("alert %s could not be sent", kind)
    return delivered


# Appends racing to create the alerts table (two jobs alerting at once): the loser tries again.
_RECORD_ATTEMPTS = 3


def record_alert(
    lakehouse_root: str,
    alert: Alert,
    *,
    webhook: bool,
    delivered: bool,
    storage_options: dict[str, str] | None = None,
) -> bool:
    """Append ``alert`` to the lakehouse's ``meta/alerts`` table (created by the first one)
    with delta-rs; True when it was recorded. A local lakehouse root that does not exist is
    not created (False). Never raises: a table that cannot be written is logged.
    """
    try:
        local = local_path(lakehouse_root)
        if local is not None and not local.is_dir():
            log.info("alert %s not recorded: no lakehouse at %s yet", alert.kind, lakehouse_root)
            return False
        # Imported here: a process that only sends alerts (Airflow's callback, in a virtualenv
        # of its own) may have neither; it then sends without recording.
        import pyarrow as pa
        from deltalake import write_deltalake
        from pyspark.sql.pandas.types import to_arrow_schema

        from sales_core.lakehouse import ALERTS_SCHEMA, Lakehouse

        row = {
            "alert_id": uuid.uuid4().hex,
            "kind": alert.kind,
            "summary": alert.summary,
            "details": json.dumps(dict(alert.details), default=str),
            "at": alert.at,
            "webhook": webhook,
            "delivered": delivered,
        }
        rows = pa.Table.from_pylist([row], schema=to_arrow_schema(ALERTS_SCHEMA, timezone="UTC"))
        path = Lakehouse(lakehouse_root).alerts
        for attempt in range(_RECORD_ATTEMPTS):
            try:
                write_deltalake(path, rows, mode="append", storage_options=storage_options)
                return True
            except Exception:
                if attempt == _RECORD_ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))
    except Exception as exc:
        log.warning(
            "alert %s not recorded in the lakehouse: %s: %s",
            alert.kind,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
    return False


class StreamAlerts:
    """Lag and freshness alerts for a stream's micro-batches, at most one per kind per interval.

    A stream that falls behind stays behind for many micro-batches; one alert per
    ``alerts.min_interval_seconds`` and kind says so without flooding the channel. Alerts are
    sent from a background thread so a slow webhook never delays a micro-batch; :meth:`close`
    waits (bounded) for those still in flight when the job ends.
    """

    def __init__(
        self,
        conf: AlertsConf,
        stream: str,
        *,
        lakehouse_root: str | None = None,
        storage_options: dict[str, str] | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        """``lakehouse_root``: where the alerts are recorded (:func:`notify`); None: nowhere.
        ``storage_options``: delta-rs's, for a root on S3 (``s3://``)."""
        self.conf, self.stream, self._clock = conf, stream, clock
        self.lakehouse_root = lakehouse_root
        self.storage_options = storage_options
        self._last_sent: dict[str, float] = {}
        self._threads: list[threading.Thread] = []

    def observe(self, batch_id: int, kafka_lag: int | None, freshness_ms: int | None) -> list[str]:
        """Check one micro-batch's metrics; returns the kinds of alert it raised."""
        raised = []
        conf = self.conf
        if conf.max_lag > 0 and kafka_lag is not None and kafka_lag > conf.max_lag:
            if self._due(STREAM_LAG):
                self._send(
                    STREAM_LAG,
                    f"stream {self.stream} is {kafka_lag} messages behind (threshold {conf.max_lag})",
                    {
                        "stream": self.stream,
                        "batch_id": batch_id,
                        "kafka_lag": kafka_lag,
                        "max_lag": conf.max_lag,
                    },
                )
                raised.append(STREAM_LAG)
        freshness_s = None if freshness_ms is None else freshness_ms / 1000
        if (
            conf.max_freshness_seconds > 0
            and freshness_s is not None
            and freshness_s > conf.max_freshness_seconds
        ):
            if self._due(STREAM_FRESHNESS):
                self._send(
                    STREAM_FRESHNESS,
                    f"stream {self.stream} serves data {freshness_s:.1f}s old (threshold {conf.max_freshness_seconds:g}s)",
                    {
                        "stream": self.stream,
                        "batch_id": batch_id,
                        "freshness_seconds": freshness_s,
                        "max_freshness_seconds": conf.max_freshness_seconds,
                    },
                )
                raised.append(STREAM_FRESHNESS)
        return raised

    def _due(self, kind: str) -> bool:
        now = self._clock()
        last = self._last_sent.get(kind)
        if last is not None and now - last < self.conf.min_interval_seconds:
            return False
        self._last_sent[kind] = now
        return True

    def _send(self, kind: str, summary: str, details: dict[str, Any]) -> None:
        thread = threading.Thread(
            target=notify,
            args=(self.conf, kind, summary, details),
            kwargs={
                "lakehouse_root": self.lakehouse_root,
                "storage_options": self.storage_options,
            },
            name=f"alert-{kind}",
            daemon=True,
        )
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def close(self, timeout_seconds: float | None = None) -> None:
        """Wait for alerts still being sent, at most about one full retry cycle."""
        conf = self.conf
        budget = (
            timeout_seconds
            if timeout_seconds is not None
            else (
                (conf.retries + 1) * conf.timeout_seconds
                + conf.backoff_seconds * (2 ** max(0, conf.retries))
            )
        )
        deadline = time.monotonic() + budget
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
