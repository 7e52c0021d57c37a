"""Every alert is recorded in the lakehouse's ``meta/alerts`` table (delta-rs appends from the
sending process), delivered or not; recording never fails the sender and never creates a
lakehouse. Real webhooks on loopback, real Delta tables read back with delta-rs's reader."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from sales_core import alerts
from sales_core.config import Secret, load_config
from sales_core.lakehouse import Lakehouse
from tests.integration.test_alerts import Webhook

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def config_at(root: Path, webhook_url: str = "") -> Any:
    environ = {
        "LAMBDA_SALES__LAKEHOUSE__ROOT": str(root),
        "LAMBDA_SALES__ALERTS__RETRIES": "0",
        "LAMBDA_SALES__ALERTS__TIMEOUT_SECONDS": "2",
    }
    if webhook_url:
        environ["LAMBDA_SALES__ALERTS__WEBHOOK_URL"] = webhook_url
    return load_config(environ=environ)


def recorded(root: Path) -> list[dict[str, Any]]:
    rows = DeltaTable(Lakehouse(str(root)).alerts).to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda r: r["at"])


def test_each_alert_is_recorded_with_whether_its_webhook_took_it(tmp_path: Path) -> None:
    root = tmp_path / "lakehouse"
    root.mkdir()
    before = datetime.now(timezone.utc)
    with Webhook([200]) as ok:
        assert alerts.notify(
            config_at(root, ok.url),
            alerts.JOB_FAILED,
            "batch run r1 failed: boom",
            {"run_id": "r1"},
        )
    with Webhook([500]) as failing:
        assert not alerts.notify(
            config_at(root, failing.url), alerts.QUALITY_BELOW_THRESHOLD, "refused", {"score": 12.5}
        )
    assert not alerts.notify(config_at(root), alerts.RECONCILIATION_DRIFT, "drift", {"views": []})
    after = datetime.now(timezone.utc)

    rows = recorded(root)
    assert [(r["kind"], r["summary"], r["webhook"], r["delivered"]) for r in rows] == [
        (alerts.JOB_FAILED, "batch run r1 failed: boom", True, True),
        (alerts.QUALITY_BELOW_THRESHOLD, "refused", True, False),
        (alerts.RECONCILIATION_DRIFT, "drift", False, False),
    ]
    assert [json.loads(r["details"]) for r in rows] == [
        {"run_id": "r1"},
        {"score": 12.5},
        {"views": []},
    ]
    assert all(before <= r["at"] <= after for r in rows)
    assert len({r["alert_id"] for r in rows}) == 3
    # What was posted is what was recorded (same time, same summary).
    posted = ok.requests[0]["json"]
    assert datetime.fromisoformat(posted["at"]) == rows[0]["at"]
    assert posted["summary"] == rows[0]["summary"]
    # The webhook's secret URL is nowhere in the table.
    for path in (root / "meta" / "alerts").rglob("*"):
        if path.is_file():
            assert b"secret-token" not in path.read_bytes(), path


def test_no_lakehouse_no_record_and_an_unwritable_table_fails_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert not alerts.notify(config_at(missing), alerts.JOB_FAILED, "before anything ran")
    assert not missing.exists()  # an alert never creates a lakehouse
    # Settings only (no root): sent, not recorded.
    assert not alerts.notify(config_at(missing).alerts, alerts.JOB_FAILED, "no root")

    root = tmp_path / "lakehouse"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "alerts").write_text("a file where the table would be")
    with Webhook([200]) as hook:
        # Delivered all the same, and no exception reaches the job.
        assert alerts.notify(config_at(root, hook.url), alerts.JOB_FAILED, "boom")
    assert hook.kinds() == [alerts.JOB_FAILED]
    assert (root / "meta" / "alerts").read_text() == "a file where the table would be"


def test_stream_alerts_and_racing_senders_are_all_recorded(tmp_path: Path) -> None:
    root = tmp_path / "lakehouse"
    root.mkdir()
    conf = load_config(
        environ={"LAMBDA_SALES__ALERTS__MAX_LAG": "10", "LAMBDA_SALES__ALERTS__WEBHOOK_URL": ""}
    ).alerts
    assert conf.webhook_url == Secret("")
    stream = alerts.StreamAlerts(conf, "speed", lakehouse_root=str(root))
    assert stream.observe(7, kafka_lag=25, freshness_ms=None) == [alerts.STREAM_LAG]
    stream.close(timeout_seconds=30)
    [lag] = recorded(root)
    assert lag["kind"] == alerts.STREAM_LAG
    assert json.loads(lag["details"]) == {
        "stream": "speed",
        "batch_id": 7,
        "kafka_lag": 25,
        "max_lag": 10,
    }

    # Four jobs alerting at once into a new table: each alert is there once.
    racing = tmp_path / "racing"
    racing.mkdir()
    threads = [
        threading.Thread(
            target=alerts.notify, args=(config_at(racing), alerts.JOB_FAILED, f"job {i} failed")
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(r["summary"] for r in recorded(racing)) == [f"job {i} failed" for i in range(4)]
