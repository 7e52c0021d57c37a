"""The live console of ``lambda-sales serve`` in a real headless Chromium (Debian's chromium
and chromium-driver, driven by Selenium), over a real lakehouse: a batch run with rejects, the
real speed job on a real Kafka topic (its Kafka lag, a lag alert, a reject with its offset),
then a new micro-batch and a new publish while the page is open.

One server (uvicorn in a thread of this process, on a free port) and one browser for the
module. What the page shows is checked against the JSON API and against the Delta tables read
with Spark, and both against values worked out from the inputs.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from batch_layer.job import run_batch
from sales_core.lakehouse import Lakehouse
from tests.conftest import write_jsonl
from tests.oracle import compute_views, event, raw_json, rows_to_view
from tests.processes import free_port
from tests.serving_helpers import raw, speed_micro_batch

pytestmark = pytest.mark.integration

POLL_MS = 1000  # the page polls every second here (5 s by default)
MAX_LAG = 3  # a micro-batch more than 3 messages behind alerts

BATCH = [
    event("b1", amount="10.00", event_time="2024-05-01T10:00:00Z", customer_id="c1"),
    event("b2", amount="250.50", quantity=2, event_time="2024-05-01T11:30:00Z", category="toys"),
    event("b3", amount="1500.00", event_time="2024-05-03T09:00:00Z", region="south"),
    event("b4", amount="0.99", event_time="2024-06-02T00:00:00Z", region="east"),
]
# Lines 5, 6 and 7 of the landing file, each rejected for its own reason.
BAD_LINES = [
    "this is not json",
    json.dumps({**raw_json(event("bad1", amount="1.00")), "amount": "-5.00"}),
    json.dumps(
        {k: v for k, v in raw_json(event("bad2", amount="1.00")).items() if k != "event_id"}
    ),
]
BAD_REASONS = {5: "malformed", 6: "negative_amount", 7: "missing_required:event_id"}
# Seven Kafka messages, three a micro-batch: lags 4, 1, 0; offset 3 is rejected.
KAFKA = [event(f"k{i}", amount=f"{i}.25", region="west", customer_id=f"k{i}") for i in range(7)]
KAFKA_BAD_OFFSET = 3
LATER_KAFKA = [event("k7", amount="7.00", region="west"), event("k8", amount="8.00")]
LATER_BATCH = [event("b5", amount="99.00", event_time="2024-05-01T10:20:00Z")]


def publish(bootstrap: str, topic: str, events: list[dict[str, Any]], *, bad_at: int = -1) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for i, e in enumerate(events):
            body = raw_json(e) if i != bad_at else {**raw_json(e), "quantity": 0}
            producer.send(topic, key=e["event_id"].encode(), value=json.dumps(body).encode())
        producer.flush()
    finally:
        producer.close()


def valid_kafka() -> list[dict[str, Any]]:
    return [e for i, e in enumerate(KAFKA) if i != KAFKA_BAD_OFFSET]


class Server:
    """``serving_layer.http.create_app`` under uvicorn in a thread, on a free port."""

    def __init__(self, root: str) -> None:
        import uvicorn

        from serving_layer.console_series import StreamThresholds
        from serving_layer.http import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(root, thresholds=StreamThresholds(1.0, 60.0, 900.0))
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, name="console-server", daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "no server"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=30)
        assert response.status_code == 200, response.text
        return json.loads(response.text, parse_float=Decimal)


@pytest.fixture(scope="module")
def console(spark, tmp_path_factory, kafka_bootstrap: str) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    from devtools import kafka as kafka_service
    from devtools.browser import headless_chromium
    from sales_core.config import load_config
    from speed_layer.job import run_speed
    from tests.conftest import config_environ

    base = tmp_path_factory.mktemp("console")
    topic = f"console-{uuid.uuid4().hex[:8]}"
    kafka_service.create_topic(kafka_bootstrap, topic, partitions=1)
    config = load_config(
        environ=config_environ(
            base,
            LAMBDA_SALES__SOURCES__KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
            LAMBDA_SALES__SOURCES__KAFKA__TOPIC=topic,
            LAMBDA_SALES__SOURCES__KAFKA__DLQ_TOPIC=f"{topic}-dlq",
            LAMBDA_SALES__SOURCES__KAFKA__MAX_OFFSETS_PER_TRIGGER="3",
            LAMBDA_SALES__ALERTS__MAX_LAG=str(MAX_LAG),
        )
    )
    write_jsonl(base / "landing" / "day1.jsonl", [*(raw_json(e) for e in BATCH), *BAD_LINES])
    run_batch(spark, config)
    publish(kafka_bootstrap, topic, KAFKA, bad_at=KAFKA_BAD_OFFSET)
    run_speed(spark, config, available_now=True)

    driver = headless_chromium(width=1400, height=1000)
    try:
        with Server(config.lakehouse.root) as server:
            driver.get(f"{server.url}/?poll={POLL_MS}")
            state = {
                "spark": spark,
                "config": config,
                "base": base,
                "topic": topic,
                "bootstrap": kafka_bootstrap,
                "lakehouse": Lakehouse(config.lakehouse.root),
                "server": server,
                "driver": driver,
            }
            wait_until(driver, lambda: js(driver, "return document.body.dataset.refreshes"))
            yield state
    finally:
        driver.quit()


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def wait_until(driver: Any, condition: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll ``condition`` until it is truthy (AssertionError with the page's errors if not)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; browser log: {driver.get_log('browser')}")
        time.sleep(0.2)


def value(driver: Any, element_id: str) -> str:
    return str(js(driver, "return document.getElementById(arguments[0]).dataset.value", element_id))


def text(driver: Any, element_id: str) -> str:
    return str(js(driver, "return document.getElementById(arguments[0]).textContent", element_id))


def delta_rows(spark: Any, path: str) -> list[dict[str, Any]]:
    """Every row of a Delta table, read with Spark (not with the console's delta-rs reads)."""
    return [r.asDict() for r in spark.read.format("delta").load(path).collect()]


def severe(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def table_rows(driver: Any, table_id: str) -> list[list[str]]:
    return list(
        js(
            driver,
            "return [...document.getElementById(arguments[0]).tBodies[0].rows]"
            ".map(r => [...r.cells].map(c => c.textContent))",
            table_id,
        )
    )


def test_the_now_panel_shows_what_the_api_and_the_tables_hold(console) -> None:  # type: ignore[no-untyped-def]
    driver, spark, lakehouse = console["driver"], console["spark"], console["lakehouse"]
    assert severe(driver) == []
    status = console["server"].get("/console/status")

    generations = delta_rows(spark, lakehouse.generations)
    assert [g["generation"] for g in generations] == [1]
    assert value(driver, "generation") == str(status["batch"]["generation"]) == "1"
    assert value(driver, "generation-events") == str(status["batch"]["events"]) == "4"
    assert generations[0]["events"] == 4

    metrics = sorted(delta_rows(spark, lakehouse.stream_metrics), key=lambda r: r["batch_id"])
    # Seven messages, three a micro-batch: 3 + 3 + 1 read, the last one drains the topic.
    assert [m["input_rows"] for m in metrics] == [3, 3, 1]
    assert [m["kafka_lag"] for m in metrics] == [4, 1, 0]
    newest = metrics[-1]
    assert value(driver, "kafka-lag") == str(status["stream"]["metrics"]["kafka_lag"]) == "0"
    assert value(driver, "kafka-lag-batch") == str(newest["batch_id"]) == "2"
    assert value(driver, "last-micro-batch") == "2"
    assert float(value(driver, "batch-freshness")) == pytest.approx(newest["freshness_ms"] / 1000)
    # The newest event: the same instant in the table, the API and the page (to the second);
    # its age as the page's last poll computed it (polls run every second; the host may lag).
    newest_event = max(m["newest_message_at"] for m in metrics)  # naive local time (pyspark)
    newest_event_at = datetime.fromtimestamp(newest_event.timestamp(), timezone.utc)
    assert status["stream"]["newest_event_at"] == newest_event_at.isoformat().replace("+00:00", "Z")
    assert text(driver, "newest-event-at") == newest_event_at.strftime("%Y-%m-%d %H:%M:%SZ")
    age = time.time() - newest_event.timestamp()
    assert age - 30 < float(value(driver, "freshness")) <= age + 1

    # --available-now ended its run: the stream is stopped, and says which run.
    speed_runs = [r for r in delta_rows(spark, lakehouse.pipeline_runs) if r["job"] == "speed"]
    assert [r["status"] for r in speed_runs] == ["succeeded"]
    assert value(driver, "stream-state") == status["stream"]["state"] == "stopped"
    assert speed_runs[0]["run_id"] in text(driver, "stream-reason")

    # The lag alert of micro-batch 0 (4 messages behind, threshold 3), as recorded.
    alerts = delta_rows(spark, lakehouse.alerts)
    assert [(a["kind"], a["webhook"], a["delivered"]) for a in alerts] == [
        ("stream_lag", False, False)
    ]
    assert json.loads(alerts[0]["details"])["kafka_lag"] == 4
    assert js(driver, "return document.getElementById('last-alert').dataset.kind") == "stream_lag"
    assert alerts[0]["summary"] in text(driver, "last-alert")
    assert status["last_alert"]["summary"] == alerts[0]["summary"]


def test_runs_quarantine_and_alert_tables_match_the_delta_tables(console) -> None:  # type: ignore[no-untyped-def]
    driver, spark, lakehouse = console["driver"], console["spark"], console["lakehouse"]
    runs = {r["run_id"]: r for r in delta_rows(spark, lakehouse.pipeline_runs)}
    shown = {row[0]: row for row in table_rows(driver, "runs-table")}
    assert shown.keys() == runs.keys()
    batch = next(r for r in runs.values() if r["job"] == "batch")
    # 4 valid + 3 rejected lines read, as written.
    assert (batch["records_read"], batch["valid"], batch["duplicates"], batch["quarantined"]) == (
        7,
        4,
        0,
        3,
    )
    row = shown[batch["run_id"]]
    assert row[1:3] == ["batch", "succeeded"]
    assert row[5:9] == ["7", "4", "0", "3"]
    assert row[9] == f"{batch['quality_score']:.2f}" and row[10] == "1"
    speed = next(r for r in runs.values() if r["job"] == "speed")
    assert shown[speed["run_id"]][5:9] == ["7", "6", "0", "1"]

    # Rejects: three from the landing file (file, line), one from Kafka (topic, partition, offset).
    rejects = delta_rows(spark, lakehouse.quarantine)
    by_reason = {r["reason"]: r for r in rejects}
    assert {
        r["source_offset"]: r["reason"] for r in rejects if r["source"] != "kafka"
    } == BAD_REASONS
    kafka_reject = next(r for r in rejects if r["source"] == "kafka")
    assert (kafka_reject["source_name"], kafka_reject["source_offset"], kafka_reject["reason"]) == (
        console["topic"],
        KAFKA_BAD_OFFSET,
        "invalid_quantity",
    )
    samples = js(
        driver,
        "return Object.fromEntries([...document.querySelectorAll('#quarantine-samples .reason')]"
        ".map(p => [p.dataset.reason, [...p.querySelector('tbody').rows]"
        ".map(r => [...r.cells].map(c => c.textContent))]))",
    )
    assert samples.keys() == by_reason.keys()
    for reason, reject in by_reason.items():
        [sample] = samples[reason]
        assert sample[1:5] == [
            reject["source"],
            reject["source_name"] or "",
            "" if reject["source_partition"] is None else str(reject["source_partition"]),
            str(reject["source_offset"]),
        ], reason
        assert sample[6].startswith((reject["raw_record"] or "")[:50])
    assert value(driver, "quarantine-total") == "4"

    alerts_table = table_rows(driver, "alerts-table")
    assert [(r[1], r[3]) for r in alerts_table] == [("stream_lag", "none configured")]


def test_charts_render_the_series_with_data(console) -> None:  # type: ignore[no-untyped-def]
    driver, spark, lakehouse = console["driver"], console["spark"], console["lakehouse"]
    metrics = delta_rows(spark, lakehouse.stream_metrics)
    charts = js(
        driver,
        "const out = {};"
        "for (const id of ['events-chart','duration-chart','lag-chart','freshness-chart',"
        "'runs-chart','quality-chart','quarantine-chart']) {"
        "  const c = Chart.getChart(id);"
        "  out[id] = {labels: c.data.labels, sets: c.data.datasets.map(d => ({label: d.label, data: d.data}))};"
        "} return out;",
    )
    stream = console["server"].get("/console/stream", window="hour")
    # Every micro-batch of the hour is in a bucket; the events chart has one point per bucket.
    assert sum(p["micro_batches"] for p in stream["points"]) == len(metrics) == 3
    assert sum(p["input_rows"] for p in stream["points"]) == 7
    events = charts["events-chart"]["sets"][0]["data"]
    assert [p["x"] for p in events] == [epoch_ms(p["t"]) for p in stream["points"]]
    assert len(events) >= 1 and all(p["y"] > 0 for p in events)
    lag = charts["lag-chart"]["sets"][0]["data"]
    assert max(p["y"] for p in lag) == 4  # the worst lag of the hour
    assert all(charts[c]["sets"][0]["data"] for c in ("duration-chart", "freshness-chart"))
    runs = charts["runs-chart"]
    assert [d["label"] for d in runs["sets"]][:3] == ["valid", "duplicates", "quarantined"]
    assert [s["data"] for s in runs["sets"][:3]] == [[4], [0], [3]]  # the batch run
    quarantine = charts["quarantine-chart"]["sets"]
    assert sorted(d["label"] for d in quarantine) == sorted(
        [*BAD_REASONS.values(), "invalid_quantity"]
    )
    assert sum(p["y"] for d in quarantine for p in d["data"]) == 4
    # Drawn: the series' colour is on the canvases (the axes alone are grey).
    for canvas_id in ("events-chart", "lag-chart", "runs-chart", "quarantine-chart"):
        assert coloured_pixels(driver, canvas_id) > 5, canvas_id


def epoch_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def coloured_pixels(driver: Any, canvas_id: str) -> int:
    """Pixels of a canvas that are clearly coloured (not white, grey or transparent)."""
    return int(
        js(
            driver,
            "const c = document.getElementById(arguments[0]);"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 0; i < d.length; i += 4) {"
            "  const [r, g, b, a] = [d[i], d[i+1], d[i+2], d[i+3]];"
            "  if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 60) n++; } return n;",
            canvas_id,
        )
    )


def test_views_browse_with_filters_and_pages_as_the_api_answers(console) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, server = console["driver"], console["server"]
    # The default view, every row as the API answers it, and as the oracle computes it.
    api_rows = server.get("/views/sales_daily", limit=21)["rows"]
    expected = compute_views([*BATCH, *valid_kafka()])["sales_daily"]
    assert len(api_rows) == len(expected)
    assert shown_view(driver) == [[str(v) for v in r.values()] for r in api_rows]

    # customer_totals, 2 rows a page: page 2 is the API's offset 2.
    Select(driver.find_element(By.ID, "view-select")).select_by_value("customer_totals")
    limit = driver.find_element(By.NAME, "limit")
    limit.clear()
    limit.send_keys("2")
    driver.find_element(By.CSS_SELECTOR, "#view-form button[type=submit]").click()
    wait_until(
        driver,
        lambda: (
            js(driver, "return document.getElementById('view-table').dataset.view")
            == "customer_totals"
        ),
    )
    wait_until(driver, lambda: len(shown_view(driver)) == 2)
    driver.find_element(By.ID, "view-next").click()
    wait_until(
        driver,
        lambda: js(driver, "return document.getElementById('view-table').dataset.offset") == "2",
    )
    page = server.get("/views/customer_totals", limit=2, offset=2)["rows"]
    assert shown_view(driver) == [[str(v) for v in r.values()] for r in page]

    # A filter on sales_daily: region = west (the Kafka events only).
    Select(driver.find_element(By.ID, "view-select")).select_by_value("sales_daily")
    wait_until(
        driver,
        lambda: (
            js(driver, "return document.getElementById('view-table').dataset.view") == "sales_daily"
        ),
    )
    limit = driver.find_element(By.NAME, "limit")
    limit.clear()
    limit.send_keys("50")
    driver.find_element(By.CSS_SELECTOR, "#view-filters input[name=region]").send_keys("west")
    driver.find_element(By.CSS_SELECTOR, "#view-form button[type=submit]").click()
    west = server.get("/views/sales_daily", region="west")["rows"]
    wait_until(driver, lambda: shown_view(driver) == [[str(v) for v in r.values()] for r in west])
    expected_west = {k: v for k, v in expected.items() if k[2] == "west"}
    assert rows_to_view([typed(r) for r in west], "sales_daily") == expected_west
    assert severe(driver) == []


def shown_view(driver: Any) -> list[list[str]]:
    return table_rows(driver, "view-table")


def typed(row: dict[str, Any]) -> dict[str, Any]:
    from datetime import date

    return {**row, "event_date": date.fromisoformat(row["event_date"])}


def test_the_page_follows_a_new_micro_batch_and_a_publish_without_reloading(console) -> None:  # type: ignore[no-untyped-def]
    driver, spark, config = console["driver"], console["spark"], console["config"]
    js(driver, "window.__sameDocument = 'yes'")
    west_before = console["server"].get("/views/sales_daily", region="west")["rows"]

    # Micro-batch 3 through the real speed sink (no streaming query: no Kafka lag reported).
    speed_micro_batch(spark, config, 3, raw(LATER_KAFKA), first_offset=100)
    wait_until(driver, lambda: value(driver, "last-micro-batch") == "3")
    west_after = console["server"].get("/views/sales_daily", region="west")["rows"]
    assert west_after != west_before  # k7 is a west sale
    wait_until(
        driver, lambda: shown_view(driver) == [[str(v) for v in r.values()] for r in west_after]
    )
    wait_until(driver, lambda: value(driver, "kafka-lag-batch") == "3")
    assert value(driver, "kafka-lag") == ""  # as the metrics row says
    newest_metrics = max(
        delta_rows(spark, console["lakehouse"].stream_metrics), key=lambda r: r["batch_id"]
    )
    assert (newest_metrics["batch_id"], newest_metrics["kafka_lag"]) == (3, None)
    # A micro-batch after the ended run: judged by its age, the stream is running again.
    assert value(driver, "stream-state") == "running"

    write_jsonl(
        Path(config.sources.files.landing) / "day2.jsonl", [raw_json(e) for e in LATER_BATCH]
    )
    run_batch(spark, config)
    wait_until(driver, lambda: value(driver, "generation") == "2")
    events = 4 + len(valid_kafka()) + len(LATER_KAFKA) + len(LATER_BATCH)
    wait_until(driver, lambda: value(driver, "generation-events") == str(events))

    def finished_batch_runs() -> list[list[str]] | None:
        rows = [r for r in table_rows(driver, "runs-table") if r[1] == "batch"]
        return rows if len(rows) == 2 and rows[0][2] == "succeeded" else None

    # The generation is visible before its run's record says it succeeded.
    batch_rows = wait_until(driver, finished_batch_runs)
    newest = batch_rows[0]
    assert newest[5:9] == ["1", "1", "0", "0"] and newest[10] == "2"
    # It absorbed micro-batches 0-3 and found no drift.
    assert newest[11] == "none"
    assert js(driver, "return window.__sameDocument") == "yes"  # never reloaded
    assert severe(driver) == []


def test_window_selector_and_screenshot(console, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import os
    import shutil

    from selenium.webdriver.common.by import By

    from devtools.browser import screenshot

    driver = console["driver"]
    driver.find_element(By.CSS_SELECTOR, "#window-selector button[data-window=day]").click()
    span = wait_until(
        driver,
        lambda: (lambda s: s if s == 86400 * 1000 else None)(
            js(
                driver,
                "const x = Chart.getChart('events-chart').options.scales.x; return x.max - x.min",
            )
        ),
    )
    assert span == 86400 * 1000
    assert js(driver, "return Chart.getChart('events-chart').data.datasets[0].data.length") >= 1
    driver.find_element(By.CSS_SELECTOR, "#window-selector button[data-window=hour]").click()
    picture = screenshot(driver, tmp_path / "console.png")
    assert picture.stat().st_size > 20_000
    if os.environ.get("LAMBDA_SALES_CONSOLE_SCREENSHOT"):
        shutil.copy(picture, os.environ["LAMBDA_SALES_CONSOLE_SCREENSHOT"])
    assert severe(driver) == []
