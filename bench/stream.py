"""Speed layer benchmark: the real streaming job against a real broker on the same machine.

Three measurements, in one process, on ``local[2]`` (the project's ``get_spark``) with a
single-node Kafka broker (``devtools.kafka``) on a free port:

(a) **throughput** — ``run_speed(available_now=True)`` over a pre-filled topic of N events
    (3 partitions, default 1M), from an empty lakehouse, against the baseline a Spark user
    would write first: a batch read of the same topic written to a Delta table as is
    (``spark.read.format("kafka") ... write.format("delta")``). Interleaved runs; the
    ratio speed/baseline is what to compare across machines.
(b) **sustained rate** — the stream running continuously (1 s trigger) while a producer
    publishes at a fixed rate for ``--duration`` seconds (default 300); a rate is *kept up*
    when the backlog does not grow: its slope over the window after a warm-up (published by
    then less read by then, at each micro-batch's end) is below 2% of the rate
    and the stream drains within 30 s once the producer stops. The highest rate kept up is
    reported.
(c) **freshness** — at 1k and 10k events/s (``--fresh-rates``) with a 1 s trigger: per
    event, from the moment the producer handed it to Kafka (its ``event_time``) until the
    commit of its micro-batch's increments and until the first answer of ``lambda-sales
    serve`` over HTTP that counts it: p50/p95/p99 over all events and over those sent after a
    warm-up (``--fresh-warmup``); and where a micro-batch's time goes (Spark's phases from the
    query's progress reports, the sink's steps from timers around them).

The load comes from ``bench/java/BenchProducer.java`` (the official Java client, run as a
single source file with the broker's jars): kafka-python needs a whole core at ~35k msgs/s,
taken from the Spark job under test on a 2-core machine. ``lambda-sales generate --to kafka``
(kafka-python) is timed once for the record. Results are printed and appended as one JSON
line to ``bench/out/results.jsonl``.

    python bench/stream.py                                  # a, b (20k, 35k, 50k/s), c
    python bench/stream.py --only throughput --events 200k --runs 1
    python bench/stream.py --only sustained --rates 30000,40000 --duration 120
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    OUT,
    STEPS,
    CpuMeter,
    append_result,
    instrument,
    load_average,
    new_record,
    parse_count,
    stopwatch,
)

PARTITIONS = 3
PRODUCER = ROOT / "bench" / "java" / "BenchProducer.java"
GOALS = {"sustained_events_per_s": 50_000, "freshness_p50_s": 2.0, "freshness_p95_s": 4.0}


# --------------------------------------------------------------------------- broker and load


class Bench:
    def __init__(self, work: Path) -> None:
        from devtools import kafka as kafka_service
        from devtools.kafka_files import ensure_libs

        self.work = work
        self.kafka_service = kafka_service
        self.libs = ensure_libs()
        status = kafka_service.start_on_free_port(work / "kafka")
        assert status.bootstrap is not None
        self.bootstrap = status.bootstrap

    def stop(self) -> None:
        self.kafka_service.stop(data_dir=self.work / "kafka")

    def create_topic(self, name: str) -> None:
        self.kafka_service.create_topic(self.bootstrap, name, partitions=PARTITIONS)

    def topic_size(self, name: str) -> int:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            partitions = consumer.partitions_for_topic(name) or set()
            ends = consumer.end_offsets([TopicPartition(name, p) for p in partitions])
            return sum(ends.values())
        finally:
            consumer.close()

    def producer(self, topic: str, events: int, rate: float, prefix: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                "java",
                "-cp",
                f"{self.libs}/*",
                str(PRODUCER),
                self.bootstrap,
                topic,
                str(events),
                str(rate),
                prefix,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def produce(self, topic: str, events: int, rate: float, prefix: str) -> dict[str, Any]:
        proc = self.producer(topic, events, rate, prefix)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"producer failed: {err.strip()[-500:]}")
        return dict(json.loads(out.strip().splitlines()[-1]))


def config_for(
    bench: Bench,
    root: Path,
    topic: str,
    *,
    lakehouse: str | None = None,
    extra: Sequence[str] = (),
    **speed: Any,
) -> Any:
    """The configuration of one measurement under ``root`` (its file, landing zone and, unless
    ``lakehouse`` names another root such as ``s3a://``, its lakehouse); ``extra``: more TOML
    sections, as written."""
    from sales_core.config import load_config

    root.mkdir(parents=True, exist_ok=True)
    lines = [
        f'[lakehouse]\nroot = "{lakehouse or root / "lakehouse"}"',
        f'[sources.files]\nlanding = "{root / "landing"}"',
        f'[sources.kafka]\nbootstrap_servers = "{bench.bootstrap}"\ntopic = "{topic}"\ndlq_topic = "{topic}-dlq"',
        *(f"{k} = {json.dumps(v)}" for k, v in speed.items() if k == "max_offsets_per_trigger"),
        '[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\ndriver_memory = "4g"',
        '[logging]\nlevel = "WARNING"',
        *extra,
    ]
    path = root / "pipeline.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path, env_name="local")


# --------------------------------------------------------------------------- (a) throughput


def throughput(bench: Bench, spark: Any, events: int, runs: int) -> dict[str, Any]:
    from speed_layer.job import run_speed

    topic = f"bench-prefill-{events}"
    if bench.topic_size(topic) != events:
        bench.create_topic(topic)
        if bench.topic_size(topic) != 0:
            raise RuntimeError(
                f"topic {topic} holds another number of events: delete {bench.work / 'kafka'}"
            )
        print(f"(a) pre-filling {topic} with {events:,} events", flush=True)
        filled = bench.produce(topic, events, 0, f"pre{events}")
        print(f"    {filled['rate']:,.0f} events/s through the Java producer", flush=True)

    meter = CpuMeter()
    speed_s: list[float] = []
    baseline_s: list[float] = []
    speed_cpu: list[float] = []
    for run in range(runs):
        root = bench.work / "throughput" / f"run{run}"
        shutil.rmtree(root, ignore_errors=True)
        config = config_for(bench, root, topic)
        with meter.measure() as sample:
            result = run_speed(spark, config, available_now=True, progress=lambda _m: None)
        if result.totals.input_rows != events or result.totals.valid != events:
            raise RuntimeError(
                f"the stream read {result.totals.input_rows} / inserted {result.totals.valid}, expected {events}"
            )
        speed_s.append(sample[0].wall_s)
        speed_cpu.append(sample[0].others_busy)

        target = str(root / "baseline")
        with stopwatch() as elapsed:
            (
                spark.read.format("kafka")
                .option("kafka.bootstrap.servers", bench.bootstrap)
                .option("subscribe", topic)
                .option("startingOffsets", "earliest")
                .load()
                .select("key", "value", "topic", "partition", "offset", "timestamp")
                .write.format("delta")
                .mode("overwrite")
                .save(target)
            )
        baseline_s.append(elapsed())
        print(
            f"    run {run + 1}: speed --available-now {speed_s[-1]:6.1f}s ({events / speed_s[-1]:,.0f} ev/s, "
            f"{result.totals.batches} micro-batches)   baseline read+write {baseline_s[-1]:6.1f}s "
            f"({events / baseline_s[-1]:,.0f} ev/s)   others busy {speed_cpu[-1]:.0%}",
            flush=True,
        )
    speed, base = statistics.median(speed_s), statistics.median(baseline_s)
    return {
        "events": events,
        "runs": runs,
        "speed_s": speed_s,
        "baseline_s": baseline_s,
        "others_busy": speed_cpu,
        "speed_events_per_s": round(events / speed),
        "baseline_events_per_s": round(events / base),
        "ratio_speed_over_baseline": round(speed / base, 2),
    }


# --------------------------------------------------------------------------- (b), (c) running stream


class RunningStream:
    """``run_speed`` (continuous) in a thread of this process, stopped like SIGTERM would."""

    def __init__(self, spark: Any, config: Any, trigger: str) -> None:
        from speed_layer.job import run_speed

        self.stop_event = threading.Event()
        self.error: BaseException | None = None

        def target() -> None:
            try:
                run_speed(
                    spark, config, trigger=trigger, stop=self.stop_event, progress=lambda _m: None
                )
            except BaseException as exc:  # reported by stop()
                self.error = exc

        self.thread = threading.Thread(target=target, name="speed", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=900)
        if self.error is not None:
            raise RuntimeError(f"the stream failed: {self.error}")


def wait_for_stream(spark: Any, timeout: float = 300) -> None:
    """Until the streaming query runs (checkpoint and tables checked, tables created)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if speed_query(spark) is not None:
            time.sleep(3)  # its first trigger found the topic empty
            return
        time.sleep(0.5)
    raise RuntimeError("the stream did not start in time")


def stream_metrics(spark: Any, path: str) -> list[dict[str, Any]]:
    return [r.asDict() for r in spark.read.format("delta").load(path).orderBy("batch_id").collect()]


def lag_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (events/s) of lag over time."""
    if len(points) < 3:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def start_stream(bench: Bench, spark: Any, kind: str, rate: int) -> tuple[str, Any, RunningStream]:
    """A new topic and lakehouse for one measurement, and the stream running on them
    (continuous, 1 s trigger). Returns the topic, the lakehouse and the stream."""
    from sales_core.lakehouse import Lakehouse

    topic = f"bench-{kind}-{rate}-{uuid.uuid4().hex[:6]}"
    bench.create_topic(topic)
    config = config_for(bench, bench.work / kind / topic, topic)
    stream = RunningStream(spark, config, "1 second")
    wait_for_stream(spark)
    return topic, Lakehouse(config.lakehouse.root), stream


def speed_query(spark: Any) -> Any:
    """The running speed query of this process (None before it starts)."""
    from speed_layer.job import QUERY_NAME

    return next((q for q in spark.streams.active if q.name == QUERY_NAME), None)


def read_offsets(spark: Any) -> int:
    """Records the speed query has read (end offsets of its newest progress report, summed)."""
    from speed_layer.metrics import progress_offsets

    query = speed_query(spark)
    progress = query.lastProgress if query is not None else None
    if not progress:
        return 0
    kafka = [s for s in progress["sources"] if s["description"].startswith("Kafka")]
    return sum(progress_offsets(kafka[0]["endOffset"]).values()) if kafka else 0


def sustained(
    bench: Bench, spark: Any, rate: int, duration: int, warmup: int = 30
) -> dict[str, Any]:
    topic, lakehouse, stream = start_stream(bench, spark, "sustained", rate)
    try:
        started = datetime.now(timezone.utc)
        meter = CpuMeter()
        with meter.measure() as sample:
            produced = bench.produce(topic, rate * duration, rate, f"r{rate}")
        # Drain: how long after the producer stopped until a micro-batch has read every
        # record published (the query's own progress: the metrics table is written in batches).
        total = bench.topic_size(topic)
        deadline = time.monotonic() + max(120.0, duration)
        drained_s = None
        with stopwatch() as elapsed:
            while time.monotonic() < deadline:
                if read_offsets(spark) >= total:
                    drained_s = elapsed()
                    break
                time.sleep(0.2)
    finally:
        stream.stop()
    rows = [r for r in stream_metrics(spark, lakehouse.stream_metrics) if r["input_rows"] > 0]
    t0 = started.timestamp()
    # The backlog when each micro-batch ends: published by then (the producer keeps its pace:
    # rate × elapsed) less read by then. Spark's own lag (latest offset less the micro-batch's
    # end offset) is 0 whenever a micro-batch takes everything there is, however far behind.
    points, read = [], 0
    for r in sorted(rows, key=lambda r: r["batch_id"]):
        read += r["input_rows"]
        at = r["ended_at"].replace(tzinfo=timezone.utc).timestamp() - t0
        if warmup <= at <= duration:
            points.append((at, max(0.0, produced["rate"] * at - read)))
    slope = lag_slope(points)
    batch_ms = statistics.median(r["duration_ms"] for r in rows) if rows else None
    kept_up = (
        produced["rate"] >= 0.97 * rate
        and slope < 0.02 * rate
        and drained_s is not None
        and drained_s < 30
    )
    result = {
        "rate": rate,
        "duration_s": duration,
        "published_rate": produced["rate"],
        "producer_max_behind_ms": produced["max_behind_ms"],
        "lag_slope_per_s": round(slope, 1),
        "lag_max": round(max((p[1] for p in points), default=0)),
        "batches": [(r["input_rows"], r["duration_ms"]) for r in rows],
        "drain_s": None if drained_s is None else round(drained_s, 1),
        "median_batch_ms": batch_ms,
        "micro_batches": len(rows),
        "others_busy": round(sample[0].others_busy, 3),
        "kept_up": kept_up,
    }
    print(
        f"    {rate:>7,}/s for {duration}s: published {produced['rate']:,.0f}/s, lag slope {slope:,.0f}/s, "
        f"max lag {result['lag_max']}, drained in {result['drain_s']}s, median micro-batch {batch_ms} ms "
        f"→ {'kept up' if kept_up else 'fell behind'}",
        flush=True,
    )
    return result


class HttpPoller:
    """``lambda-sales serve`` on the bench's lakehouse, asked for a small merged view over and
    over: when each answer arrived and how many events it counted (a thread)."""

    VIEW = "revenue_category_monthly"  # a handful of rows: the answer is cheap to fetch

    def __init__(self, conf_path: Path, interval: float = 0.02) -> None:
        from devtools.processes import free_port

        self.port = free_port()
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("lambda-sales")),
                "serve",
                "--conf",
                str(conf_path),
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.samples: list[tuple[int, int]] = []  # (answer received, epoch ms; events counted)
        self.interval = interval
        self._stop = threading.Event()
        deadline = time.monotonic() + 60
        while self._get("/health") is None:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("lambda-sales serve did not start")
            time.sleep(0.2)
        self.thread = threading.Thread(target=self._run, name="http-poller", daemon=True)
        self.thread.start()

    def _get(self, path: str) -> Any:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return json.loads(r.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            answer = self._get(f"/views/{self.VIEW}?limit=100000")
            if answer is not None:
                events = sum(int(row["events"]) for row in answer["rows"])
                self.samples.append((int(time.time() * 1000), events))
            time.sleep(self.interval)

    def close(self) -> None:
        from devtools.processes import stop_group

        self._stop.set()
        if hasattr(self, "thread"):
            self.thread.join(timeout=30)
        stop_group(self.process, term_wait=10)


def first_answers(samples: list[tuple[int, int]], needed: dict[int, int]) -> dict[int, int]:
    """Per micro-batch, when the first answer arrived that counted at least ``needed[batch]``
    events (the events of every micro-batch up to it: commits are in micro-batch order)."""
    visible: dict[int, int] = {}
    order = sorted(needed.items())
    i = 0
    for at, events in samples:
        while i < len(order) and events >= order[i][1]:
            visible[order[i][0]] = at
            i += 1
    return visible


def percentiles(
    spark: Any, lakehouse: Any, visible: dict[int, int], since_ms: int = 0
) -> dict[str, Any]:
    """Freshness per event (visible at - event_time, the producer's send time) over the
    micro-batches in ``visible`` and the events sent from ``since_ms`` on: count, p50/p95/p99
    and max, in seconds."""
    from pyspark.sql import functions as F

    visible_df = spark.createDataFrame(list(visible.items()), "batch_id long, visible_ms long")
    row = (
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .where(F.unix_millis("event_time") >= since_ms)
        .join(visible_df, F.col("ingest_batch") == F.col("batch_id"))
        .select((F.col("visible_ms") - F.unix_millis("event_time")).alias("latency_ms"))
        .agg(
            F.count(F.lit(1)).alias("events"),
            F.percentile_approx("latency_ms", [0.5, 0.95, 0.99], 10_000).alias("p"),
            F.max("latency_ms").alias("max"),
        )
        .first()
    )
    return {
        "events": row["events"],
        "p50_s": row["p"][0] / 1000,
        "p95_s": row["p"][1] / 1000,
        "p99_s": row["p"][2] / 1000,
        "max_s": row["max"] / 1000,
    }


def breakdown(
    progress: list[dict[str, Any]], steps: dict[str, list[float]], since: datetime
) -> dict[str, Any]:
    """Where a micro-batch's time goes: medians over the micro-batches that read records and
    started from ``since`` on, of Spark's own phases (``durationMs`` of each progress report:
    ``addBatch`` is the sink) and of the sink's steps (:data:`bench.common.STEPS`; every
    micro-batch), in milliseconds."""
    batches = [
        p
        for p in progress
        if p.get("numInputRows", 0) > 0
        and datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")) >= since
    ]
    phases = sorted({k for p in batches for k in p.get("durationMs", {})})
    return {
        "micro_batches": len(batches),
        "median_rows": statistics.median(p["numInputRows"] for p in batches) if batches else 0,
        "spark_ms": {
            k: statistics.median(p["durationMs"].get(k, 0) for p in batches) for k in phases
        },
        "sink_ms": {
            label: round(1000 * statistics.median(steps[label]))
            for *_x, label in STEPS
            if steps.get(label)
        },
    }


def freshness(
    bench: Bench,
    spark: Any,
    rate: int,
    duration: int,
    steps: dict[str, list[float]],
    warmup: int,
) -> dict[str, Any]:
    """Per event, from the producer's send to (a) the increments commit that holds it and
    (b) the first HTTP answer of ``lambda-sales serve`` that counts it; and where the time of
    the micro-batches goes (``steps``: the sink's step timers, filled while the stream runs).

    Every figure is given over all the events and, as ``steady``, over the events sent after
    the first ``warmup`` seconds: the stream's first micro-batches of a process pay for the
    JVM's JIT, Spark's code generation and the first read of the tables, and a stream runs
    for hours."""
    from pyspark.sql import functions as F

    topic, lakehouse, stream = start_stream(bench, spark, "freshness", rate)
    steps.clear()
    query = speed_query(spark)
    progress: list[dict[str, Any]] = []
    poller = HttpPoller(Path(lakehouse.root).parent / "pipeline.toml")
    try:
        sent_from = datetime.now(timezone.utc)
        produced = bench.produce(topic, rate * duration, rate, f"f{rate}")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if poller.samples and poller.samples[-1][1] >= rate * duration:
                break
            time.sleep(0.5)
        time.sleep(1)
        progress = [json.loads(p.json) for p in query.recentProgress]
    finally:
        poller.close()
        stream.stop()

    # When each micro-batch's events became visible in every view: the commit time of its
    # increments (one commit, every view; Delta log: commit timestamp + the batch_id stats).
    committed: dict[int, int] = {}
    log_dir = Path(lakehouse.speed_increments) / "_delta_log"
    for commit in sorted(log_dir.glob("*.json")):
        timestamp, batches = None, set()
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                timestamp = int(action["commitInfo"]["timestamp"])
            if "add" in action and action["add"].get("stats"):
                stats = json.loads(action["add"]["stats"])
                batches.add(int(stats["minValues"]["batch_id"]))
        for batch in batches:
            if timestamp is not None:
                committed[batch] = timestamp
    per_batch = {
        int(r["ingest_batch"]): int(r["n"])
        for r in spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .groupBy("ingest_batch")
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    }
    needed, total = {}, 0
    for batch in sorted(per_batch):
        total += per_batch[batch]
        needed[batch] = total
    answered = first_answers(poller.samples, needed)
    metrics = [r for r in stream_metrics(spark, lakehouse.stream_metrics) if r["input_rows"] > 0]
    at_commit = percentiles(spark, lakehouse, committed)
    over_http = percentiles(spark, lakehouse, answered)
    steady_from = sent_from + timedelta(seconds=warmup)
    since_ms = int(steady_from.timestamp() * 1000)
    steady = {
        "warmup_s": warmup,
        "at_commit": percentiles(spark, lakehouse, committed, since_ms),
        "http": percentiles(spark, lakehouse, answered, since_ms),
    }
    polls = [b[0] - a[0] for a, b in zip(poller.samples, poller.samples[1:], strict=False)]
    result = {
        "rate": rate,
        "duration_s": duration,
        "published_rate": produced["rate"],
        "events": at_commit["events"],
        "p50_s": at_commit["p50_s"],
        "p95_s": at_commit["p95_s"],
        "p99_s": at_commit["p99_s"],
        "max_s": at_commit["max_s"],
        "http": over_http,
        "http_poll_median_ms": statistics.median(polls) if polls else None,
        "median_batch_ms": statistics.median(r["duration_ms"] for r in metrics),
        "micro_batches": len(metrics),
        "steady": steady,
        "breakdown": breakdown(progress, steps, steady_from),
    }
    print(
        f"    {rate:,}/s, 1 s trigger, {duration}s: in the increments p50 {result['p50_s']:.2f}s, "
        f"p95 {result['p95_s']:.2f}s, p99 {result['p99_s']:.2f}s; in an HTTP answer p50 "
        f"{over_http['p50_s']:.2f}s, p95 {over_http['p95_s']:.2f}s, p99 {over_http['p99_s']:.2f}s "
        f"({over_http['events']:,} events, an answer every {result['http_poll_median_ms']} ms); "
        f"median micro-batch {result['median_batch_ms']} ms",
        flush=True,
    )
    http = steady["http"]
    print(
        f"    after the first {warmup}s: in an HTTP answer p50 {http['p50_s']:.2f}s, "
        f"p95 {http['p95_s']:.2f}s, p99 {http['p99_s']:.2f}s ({http['events']:,} events)",
        flush=True,
    )
    parts = result["breakdown"]
    print(
        f"    where a micro-batch goes (medians over {parts['micro_batches']}, "
        f"{parts['median_rows']:,} records each):\n"
        + "\n".join(f"      spark {k:30s} {v:7.0f} ms" for k, v in parts["spark_ms"].items())
        + "\n"
        + "\n".join(f"      sink  {k:60s} {v:7.0f} ms" for k, v in parts["sink_ms"].items()),
        flush=True,
    )
    return result


def kafka_python_rate(bench: Bench, events: int) -> dict[str, Any]:
    """``lambda-sales generate --to kafka``'s publisher (kafka-python), for the record."""
    from devtools.generator import GeneratorSpec, generate_records
    from devtools.writers import publish_records

    topic = f"bench-kafka-python-{uuid.uuid4().hex[:6]}"
    config = config_for(bench, bench.work / "kafka-python", topic)
    records = list(generate_records(GeneratorSpec(events=events, seed=3)))
    with stopwatch() as elapsed:
        sent = publish_records(records, config.sources.kafka, partitions=PARTITIONS)
    java = bench.produce(topic, events, 0, "javacheck")
    result = {
        "events": sent,
        "kafka_python_events_per_s": round(sent / elapsed()),
        "java_events_per_s": round(java["rate"]),
    }
    print(
        f"    publishers: kafka-python {result['kafka_python_events_per_s']:,}/s, Java client {result['java_events_per_s']:,}/s",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", choices=("throughput", "sustained", "freshness", "publishers"), action="append"
    )
    parser.add_argument(
        "--events", type=parse_count, default=1_000_000, help="(a) topic size (default 1M)"
    )
    parser.add_argument("--runs", type=int, default=3, help="(a) measured runs (default 3)")
    parser.add_argument(
        "--rates", default="20000,35000,50000", help="(b) publish rates to try, events/s"
    )
    parser.add_argument(
        "--duration", type=int, default=300, help="(b) seconds at each rate (default 300)"
    )
    parser.add_argument(
        "--fresh-rates",
        default="1000,10000",
        help="(c) publish rates, events/s, one measurement each (default 1000,10000)",
    )
    parser.add_argument("--fresh-duration", type=int, default=120, help="(c) seconds (default 120)")
    parser.add_argument(
        "--fresh-warmup",
        type=int,
        default=20,
        help="(c) seconds of load left out of the steady-state figures (default 20)",
    )
    args = parser.parse_args(argv)
    parts = args.only or ["publishers", "throughput", "sustained", "freshness"]

    from sales_core.session import get_spark

    work = OUT / "stream"
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work)
    results: dict[str, Any] = new_record("stream", args)
    try:
        with stopwatch() as jvm:
            spark = get_spark(
                config_for(bench, work / "session", "unused").spark, app_name="bench-stream"
            )
        print(f"Spark session in {jvm():.1f}s; broker at {bench.bootstrap}", flush=True)
        if "publishers" in parts:
            print("publishers (100k events):", flush=True)
            results["publishers"] = kafka_python_rate(bench, 100_000)
        if "throughput" in parts:
            print(f"(a) throughput over {args.events:,} events, {args.runs} run(s):", flush=True)
            results["throughput"] = throughput(bench, spark, args.events, args.runs)
            t = results["throughput"]
            print(
                f"    median: speed {t['speed_events_per_s']:,} ev/s, baseline {t['baseline_events_per_s']:,} ev/s, "
                f"ratio speed/baseline time {t['ratio_speed_over_baseline']}",
                flush=True,
            )
        if "sustained" in parts:
            print(f"(b) sustained rate, {args.duration}s per rate:", flush=True)
            rates = [int(r) for r in args.rates.split(",")]
            trials = [sustained(bench, spark, rate, args.duration) for rate in rates]
            kept = [t["rate"] for t in trials if t["kept_up"]]
            results["sustained"] = {"trials": trials, "highest_kept_up": max(kept, default=None)}
            print(
                f"    highest rate kept up: {results['sustained']['highest_kept_up']} events/s "
                f"(goal {GOALS['sustained_events_per_s']:,})",
                flush=True,
            )
        if "freshness" in parts:
            print("(c) freshness:", flush=True)
            steps: dict[str, list[float]] = collections.defaultdict(list)
            instrument(steps)
            results["freshness"] = [
                freshness(bench, spark, int(rate), args.fresh_duration, steps, args.fresh_warmup)
                for rate in args.fresh_rates.split(",")
            ]
    finally:
        bench.stop()
    results["load_after"] = load_average()
    append_result(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
