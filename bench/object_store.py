"""What an object store costs the speed layer: the real stream's micro-batches with the
lakehouse on this machine's disk and on an S3-compatible store, same run.

The real streaming job (``run_speed``, continuous, 1 s trigger, ``local[2]``) reads a topic of a
single-node Kafka broker (``devtools.kafka``) while ``bench/java/BenchProducer.java`` publishes
at a fixed rate for ``--duration`` seconds. The lakehouse is a directory of this disk or
``s3a://`` on a MinIO server the bench starts on loopback (``devtools.object_store``), with the
project's S3 settings (S3A, the conditional-PUT LogStore; delta-rs for the driver's appends).
Runs alternate between the two stores, each on a new topic and lakehouse, so both see the same
machine. Per run, over the micro-batches after ``--warmup`` seconds that read something: the
median and p95 of a micro-batch's duration (its ``started_at`` to ``ended_at`` in the stream's
own metrics table) and of the newest event's age when its micro-batch ended (freshness).
Medians over runs are printed with the ratio S3 / local disk, and appended as one JSON line to
``bench/out/results.jsonl``.

    python bench/object_store.py                         # 1,000 events/s, 90 s, 3 runs per store
    python bench/object_store.py --rate 5000 --duration 60 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    OUT,
    append_result,
    load_average,
    machine_info,
    new_record,
    percentile,
)
from bench.stream import (  # noqa: E402
    Bench,
    RunningStream,
    config_for,
    read_offsets,
    stream_metrics,
    wait_for_stream,
)

STORES = ("local", "s3")


def one_run(
    bench: Bench, spark: Any, store: str, root: str, s3: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """The stream on one new topic and lakehouse while the producer publishes; its figures."""
    from sales_core.lakehouse import Lakehouse

    topic = f"bench-store-{store}-{uuid.uuid4().hex[:6]}"
    bench.create_topic(topic)
    config = config_for(
        bench,
        bench.work / "runs" / topic,
        topic,
        lakehouse=root,
        extra=[
            f'[lakehouse.s3]\nendpoint = "{s3.endpoint}"\nregion = "{s3.region}"\npath_style = true',
            "[speed]\ncompact_interval_seconds = 0.0",  # the same work per micro-batch on both
        ],
    )
    stream = RunningStream(spark, config, "1 second")
    try:
        wait_for_stream(spark)
        started = time.time()
        produced = bench.produce(topic, args.rate * args.duration, args.rate, f"{store}-")
        deadline = time.monotonic() + 120
        while read_offsets(spark) < args.rate * args.duration and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # the last micro-batch's commits and metrics
    finally:
        stream.stop()
    metrics = stream_metrics(spark, Lakehouse(config.lakehouse.root).stream_metrics)
    steady = [
        m
        for m in metrics
        if m["input_rows"] > 0 and m["started_at"].timestamp() >= started + args.warmup
    ]
    durations = [(m["ended_at"] - m["started_at"]).total_seconds() for m in steady]
    freshness = [
        (m["ended_at"] - m["newest_message_at"]).total_seconds()
        for m in steady
        if m["newest_message_at"] is not None
    ]
    rows = sum(m["valid"] for m in metrics)
    if rows != args.rate * args.duration:
        raise SystemExit(f"bench: {store} stream kept {rows} events of {args.rate * args.duration}")

    return {
        "store": store,
        "micro_batches": len(steady),
        "duration_p50_s": round(statistics.median(durations), 3),
        "duration_p95_s": round(percentile(durations, 0.95), 3),
        "freshness_p50_s": round(statistics.median(freshness), 3),
        "freshness_p95_s": round(percentile(freshness, 0.95), 3),
        "events": rows,
        "producer": produced,
        "load1": round(load_average()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000, help="events/s published (1000)")
    parser.add_argument("--duration", type=int, default=90, help="seconds of load per run (90)")
    parser.add_argument(
        "--warmup", type=int, default=15, help="seconds of each run left out of the figures (15)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per store (3)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rate < 1 or args.duration <= args.warmup:
        parser.error("need --runs >= 1, --rate >= 1 and --duration > --warmup")

    from devtools import object_store as minio
    from sales_core.config import S3Conf, load_config
    from sales_core.session import get_spark

    work = OUT / "object_store"
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {json.dumps(machine_info())}", flush=True)
    store = minio.start(work / "minio" / "data")
    os.environ.update(store.env())  # S3A's and delta-rs's credentials, as a job's
    s3 = S3Conf(endpoint=store.endpoint, region=minio.REGION, path_style=True)
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    minio.create_bucket(store, bucket)
    bench = Bench(work)
    record = new_record("object_store", args)
    runs: list[dict[str, Any]] = []
    try:
        config = load_config(environ={"LAMBDA_SALES__SPARK__MASTER": "local[2]"})
        spark = get_spark(config.spark, app_name="bench-object-store", s3=s3)
        for i in range(args.runs):
            for where in STORES:
                root = (
                    f"s3a://{bucket}/run-{i}"
                    if where == "s3"
                    else str(work / "local" / f"run-{i}-{uuid.uuid4().hex[:6]}")
                )
                result = one_run(bench, spark, where, root, s3, args)
                runs.append(result)
                print(
                    f"[{where} run {i + 1}] {result['micro_batches']} micro-batches: duration "
                    f"p50 {result['duration_p50_s']:.3f} s p95 {result['duration_p95_s']:.3f} s; "
                    f"freshness p50 {result['freshness_p50_s']:.3f} s "
                    f"(load {result['load1']})",
                    flush=True,
                )
        spark.stop()
    finally:
        bench.stop()
        minio.stop(store)

    summary: dict[str, Any] = {}
    for where in STORES:
        mine = [r for r in runs if r["store"] == where]
        summary[where] = {
            k: round(statistics.median(r[k] for r in mine), 3)
            for k in ("duration_p50_s", "duration_p95_s", "freshness_p50_s", "freshness_p95_s")
        }
    ratio = summary["s3"]["duration_p50_s"] / summary["local"]["duration_p50_s"]
    extra = summary["s3"]["duration_p50_s"] - summary["local"]["duration_p50_s"]
    print(f"\n{args.rate:,} events/s, 1 s trigger, median of {args.runs} runs per store:")
    for where in STORES:
        s = summary[where]
        print(
            f"  {where:<6} micro-batch p50 {s['duration_p50_s']:.3f} s  p95 {s['duration_p95_s']:.3f} s"
            f"   freshness p50 {s['freshness_p50_s']:.3f} s  p95 {s['freshness_p95_s']:.3f} s"
        )
    print(f"  object store: {extra:+.3f} s per micro-batch ({ratio:.2f}x local disk)")
    record.update(runs=runs, summary=summary, s3_over_local=round(ratio, 3))
    append_result(record, OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
