"""The lakehouse and the landing zone on a real S3-compatible store (MinIO, one server for the
whole test session: the ``object_store`` fixture), each test in a bucket of its own.

- the store refuses a second ``PUT`` with ``If-None-Match: *`` (412), and so does the
  project's LogStore for Spark's commits: a version another writer took is refused, whoever
  took it (delta-rs here);
- the batch layer's Spark inserts and the speed layer's delta-rs appends commit to the same
  master dataset at the same time: every commit of both stays, every event once;
- the real CLI: ``batch`` and ``speed`` at the same time on one lakehouse, then ``query``
  (both engines) and ``serve`` answer the oracle's views; no credential in any output, log
  file, run record or ``lambda-sales config``.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql.pandas.types import to_arrow_schema

from devtools import object_store as minio
from devtools.generator import GeneratorSpec, generate_records, to_json_line
from devtools.processes import free_port
from devtools.writers import publish_records
from sales_core.config import load_config
from sales_core.handoff import SPEED_LAYER
from sales_core.lakehouse import MASTER_SCHEMA, Lakehouse, ensure_speed_tables
from sales_core.object_store import storage_options
from sales_core.packages import LOGSTORE_CLASS
from speed_layer.deltalog import DriverAppends
from tests.conftest import new_bucket, s3_conf
from tests.integration.test_speed_race import batch_insert
from tests.oracle import compute_views, event, judge, rows_to_view
from tests.processes import wait_until_serving

pytestmark = pytest.mark.integration

CLI = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "lambda-sales")
MASTER_ARROW = to_arrow_schema(MASTER_SCHEMA, timezone="UTC")


def test_the_store_refuses_a_second_conditional_put(object_store: minio.ObjectStore) -> None:
    bucket = new_bucket(object_store)
    assert minio.conditional_put(object_store, bucket, "log/0.json", b"first") == 200
    assert minio.conditional_put(object_store, bucket, "log/0.json", b"second") == 412
    # A plain PUT still replaces: the refusal is the condition's, not a write-once store's.
    assert minio.request(object_store, "PUT", f"/{bucket}/log/0.json", b"third") == 200


def test_spark_commits_refuse_a_version_another_writer_took(s3_spark, object_store) -> None:  # type: ignore[no-untyped-def]
    spark = s3_spark
    bucket = new_bucket(object_store)
    path = f"s3a://{bucket}/table"
    spark.range(3).write.format("delta").save(path)  # version 0, Spark's commit
    options = storage_options(s3_conf(object_store), path)
    table = DeltaTable(f"s3://{bucket}/table", storage_options=options)
    from deltalake import write_deltalake

    write_deltalake(table, pa.table({"id": pa.array([10], pa.int64())}), mode="append")
    assert table.version() == 1  # delta-rs's commit (its own conditional PUT)

    # A Spark writer that loses the race: its transaction reads version 1, and while its data
    # is being written delta-rs takes version 2. Spark's commit of version 2 must be refused
    # (the LogStore's conditional PUT; it probes nothing before it), and Delta then commits
    # the append as version 3: both writers' commits kept, none overwritten.
    assert spark.sparkContext.getConf().get("spark.delta.logStore.s3a.impl") == LOGSTORE_CLASS

    def slow(value: int) -> int:
        time.sleep(0.5)
        return value

    from pyspark.sql.functions import udf
    from pyspark.sql.types import LongType

    slow_ids = spark.range(20, 32, numPartitions=2).select(udf(slow, LongType())("id").alias("id"))
    writer = threading.Thread(
        target=lambda: slow_ids.write.format("delta").mode("append").save(path)
    )
    writer.start()
    deadline = time.monotonic() + 120
    while not spark.sparkContext.statusTracker().getActiveStageIds():
        assert time.monotonic() < deadline, "the Spark write never started"
        time.sleep(0.05)
    write_deltalake(table, pa.table({"id": pa.array([11], pa.int64())}), mode="append")
    writer.join(timeout=300)
    history = DeltaTable(f"s3://{bucket}/table", storage_options=options).history()
    by_version = {h["version"]: h for h in history}
    assert by_version[2]["operation"] == "WRITE", by_version[2]  # delta-rs's, kept
    spark_commit = by_version[3]
    assert spark_commit.get("readVersion") == 1, spark_commit  # it lost version 2 and retried
    assert sorted(r["id"] for r in spark.read.format("delta").load(path).collect()) == [
        0,
        1,
        2,
        10,
        11,
        *range(20, 32),
    ]


def _speed_rows(events: list[dict[str, Any]], batch_id: int) -> pa.Table:
    """Master rows of the speed layer (micro-batch ``batch_id``), as its driver appends them."""
    from tests.integration.test_speed_race import NOW

    rows = []
    for offset, e in enumerate(events):
        rows.append(
            {
                **{k: e[k] for k in MASTER_ARROW.names if k in e},
                "source": "kafka",
                "source_name": "sales-events",
                "source_partition": 0,
                "source_offset": batch_id * 100 + offset,
                "source_key": e["event_id"],
                "ingest_layer": SPEED_LAYER,
                "ingest_run": "speed",
                "ingest_batch": batch_id,
                "ingested_at": NOW,
            }
        )
    return pa.Table.from_pylist(rows, schema=MASTER_ARROW)


def test_batch_and_stream_commit_to_the_same_table_at_once(s3_spark, object_store) -> None:  # type: ignore[no-untyped-def]
    """The batch layer's inserts (Spark: a MERGE each, through the conditional-PUT LogStore)
    and the speed layer's appends (delta-rs from the driver, conditional PUTs) race for the
    versions of one master dataset on S3: each writer that loses a version retries, and no
    commit replaces another."""
    spark = s3_spark
    bucket = new_bucket(object_store)
    lakehouse = Lakehouse(f"s3a://{bucket}/lakehouse")
    ensure_speed_tables(spark, lakehouse)
    before = spark.sql(f"DESCRIBE HISTORY delta.`{lakehouse.master_dataset}`").count()
    batches = [
        [event(f"b{i}-{j}", amount=f"{i}{j}.25", customer_id=f"c{j}") for j in range(5)]
        for i in range(2)
    ]
    driver = DriverAppends(storage_options(s3_conf(object_store), lakehouse.master_dataset))
    assert driver.handles(lakehouse.master_dataset)
    streamed: list[list[dict[str, Any]]] = []
    errors: list[BaseException] = []
    batch_committed = threading.Event()

    def append(i: int) -> None:
        events = [
            event(f"s{i}-{j}", amount=f"{j}.75", region="south", channel="app") for j in range(5)
        ]
        driver.append(
            lakehouse.master_dataset,
            _speed_rows(events, i),
            user_metadata=f"lambda-sales-speed-speed:{i}",
        )
        streamed.append(events)

    def stream() -> None:
        """Micro-batches of 5 events: two at once, two more once the batch layer committed,
        so the writers interleave whatever the timing (a micro-batch every 0.2 s throughout
        starved the MERGEs on S3: 10 conflicts in a row, see the README)."""
        try:
            append(0)
            append(1)
            batch_committed.wait(timeout=300)
            append(2)
            append(3)
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    racer = threading.Thread(target=stream)
    racer.start()
    try:
        for i, events in enumerate(batches):
            batch_insert(spark, lakehouse, events, f"batch-{i:08d}")
            batch_committed.set()
    finally:
        batch_committed.set()
        racer.join()
    assert not errors, errors

    history = spark.sql(f"DESCRIBE HISTORY delta.`{lakehouse.master_dataset}`").collect()
    versions = sorted(h["version"] for h in history)
    assert versions == list(range(len(versions)))
    assert len(versions) == before + len(batches) + len(streamed)  # no commit lost or doubled
    ordered = sorted(history, key=lambda h: h["version"])[before:]
    writers = ["spark" if h["operation"] == "MERGE" else "delta-rs" for h in ordered]
    switches = sum(1 for a, b in zip(writers, writers[1:], strict=False) if a != b)
    assert switches >= 2, f"the writers did not interleave: {writers}"  # at once, not in turn

    master = spark.read.format("delta").load(lakehouse.master_dataset)
    every = [e for group in batches + streamed for e in group]
    assert sorted(r["event_id"] for r in master.select("event_id").collect()) == sorted(
        e["event_id"] for e in every
    )
    from sales_core.views import VIEWS, compute_view

    expected = compute_views(every)
    for name, view in VIEWS.items():
        rows = [r.asDict() for r in master.transform(compute_view(view)).collect()]
        assert rows_to_view(rows, name) == expected[name], name


# ------------------------------------------------------------------ the CLI on the store


def _run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if "event_date" in out:
        out["event_date"] = datetime.fromisoformat(out["event_date"]).date()
    for column in ("event_hour", "first_event_time", "last_event_time"):
        if column in out:
            out[column] = datetime.fromisoformat(out[column].replace("Z", "+00:00"))
    return out


def _jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line, parse_float=Decimal) for line in text.splitlines() if line]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_batch_speed_query_and_serve_on_the_store(  # type: ignore[no-untyped-def]
    s3_spark, object_store, kafka_bootstrap: str, tmp_path: Path
) -> None:
    spark = s3_spark
    bucket = new_bucket(object_store)
    root, landing = f"s3a://{bucket}/lakehouse", f"s3a://{bucket}/landing"
    topic = f"s3-{uuid.uuid4().hex[:8]}"
    logs = tmp_path / "logs"
    env = {
        **os.environ,
        **object_store.env(),
        "LAMBDA_SALES__LAKEHOUSE__ROOT": root,
        "LAMBDA_SALES__SOURCES__FILES__LANDING": landing,
        "LAMBDA_SALES__LAKEHOUSE__S3__ENDPOINT": object_store.endpoint,
        "LAMBDA_SALES__LAKEHOUSE__S3__REGION": minio.REGION,
        "LAMBDA_SALES__LAKEHOUSE__S3__PATH_STYLE": "true",
        "LAMBDA_SALES__SOURCES__KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LAMBDA_SALES__SOURCES__KAFKA__TOPIC": topic,
        "LAMBDA_SALES__SOURCES__KAFKA__DLQ_TOPIC": f"{topic}-dlq",
        "LAMBDA_SALES__SOURCES__KAFKA__MAX_OFFSETS_PER_TRIGGER": "300",
        "LAMBDA_SALES__QUALITY__MIN_SCORE": "0",
        "LAMBDA_SALES__SPARK__MASTER": "local[2]",
        "LAMBDA_SALES__SPARK__SHUFFLE_PARTITIONS": "2",
        "LAMBDA_SALES__SPARK__CONF__spark.ui.enabled": "false",
        "LAMBDA_SALES_LOG_DIR": str(logs),
        "LAMBDA_SALES__LOGGING__LEVEL": "DEBUG",
    }
    end = datetime.now(timezone.utc) - timedelta(minutes=2)
    landed = list(
        generate_records(
            GeneratorSpec(events=600, seed=21, end=end, duplicate_share=0, id_prefix="file")
        )
    )
    body = "".join(to_json_line(r) + "\n" for r in landed).encode()
    assert minio.request(object_store, "PUT", f"/{bucket}/landing/day-1/sales.jsonl", body) == 200
    streamed = list(
        generate_records(
            GeneratorSpec(events=500, seed=22, end=end, duplicate_share=0, id_prefix="kafka")
        )
    )
    streamed += landed[:80]  # also in the landing file: counted once
    kafka = load_config(
        environ={k: v for k, v in env.items() if k.startswith("LAMBDA_SALES__")}
    ).sources.kafka
    assert publish_records(streamed, kafka, partitions=2) == len(streamed)

    # The batch and the stream at once, on one lakehouse on the store.
    started = time.monotonic()
    speed = subprocess.Popen(
        [CLI, "speed", "--available-now", "--quiet"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    batch = _run(["batch", "--quiet"], env, tmp_path)
    speed_out, speed_err = speed.communicate(timeout=600)
    took = time.monotonic() - started
    assert batch.returncode == 0, batch.stderr
    assert speed.returncode == 0, speed_err
    outputs = [batch.stdout, batch.stderr, speed_out, speed_err]

    now = datetime.now(timezone.utc)
    valid = [j for j in (judge(r, now) for r in [*landed, *streamed]) if isinstance(j, dict)]
    expected = compute_views(valid)
    master = Lakehouse(root).master_dataset
    master_ids = [
        r["event_id"] for r in spark.read.format("delta").load(master).select("event_id").collect()
    ]
    assert len(master_ids) == len(set(master_ids)), "an event was inserted twice"
    unexpected = set(master_ids) - {e["event_id"] for e in valid}
    assert not unexpected, sorted(unexpected)[:5]
    layers = {
        r["ingest_layer"]
        for r in spark.read.format("delta").load(master).select("ingest_layer").distinct().collect()
    }
    assert layers == {"batch", "speed"}

    timings = {"batch and speed at once": took}
    started = time.monotonic()
    fast: dict[str, list[dict[str, Any]]] = {}
    for name in expected:
        done = _run(["query", name, "--format", "jsonl", "--engine", "fast"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        outputs += [done.stdout, done.stderr]
        fast[name] = _jsonl(done.stdout)
        assert rows_to_view([_typed(r) for r in fast[name]], name) == expected[name], name
    timings["4 fast queries"] = time.monotonic() - started
    started = time.monotonic()
    # Spark's engine (a JVM start): one view, the same lines as the fast path's.
    on_spark = _run(
        ["query", "sales_daily", "--format", "jsonl", "--engine", "spark"], env, tmp_path
    )
    assert on_spark.returncode == 0, on_spark.stderr
    outputs += [on_spark.stdout, on_spark.stderr]
    assert _jsonl(on_spark.stdout) == fast["sales_daily"]

    timings["spark query"] = time.monotonic() - started
    started = time.monotonic()
    port = free_port()
    server = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--quiet"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(server, url)
        for name in expected:
            response = httpx.get(f"{url}/views/{name}", params={"limit": 100000}, timeout=30)
            assert response.status_code == 200, response.text
            rows = json.loads(response.text, parse_float=Decimal)["rows"]
            assert rows_to_view([_typed(r) for r in rows], name) == expected[name], name
    finally:
        server.terminate()
        served = server.communicate(timeout=30)
    outputs += list(served)
    timings["serve"] = time.monotonic() - started

    # No credential anywhere: outputs, every log file, the run records, the printed config.
    printed = _run(["config"], env, tmp_path)
    assert (
        printed.returncode == 0
        and root in printed.stdout
        and object_store.endpoint in printed.stdout
    )
    outputs += [printed.stdout, printed.stderr]
    runs = [
        json.dumps(r.asDict(recursive=True), default=str)
        for r in spark.read.format("delta").load(Lakehouse(root).pipeline_runs).collect()
    ]
    assert len(runs) >= 2
    files = [p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()]
    assert files, "no Spark log file was written"
    for text in [*outputs, *runs, *files]:
        assert object_store.secret_key not in text
        assert object_store.access_key not in text
    print(", ".join(f"{k}: {v:.0f} s" for k, v in timings.items()))
