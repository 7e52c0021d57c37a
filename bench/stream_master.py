"""Speed micro-batch time against master datasets of different sizes (same micro-batch size).

For each size N (default 1M and 20M), a lakehouse whose master dataset holds N events the
batch layer inserted (built once with Spark, then reused: ``bench/out/stream/master-N``),
and a topic of its own. Each measured run publishes ``--batches`` × ``--batch-events`` new
events (a new id prefix per run, 3 partitions) and runs ``speed --available-now`` over them
with ``max_offsets_per_trigger = --batch-events``; the time of each micro-batch's sink comes
from ``stream_metrics``. The first run over a size also takes the state's first look at the
master dataset (every batch-layer id into the de-duplication state) and is reported apart.
Run it from a tree of another revision (copy this file there) to measure that revision.

    python bench/stream_master.py --sizes 1M,20M --batch-events 10k --batches 5 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import OUT, append_result, load_average, new_record, parse_count  # noqa: E402
from bench.stream import Bench, config_for  # noqa: E402


def build_master(spark: Any, root: Path, events: int) -> Path:
    """A lakehouse whose master dataset holds ``events`` batch-layer events (built once)."""
    from pyspark.sql import functions as F

    from sales_core.lakehouse import MASTER_SCHEMA, Lakehouse, ensure_master_dataset

    lakehouse = Lakehouse(str(root / "lakehouse"))
    done = root / "BUILT"
    if done.exists():
        return root
    started = time.monotonic()
    ensure_master_dataset(spark, lakehouse)
    ts = F.timestamp_seconds(F.lit(1_735_689_600) + (F.col("id") % 31_536_000))
    rows = spark.range(events, numPartitions=max(2, events // 1_000_000)).select(
        F.concat(F.lit("m-"), F.col("id").cast("string")).alias("event_id"),
        F.concat(F.lit("o-"), (F.col("id") % 1_000_003).cast("string")).alias("order_id"),
        F.concat(F.lit("p-"), (F.col("id") % 997).cast("string")).alias("product_id"),
        F.concat(F.lit("c-"), (F.col("id") % 100_003).cast("string")).alias("customer_id"),
        F.element_at(
            F.array(*[F.lit(c) for c in ("books", "toys", "home")]),
            (F.col("id") % 3 + 1).cast("int"),
        ).alias("category"),
        F.element_at(
            F.array(*[F.lit(r) for r in ("north", "south")]), (F.col("id") % 2 + 1).cast("int")
        ).alias("region"),
        F.lit("web").alias("channel"),
        (F.col("id") % 5 + 1).cast("int").alias("quantity"),
        ((F.col("id") % 100_000) / 100).cast("decimal(18,2)").alias("amount"),
        ts.alias("event_time"),
        F.to_date(ts).alias("event_date"),
        F.date_trunc("hour", ts).alias("event_hour"),
        F.date_format(ts, "yyyy-MM").alias("month"),
        F.lit("low").alias("revenue_category"),
        F.lit("file").alias("source"),
        F.lit("bench.jsonl").alias("source_name"),
        F.lit(None).cast("int").alias("source_partition"),
        F.col("id").alias("source_offset"),
        F.lit(None).cast("string").alias("source_key"),
        F.lit("batch").alias("ingest_layer"),
        F.lit("batch-00000001").alias("ingest_run"),
        F.lit(None).cast("long").alias("ingest_batch"),
        F.lit(datetime(2026, 1, 1, tzinfo=timezone.utc)).cast("timestamp").alias("ingested_at"),
    )
    rows.select(*MASTER_SCHEMA.fieldNames()).write.format("delta").mode("append").save(
        lakehouse.master_dataset
    )
    done.write_text(str(events))
    print(
        f"    built a master dataset of {events:,} events in {time.monotonic() - started:.0f}s",
        flush=True,
    )
    return root


def measure(bench: Bench, spark: Any, size: int, batch_events: int, batches: int) -> dict[str, Any]:
    from sales_core.lakehouse import Lakehouse
    from speed_layer.job import run_speed

    root = build_master(spark, bench.work / f"master-{size}", size)
    topic = f"bench-master-{size}"
    if bench.topic_size(topic) == 0:
        bench.create_topic(topic)
    lakehouse = Lakehouse(str(root / "lakehouse"))
    before = bench.topic_size(topic)
    bench.produce(topic, batch_events * batches, 0, f"r{uuid.uuid4().hex[:6]}-")
    config = config_for(bench, root, topic, max_offsets_per_trigger=batch_events)
    started = time.monotonic()
    run = run_speed(spark, config, available_now=True, progress=lambda _m: None)
    wall = time.monotonic() - started
    rows = [
        r.asDict()
        for r in spark.read.format("delta")
        .load(lakehouse.stream_metrics)
        .orderBy("batch_id")
        .collect()
    ]
    new = [r for r in rows if r["input_rows"] > 0][-batches:]
    return {
        "size": size,
        "topic_before": before,
        "run_s": round(wall, 1),
        "valid": run.totals.valid,
        "batch_ms": [r["duration_ms"] for r in new],
        "batch_rows": [r["input_rows"] for r in new],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1M,20M", help="master dataset sizes")
    parser.add_argument("--batch-events", type=parse_count, default=10_000)
    parser.add_argument("--batches", type=int, default=5, help="micro-batches per run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per size")
    args = parser.parse_args(argv)

    from sales_core.session import get_spark

    work = OUT / "stream"
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work)
    results: dict[str, Any] = new_record("stream_master", args, sizes={})
    try:
        spark = get_spark(
            config_for(bench, work / "session", "unused").spark, app_name="bench-master"
        )
        for size in [parse_count(s) for s in args.sizes.split(",")]:
            print(f"master dataset of {size:,} events:", flush=True)
            first = measure(bench, spark, size, args.batch_events, args.batches)
            print(f"    first run (the state's first look included): {first}", flush=True)
            runs = [
                measure(bench, spark, size, args.batch_events, args.batches)
                for _ in range(args.runs)
            ]
            times = [ms for r in runs for ms in r["batch_ms"][1:]]  # the first of a run warms up
            median = statistics.median(times) if times else None
            print(
                f"    runs: {[r['batch_ms'] for r in runs]}; steady micro-batch median {median} ms",
                flush=True,
            )
            results["sizes"][str(size)] = {"first": first, "runs": runs, "median_batch_ms": median}
    finally:
        bench.stop()
    results["load_after"] = load_average()
    append_result(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
