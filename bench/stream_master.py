"""Speed micro-batch time against master datasets of different sizes (same micro-batch size).

For each size N (default 1M and 20M), a lakehouse whose master dataset holds N events the
batch layer inserted (built once with Spark, then reused: ``bench/out/stream/master-N``),
and a topic of its own. Each measured run publishes ``--batches`` × ``--batch-events`` new
events (a new id prefix per run, 3 partitions) and runs ``speed --available-now`` over them
with ``max_offsets_per_trigger = --batch-events``. Per micro-batch: the trigger time and the
state operator's times from the query's progress reports, the sink's time from
``stream_metrics``. The sizes are measured in turn within each round (a busy minute of the shared
machine hits both); the first ``--warmup`` micro-batches of a run (the state loaded from the
checkpoint, cold caches) and short micro-batches are reported apart, not in the medians. A
first, unmeasured run over each size takes the state's first look at the master dataset
(every batch-layer id into the de-duplication state) if the checkpoint has not yet.
Run it from a tree of another revision (copy this file there) to measure that revision.

    python bench/stream_master.py --sizes 1M,20M --batch-events 10k --batches 10 --runs 3
"""

from __future__ import annotations

import argparse
import json
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


def measure(
    bench: Bench,
    spark: Any,
    progress: list[dict[str, Any]],
    size: int,
    batch_events: int,
    batches: int,
) -> dict[str, Any]:
    """One ``speed --available-now`` run over ``batches`` new micro-batches against a master
    dataset of ``size`` events: per micro-batch, its rows, trigger time, sink time and the
    state operator's update and commit times."""
    from sales_core.lakehouse import Lakehouse
    from speed_layer.job import run_speed

    root = build_master(spark, bench.work / f"master-{size}", size)
    topic = f"bench-master-{size}"
    if bench.topic_size(topic) == 0:
        bench.create_topic(topic)
    lakehouse = Lakehouse(str(root / "lakehouse"))
    bench.produce(topic, batch_events * batches, 0, f"r{uuid.uuid4().hex[:6]}-")
    config = config_for(bench, root, topic, max_offsets_per_trigger=batch_events)
    del progress[:]
    started = time.monotonic()
    run = run_speed(spark, config, available_now=True, progress=lambda _m: None)
    wall = time.monotonic() - started
    sink_ms = {
        r["batch_id"]: r["duration_ms"]
        for r in spark.read.format("delta").load(lakehouse.stream_metrics).collect()
    }
    micro_batches = []
    for p in sorted(progress, key=lambda p: p["batchId"]):
        if not p["numInputRows"]:
            continue
        state = (p.get("stateOperators") or [{}])[0]
        micro_batches.append(
            {
                "batch_id": p["batchId"],
                "rows": p["numInputRows"],
                "trigger_ms": p["durationMs"].get("triggerExecution"),
                "sink_ms": sink_ms.get(p["batchId"]),
                "state_update_ms": state.get("allUpdatesTimeMs"),
                "state_commit_ms": state.get("commitTimeMs"),
                "state_keys": state.get("numRowsTotal"),
            }
        )
    return {
        "size": size,
        "run_s": round(wall, 1),
        "valid": run.totals.valid,
        "batches": micro_batches,
    }


def steady(runs: list[dict[str, Any]], batch_events: int, warmup: int, key: str) -> list[int]:
    """``key`` of every full micro-batch after the first ``warmup`` of its run."""
    return [
        b[key]
        for r in runs
        for b in r["batches"][warmup:]
        if b["rows"] >= 0.9 * batch_events and b[key] is not None
    ]


class _Progress:
    """Every progress report of the session's streaming queries, as parsed JSON."""

    def __init__(self, spark: Any) -> None:
        from pyspark.sql.streaming import StreamingQueryListener

        self.reports: list[dict[str, Any]] = []
        reports = self.reports

        class Listener(StreamingQueryListener):
            def onQueryStarted(self, event: Any) -> None:
                pass

            def onQueryProgress(self, event: Any) -> None:
                reports.append(json.loads(event.progress.json))

            def onQueryIdle(self, event: Any) -> None:
                pass

            def onQueryTerminated(self, event: Any) -> None:
                pass

        spark.streams.addListener(Listener())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1M,20M", help="master dataset sizes")
    parser.add_argument("--batch-events", type=parse_count, default=10_000)
    parser.add_argument("--batches", type=int, default=10, help="micro-batches per run")
    parser.add_argument(
        "--warmup", type=int, default=2, help="micro-batches of a run's start, reported apart"
    )
    parser.add_argument("--runs", type=int, default=3, help="measured runs per size")
    args = parser.parse_args(argv)

    from sales_core.session import get_spark

    work = OUT / "stream"
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work)
    sizes = [parse_count(s) for s in args.sizes.split(",")]
    results: dict[str, Any] = new_record("stream_master", args, sizes={})
    try:
        spark = get_spark(
            config_for(bench, work / "session", "unused").spark, app_name="bench-master"
        )
        listener = _Progress(spark)
        runs: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
        for size in sizes:
            first = measure(bench, spark, listener.reports, size, args.batch_events, 2)
            print(
                f"master of {size:,}: first run (state's first look included) {first['run_s']}s",
                flush=True,
            )
        for run in range(args.runs):  # sizes interleaved: a busy minute hits both
            for size in sizes:
                measured = measure(
                    bench, spark, listener.reports, size, args.batch_events, args.batches
                )
                runs[size].append(measured)
                print(
                    f"run {run + 1}, master of {size:,}: trigger ms "
                    f"{[b['trigger_ms'] for b in measured['batches']]}, sink ms "
                    f"{[b['sink_ms'] for b in measured['batches']]}",
                    flush=True,
                )
        for size in sizes:
            summary: dict[str, Any] = {"runs": runs[size]}
            for key in ("trigger_ms", "sink_ms", "state_update_ms", "state_commit_ms"):
                values = steady(runs[size], args.batch_events, args.warmup, key)
                summary[f"median_{key}"] = statistics.median(values) if values else None
                warm = [b[key] for r in runs[size] for b in r["batches"][: args.warmup]]
                summary[f"warmup_{key}"] = warm
            results["sizes"][str(size)] = summary
            print(
                f"master of {size:,}: steady median trigger {summary['median_trigger_ms']} ms, "
                f"sink {summary['median_sink_ms']} ms, state update "
                f"{summary['median_state_update_ms']} ms, state commit "
                f"{summary['median_state_commit_ms']} ms; the first {args.warmup} of each run: "
                f"trigger {summary['warmup_trigger_ms']} ms",
                flush=True,
            )
        base = results["sizes"][str(sizes[0])]
        for size in sizes[1:]:
            other = results["sizes"][str(size)]
            for key in ("median_trigger_ms", "median_sink_ms"):
                if base[key] and other[key]:
                    print(
                        f"{size:,} / {sizes[0]:,} ({key}): {other[key] / base[key]:.2f}x",
                        flush=True,
                    )
    finally:
        bench.stop()
    results["load_after"] = load_average()
    append_result(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
