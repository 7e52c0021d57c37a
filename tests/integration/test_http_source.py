"""The HTTP source against a real paged JSON API on loopback (CONTRACT §1, §2, §6).

One threaded ``http.server`` serves feeds (lists of record texts) in pages by an opaque
cursor, and can be told to answer 500 or to hang past the client's timeout for a page. One
lakehouse lives through a history: a first run (with 500s and a timeout on the way), a run
with nothing new, then records are appended to the last page and after it, a
``lambda-sales batch`` is killed with SIGKILL while it reads them, and a rerun. Expected
views come from ``tests.oracle`` over the records served; expected positions and reasons
from the feed's own definition. (Tests share these runs, and the tests' Spark session, to
keep CI time down.)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from pyspark.sql import functions as F

from tests.conftest import environ_without_config
from tests.oracle import compute_views, event, raw_json
from tests.processes import descendants, wait_gone
from tests.serving_helpers import published_views

pytestmark = [pytest.mark.integration]

CLI = str(Path(sys.executable).with_name("lambda-sales"))
TOKEN = "tok-9f3c1e7a-http-source-secret"
PAGE = 4
CLIENT_TIMEOUT = 1.0
HANG_SECONDS = CLIENT_TIMEOUT + 2.0


# --------------------------------------------------------------------------------------
# The API: feeds served in pages of ``page_size`` by an opaque cursor
# --------------------------------------------------------------------------------------


def cursor_at(offset: int) -> str | None:
    """The cursor of the page starting at ``offset`` (the first page has none)."""
    return None if offset == 0 else f"after-{offset}"


@dataclass
class Feed:
    texts: list[str] = field(default_factory=list)  # each record's JSON text, in order
    fail: dict[int, int] = field(default_factory=dict)  # page offset -> 500s still to answer
    hang: dict[int, int] = field(default_factory=dict)  # page offset -> hangs still to do
    requests: list[tuple[str | None, str | None]] = field(default_factory=list)  # cursor, auth
    served: dict[int, threading.Event] = field(default_factory=dict)  # set once page served
    lock: threading.Lock = field(default_factory=threading.Lock)


class FeedServer(ThreadingHTTPServer):
    daemon_threads = True
    feeds: dict[str, Feed]

    def url(self, feed: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{feed}"


class _PageHandler(BaseHTTPRequestHandler):
    server: FeedServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        feed = self.server.feeds.get(parts.path.strip("/"))
        if feed is None:
            self.reply(404, b'{"error": "no such feed"}')
            return
        query = dict(parse_qsl(parts.query))
        cursor, size = query.get("cursor"), int(query["page_size"])
        offset = 0 if cursor is None else int(cursor.removeprefix("after-"))
        with feed.lock:
            feed.requests.append((cursor, self.headers.get("Authorization")))
            hang = feed.hang.get(offset, 0) > 0
            fail = not hang and feed.fail.get(offset, 0) > 0
            if hang:
                feed.hang[offset] -= 1
            if fail:
                feed.fail[offset] -= 1
            texts = feed.texts[offset : offset + size]
            more = offset + size < len(feed.texts)
        if hang:
            time.sleep(HANG_SECONDS)  # the client has given up by now
            return
        if fail:
            self.reply(500, b'{"error": "temporarily broken"}')
            return
        following = json.dumps(cursor_at(offset + size) if more else None)
        self.reply(200, f'{{"records": [{", ".join(texts)}], "next": {following}}}'.encode())
        if offset in feed.served:
            feed.served[offset].set()

    def reply(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client went away

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def api() -> Iterator[FeedServer]:
    server = FeedServer(("127.0.0.1", 0), _PageHandler)
    server.feeds = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------
# The records: each one's text, and what the contract says becomes of it
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    text: str
    event: dict[str, Any] | None = None  # the valid event it is (None: rejected)
    reason: str | None = None  # the quarantine reason, when rejected


def valid(n: int, text_amount: str | None = None, **fields: Any) -> Served:
    """A valid event; ``text_amount`` sends its amount as that JSON number literally."""
    e = event(f"h{n:03d}", **{"amount": text_amount or "25.00", **fields})
    if text_amount is None:
        return Served(json.dumps(raw_json(e)), e)
    text = json.dumps({**raw_json(e), "amount": "@"}).replace('"@"', text_amount)
    return Served(text, e)


def rejected(text: str, reason: str) -> Served:
    return Served(text, reason=reason)


def record(n: int, **fields: Any) -> str:
    base = {
        "event_id": f"h{n:03d}",
        "order_id": f"o{n}",
        "product_id": "p1",
        "quantity": 1,
        "amount": "5.00",
        "event_time": "2024-05-02T08:00:00Z",
    }
    return json.dumps({k: v for k, v in {**base, **fields}.items() if v is not ...})


FIRST = [  # three pages of PAGE=4: [0..3] [4..7] [8, 9]
    valid(0, text_amount="10.005", quantity=2),  # a JSON number: 10.01, never via a double
    valid(1, amount="150.00", customer_id="c2", channel="mobile"),
    rejected("42", "malformed"),
    valid(3, text_amount="12.344999999999999999999", category="toys"),  # 12.34 (a double: 12.35)
    rejected(record(4, amount=-5), "negative_amount"),
    valid(5, amount="1200.00", region="south", event_time="2024-05-03T23:59:59Z"),
    Served(json.dumps(raw_json(event("h001", amount="999.00")))),  # duplicate: the first wins
    rejected('"just text"', "malformed"),
    valid(8, amount="0.99", customer_id="c3"),
    rejected(record(9, event_id=...), "missing_required:event_id"),
]
APPENDED = [  # page [8..11] grows by two, then [12..15] ... [28]; killed once [20..23] is served
    valid(10, amount="7.50", event_time="2024-04-30T10:00:00Z"),
    rejected("[1, 2]", "malformed"),
    valid(12, amount="42.00", channel="store"),
    Served(json.dumps(raw_json(event("h003", amount="1.00")))),  # already ingested: duplicate
    rejected(record(14, amount="@").replace('"@"', "NaN"), "malformed"),
    valid(15, amount="310.10", customer_id="c2"),
    valid(16, amount="18.00", region="east"),
    valid(17, amount="11.11"),
    rejected("null", "malformed"),
    valid(19, amount="19.19", event_time="2024-05-04T00:00:00Z"),
    valid(20, amount="20.00", customer_id="c4"),
    rejected(record(21, quantity=0), "invalid_quantity"),
    valid(22, amount="22.22"),
    Served(json.dumps(raw_json(event("h020", amount="555.55", customer_id="c4")))),  # duplicate
    valid(24, amount="24.24", category="garden"),
    valid(25, amount="25.25"),
    valid(26, amount="26.26", channel="store"),
    rejected(record(27, amount="2000000.00"), "amount_out_of_range"),
    valid(28, amount="28.28"),
]
KILL_AT = 20


def expected_views(served: list[Served]) -> dict:  # type: ignore[type-arg]
    return compute_views([s.event for s in served if s.event is not None])


def expected_quarantine(url: str, served: list[Served]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            (url, cursor_at(g - g % PAGE), g % PAGE, s.reason, s.text)
            for g, s in enumerate(served)
            if s.reason is not None
        ),
        key=str,
    )


def expected_master(url: str, served: list[Served]) -> list[tuple[Any, ...]]:
    first: dict[str, tuple[Any, ...]] = {}
    for g, s in enumerate(served):
        if s.event is not None and s.event["event_id"] not in first:
            e = s.event
            first[e["event_id"]] = (
                e["event_id"],
                e["amount"],
                url,
                cursor_at(g - g % PAGE),
                g % PAGE,
            )
    return sorted(first.values(), key=str)


# --------------------------------------------------------------------------------------
# Running the batch job and looking at what it left
# --------------------------------------------------------------------------------------


def write_conf(base: Path, url: str, *, retries: int = 3) -> Path:
    (base / "landing").mkdir(parents=True, exist_ok=True)
    path = base / "pipeline.toml"
    path.write_text(
        f'[lakehouse]\nroot = "{base / "lakehouse"}"\n'
        f'[sources.files]\nlanding = "{base / "landing"}"\n'
        f'[sources.http]\nenabled = true\nurl = "{url}"\npage_size = {PAGE}\n'
        f"timeout_seconds = {CLIENT_TIMEOUT}\nretries = {retries}\nbackoff_seconds = 0.05\n"
        '[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\ndriver_memory = "1g"\n'
        "[quality]\nmin_score = 0.0\n",
        encoding="utf-8",
    )
    return path


def load(path: Path):  # type: ignore[no-untyped-def]
    from sales_core.config import load_config

    return load_config(path, environ={"LAMBDA_SALES__SOURCES__HTTP__TOKEN": TOKEN})


def cli_env(base: Path) -> dict[str, str]:
    return environ_without_config(
        LAMBDA_SALES__SOURCES__HTTP__TOKEN=TOKEN,
        LAMBDA_SALES_LOG_DIR=str(base / "logs"),
        LAMBDA_SALES_LOG_LEVEL="DEBUG",
    )


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def run_logged(spark, config, lines: list[str]):  # type: ignore[no-untyped-def]
    """``run_batch`` with every log line of the batch layer collected (DEBUG and up)."""
    from batch_layer.job import run_batch

    handler, logger = _Collect(), logging.getLogger("batch_layer")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        return run_batch(spark, config, progress=lines.append)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        lines.extend(handler.lines)


@dataclass
class Snapshot:
    record: Any
    views: dict[str, Any]
    master: list[tuple[Any, ...]]
    quarantine: list[tuple[Any, ...]]
    epochs: list[int]


def snapshot(spark, config, record) -> Snapshot:  # type: ignore[no-untyped-def]
    from sales_core.lakehouse import Lakehouse

    lakehouse = Lakehouse(config.lakehouse.root)
    views = published_views(spark, lakehouse)
    position = ("source_name", "source_key", "source_offset")
    master = spark.read.format("delta").load(lakehouse.master_dataset)
    quarantine = spark.read.format("delta").load(lakehouse.quarantine)
    ledger = spark.read.format("delta").load(lakehouse.ingest_ledger)
    assert {r["source"] for r in master.select("source").distinct().collect()} <= {"http"}
    return Snapshot(
        record,
        views,
        sorted(
            (tuple(r) for r in master.select("event_id", "amount", *position).collect()), key=str
        ),
        sorted(
            (tuple(r) for r in quarantine.select(*position, "reason", "raw_record").collect()),
            key=str,
        ),
        sorted(
            r["epoch"]
            for r in ledger.where(F.col("state") == "ingested").select("epoch").distinct().collect()
        ),
    )


def counts(record) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    return (record.records_read, record.valid, record.duplicates, record.quarantined)


@pytest.fixture(scope="module")
def history(spark, api, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Run 1 (a page answers 500 twice, another hangs once) and run 2 (nothing new)."""
    feed = Feed(texts=[s.text for s in FIRST], fail={4: 2}, hang={8: 1})
    api.feeds["sales"] = feed
    base = tmp_path_factory.mktemp("http-source")
    config = load(write_conf(base, api.url("sales")))
    logs: list[str] = []
    requests = []
    runs = []
    for _ in range(2):
        with feed.lock:
            before = len(feed.requests)
        runs.append(snapshot(spark, config, run_logged(spark, config, logs)))
        requests.append(feed.requests[before:])
    return {
        "base": base,
        "config": config,
        "feed": feed,
        "runs": runs,
        "requests": requests,
        "logs": logs,
    }


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


def test_pages_are_read_in_order_and_every_record_ingested_once(history, api) -> None:  # type: ignore[no-untyped-def]
    first = history["runs"][0]
    url = api.url("sales")
    assert first.record.status == "succeeded"
    assert [cursor for cursor, _ in history["requests"][0]] == [
        None, "after-4", "after-4", "after-4", "after-8", "after-8"
    ]  # fmt: skip
    assert counts(first.record) == (10, 5, 1, 4)
    assert first.record.details["records_by_source"] == {"http": 10}
    assert first.views == expected_views(FIRST)
    assert first.master == expected_master(url, FIRST)
    # Amounts read exactly: 10.005 half-up to 10.01; 12.3449999... stays below the half cent.
    amounts = {row[0]: row[1] for row in first.master}
    assert (amounts["h000"], amounts["h001"], amounts["h003"]) == (
        Decimal("10.01"), Decimal("150.00"), Decimal("12.34")
    )  # fmt: skip
    assert first.quarantine == expected_quarantine(url, FIRST)


def test_500s_and_a_timeout_are_retried_and_the_run_succeeds(history) -> None:  # type: ignore[no-untyped-def]
    feed = history["feed"]
    assert feed.fail == {4: 0} and feed.hang == {8: 0}  # both faults were met
    cursors = [cursor for cursor, _ in history["requests"][0]]
    assert cursors.count("after-4") == 3 and cursors.count("after-8") == 2
    retried = [line for line in history["logs"] if "retrying" in line]
    assert len(retried) == 3 and sum("HTTP 500" in line for line in retried) == 2
    assert any("timed out" in line for line in retried), retried


def test_a_run_without_new_pages_is_a_no_op(history) -> None:  # type: ignore[no-untyped-def]
    first, second = history["runs"]
    assert [cursor for cursor, _ in history["requests"][1]] == ["after-8"]
    assert second.record.status == "succeeded"
    assert counts(second.record) == (0, 0, 0, 0)
    assert second.epochs == first.epochs == [1]
    assert (second.master, second.quarantine, second.views) == (
        first.master, first.quarantine, first.views
    )  # fmt: skip


def test_the_token_is_sent_and_never_written(history, spark) -> None:  # type: ignore[no-untyped-def]
    from sales_core.lakehouse import Lakehouse

    feed, config = history["feed"], history["config"]
    assert {auth for _, auth in feed.requests} == {f"Bearer {TOKEN}"}
    assert history["logs"] and not [line for line in history["logs"] if TOKEN in line]
    runs = spark.read.format("delta").load(Lakehouse(config.lakehouse.root).pipeline_runs)
    assert all(
        TOKEN not in json.dumps(r.asDict(recursive=True), default=str) for r in runs.collect()
    )
    for path in Path(config.lakehouse.root).rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    printed = subprocess.run(
        [CLI, "config", "--conf", str(history["base"] / "pipeline.toml")],
        env=cli_env(history["base"]),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert 'token = "***"' in printed.stdout
    assert TOKEN not in printed.stdout + printed.stderr


@pytest.fixture(scope="module")
def killed_then_rerun(history, spark):  # type: ignore[no-untyped-def]
    """Records appended; ``lambda-sales batch`` killed (SIGKILL) once it has been served the
    page at ``KILL_AT``; then a rerun (in this process)."""
    from batch_layer.ledger import read_ledger
    from sales_core.handoff import current_generation
    from sales_core.lakehouse import Lakehouse

    feed, config, base = history["feed"], history["config"], history["base"]
    lakehouse = Lakehouse(config.lakehouse.root)
    served_kill_page = threading.Event()
    with feed.lock:
        feed.texts.extend(s.text for s in APPENDED)
        feed.served[KILL_AT] = served_kill_page
        before = len(feed.requests)
    proc = subprocess.Popen(
        [CLI, "batch", "--conf", str(base / "pipeline.toml")],
        env=cli_env(base),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert served_kill_page.wait(timeout=600), "the job never asked for the page"
        family = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        wait_gone(family, timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    with feed.lock:
        killed_requests, before = feed.requests[before:], len(feed.requests)
    generation = current_generation(spark, lakehouse)
    pending = read_ledger(spark, lakehouse.ingest_ledger).pending
    logs: list[str] = []
    rerun = snapshot(spark, config, run_logged(spark, config, logs))
    return {
        "killed": (proc.returncode, out, err, killed_requests, generation, pending),
        "rerun": rerun,
        "rerun_requests": feed.requests[before:],
        "logs": logs,
    }


@pytest.mark.slow
def test_appended_records_are_read_from_the_stored_cursor_only(killed_then_rerun, api) -> None:  # type: ignore[no-untyped-def]
    rerun = killed_then_rerun["rerun"]
    url = api.url("sales")
    killed_requests = [cursor for cursor, _ in killed_then_rerun["killed"][3]]
    assert killed_requests[:4] == ["after-8", "after-12", "after-16", "after-20"]
    assert [cursor for cursor, _ in killed_then_rerun["rerun_requests"]] == [
        "after-8", "after-12", "after-16", "after-20", "after-24", "after-28"
    ]  # fmt: skip
    assert {auth for _, auth in killed_then_rerun["rerun_requests"]} == {f"Bearer {TOKEN}"}
    assert rerun.record.status == "succeeded"
    assert counts(rerun.record) == (19, 12, 2, 5)
    assert rerun.record.details["records_by_source"] == {"http": 19}
    assert rerun.epochs == [1, 2]
    assert rerun.master == expected_master(url, FIRST + APPENDED)
    assert rerun.quarantine == expected_quarantine(url, FIRST + APPENDED)


@pytest.mark.slow
def test_sigkill_while_reading_pages_then_rerun_gives_the_oracle_views(
    killed_then_rerun, history
) -> None:  # type: ignore[no-untyped-def]
    returncode, out, err, _, generation, pending = killed_then_rerun["killed"]
    assert returncode == -signal.SIGKILL
    # Killed while fetching: nothing was planned, readers kept run 2's generation.
    assert pending is None
    assert generation is not None and generation.generation == 2
    assert killed_then_rerun["rerun"].views == expected_views(FIRST + APPENDED)
    logs = [p.read_text(errors="replace") for p in history["base"].rglob("*.log")]
    assert logs, "the killed job's Spark log"
    assert TOKEN not in out + err + "".join(logs) + "".join(killed_then_rerun["logs"])
    for path in Path(history["config"].lakehouse.root).rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_retries_running_out_fail_the_cli_in_one_line_and_publish_nothing(
    api, spark, tmp_path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    """``lambda-sales batch`` through the CLI's entry point, in this process: its Spark session
    is the tests' (a JVM start saved; the SIGKILL test runs the command in a process)."""
    from delta.tables import DeltaTable

    from jobs.cli import main
    from sales_core.lakehouse import Lakehouse

    feed = Feed(texts=[s.text for s in FIRST], fail={4: 1000})
    api.feeds["broken"] = feed
    url = api.url("broken")
    conf = write_conf(tmp_path, url, retries=2)
    for name in [n for n in os.environ if n.startswith("LAMBDA_SALES")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LAMBDA_SALES__SOURCES__HTTP__TOKEN", TOKEN)
    monkeypatch.setenv("LAMBDA_SALES_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("LAMBDA_SALES_SPARK_LOG", "stderr")  # leave this process's stderr alone
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        status = main(["batch", "--conf", str(conf), "--quiet"])
    finally:  # the CLI set up logging for a process of its own
        root.handlers[:] = handlers
        root.setLevel(level)
    out, err = capsys.readouterr()
    message = (
        f"cannot read HTTP source {url} at cursor 'after-4': "
        "HTTP 500 Internal Server Error (after 3 attempts)"
    )
    assert status == 1, err[-3000:]
    assert err.rstrip("\n").splitlines()[-1] == f"lambda-sales batch: {message}"
    assert "Traceback" not in err + out
    assert sum("retrying" in line for line in err.splitlines()) == 2  # the DEBUG log was on
    assert [c for c, _ in feed.requests] == [None, "after-4", "after-4", "after-4"]
    assert {auth for _, auth in feed.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in out + err

    lakehouse = Lakehouse(str(tmp_path / "lakehouse"))
    runs = spark.read.format("delta").load(lakehouse.pipeline_runs).collect()
    assert [(r["status"], r["error"]) for r in runs] == [("failed", message)]
    assert not DeltaTable.isDeltaTable(spark, lakehouse.generations)
    for table in (lakehouse.ingest_ledger, lakehouse.master_dataset, lakehouse.quarantine):
        assert (
            not DeltaTable.isDeltaTable(spark, table)
            or spark.read.format("delta").load(table).count() == 0
        ), table


def test_a_fetch_that_fails_midway_leaves_nothing_the_next_one_keeps(
    api, spark, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Records pinned by an interrupted fetch are replaced by the next fetch of the epoch."""
    from batch_layer.sources import http
    from sales_core.errors import SourceError
    from sales_core.lakehouse import Lakehouse

    monkeypatch.setattr(http, "_CHUNK", 3)  # pin every page as it comes
    feed = Feed(texts=[s.text for s in FIRST], fail={8: 1000})
    api.feeds["flaky"] = feed
    config = load(write_conf(tmp_path, api.url("flaky"), retries=0))
    source = http.source(config.sources, Lakehouse(config.lakehouse.root))
    assert source is not None
    with pytest.raises(SourceError, match="at cursor 'after-8': HTTP 500"):
        source.plan(spark, (), epoch=7)
    pinned = spark.read.format("delta").load(source.pulled)
    assert pinned.count() == 2 * PAGE  # two pages were pinned before the third failed

    feed.fail.clear()
    planned = source.plan(spark, (), epoch=7)
    (entry,) = planned.entries
    assert entry.fields == {
        "start": {"cursor": None, "skip": 0},
        "end": {"cursor": "after-8", "taken": 2},
        "pages": 3,
        "records": 10,
    }
    pinned = spark.read.format("delta").load(source.pulled)
    rows = pinned.orderBy("page", "index").select("epoch", "page", "cursor", "index", "record")
    assert [tuple(r) for r in rows.collect()] == [
        (7, g // PAGE, cursor_at(g - g % PAGE), g % PAGE, s.text) for g, s in enumerate(FIRST)
    ]
