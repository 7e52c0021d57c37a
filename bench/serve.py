"""Serving benchmark: merged-view query latency, fast path and Spark path, against a
from-scratch aggregation over the master dataset, all in one run.

Set-up (cached under ``bench/out/data/serve-n<N>/`` where it can be, not timed):

1. a synthetic master dataset of N events (``bench.common.generate_master``: 90 days, 10%
   of them from the speed layer) and batch generation 1 over it (``recompute_and_publish``,
   the real publish: hand-off mark = the last speed micro-batch in it);
2. one more day of sales arriving through the speed layer: N/90 events appended to the
   master dataset as ``--micro-batches`` speed micro-batches (ids above the mark), and their
   speed increments, computed with the shared view code (``compute_view`` per micro-batch)
   and written one file per micro-batch per view, as the streaming job lays them out (in one
   commit here: a day of per-micro-batch commits would take hours to set up);
3. ``OPTIMIZE`` of the published generation's view tables (fewer files to read).

Then, per view, interleaved: ``--runs`` queries on each engine (half the whole view's first
page of 1000 rows, half a typical filtered query), with a warm session/reader:

* ``fast``: ``FastServing.answer`` (delta-rs + DuckDB, no JVM): pins the three tables'
  latest versions and answers, with its caches warm (the steady state of the HTTP server
  between two micro-batches);
* ``fast, new micro-batch``: the same reader, right after a new micro-batch's increments
  file was appended to the view's increments table (a real Delta append with delta-rs: a copy
  of the day's last micro-batch under a new id; undone with a Delta ``RESTORE`` after the
  view's runs, so the cached data set stays as built): what the first query after each
  micro-batch pays (the reader adds the new file to its last merged view);
* ``fast, full re-merge``: the same reader with its merged views dropped before each query
  (what the first query after a publish pays: the batch rows and every increments file above
  the mark, from the file caches, merged again);
* ``fast, cold``: a new reader per query (the CLI's case: every file read);
* ``spark``: ``serving_layer.spark_engine.answer`` on a warm local session;
* ``from scratch``: the same view computed from the whole master dataset, by DuckDB over its
  Parquet files and by Spark (``compute_view``), a few runs each.

The merged answers are checked equal to the from-scratch ones (every row of every view) in
the same run. Results are printed and appended to ``bench/out/results.jsonl``.

    python bench/serve.py                       # 10M events, a day of 1440 micro-batches
    python bench/serve.py --events 1M --runs 20 # a quicker look
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import time
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.batch import (  # noqa: E402
    _sql_list,
    duck_connect,
    duck_view_sql,
    spark_settings,
    start_spark,
)
from bench.common import (  # noqa: E402
    BASE_EPOCH,
    OUT,
    SPAN_DAYS,
    append_result,
    cached_master,
    delta_active_files,
    delta_holds,
    generate_master,
    load_average,
    machine_info,
    parse_count,
    percentile,
)

FAST_P95_GOAL_S = 0.050
SPARK_P50_GOAL_S = 0.5
PAGE = 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", default="10M", help="events in the master dataset (10M, 1M, 500k ...)"
    )
    parser.add_argument(
        "--micro-batches",
        type=int,
        default=1440,
        help="speed micro-batches in the extra day (default 1440: one a minute)",
    )
    parser.add_argument(
        "--runs", type=int, default=40, help="measured fast-path queries per view (and variant)"
    )
    parser.add_argument(
        "--spark-runs", type=int, default=10, help="measured Spark-path queries per view"
    )
    parser.add_argument(
        "--scratch-runs",
        type=int,
        default=3,
        help="measured from-scratch DuckDB aggregations per view",
    )
    parser.add_argument(
        "--spark-scratch-runs",
        type=int,
        default=1,
        help="measured from-scratch Spark aggregations per view",
    )
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--rows-per-file", type=int, default=250_000)
    parser.add_argument("--regenerate", action="store_true", help="rebuild the cached data set")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.events = parse_count(args.events)
    return args


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": statistics.median(values),
        "p95_s": percentile(values, 0.95),
        "max_s": max(values),
        "n": len(values),
    }


# --------------------------------------------------------------------------- set-up


def build(spark: Any, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The lakehouse: cached master + generation 1 + a day of speed increments."""
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    from batch_layer.publish import recompute_and_publish
    from sales_core.handoff import SPEED_STREAM, current_generation
    from sales_core.lakehouse import (
        MASTER_SCHEMA,
        Lakehouse,
        ensure_speed_tables,
        increment_rows,
    )
    from sales_core.views import VIEWS

    n = args.events
    root = args.out / "data" / f"serve-n{n}-b{args.micro_batches}"
    lakehouse = Lakehouse(str(root))
    ready = root / "_bench_ready.json"
    master = Path(lakehouse.master_dataset)
    if not args.regenerate and ready.is_file():
        info = json.loads(ready.read_text())
        # The built data set: the n generated events and the day appended after them, with
        # the increments in the current layout (one table for every view since issue 12).
        increments = Path(lakehouse.speed_increments) / "_delta_log"
        if delta_holds(master, n + info.get("day_events", -1)) and increments.is_dir():
            info["cached"] = True
            return lakehouse, info
    info: dict[str, Any] = {"events": n, "micro_batches": args.micro_batches, "cached": False}
    started = time.perf_counter()
    # Resumable: a cached master of exactly n events (the day not appended yet) is reused.
    info["master"] = None if args.regenerate else cached_master(master, n)
    if info["master"] is None:
        if root.exists():
            shutil.rmtree(root)
        print(f"generating {n:,} events ...", flush=True)
        info["master"] = generate_master(spark, lakehouse, n, rows_per_file=args.rows_per_file)
    generation = current_generation(spark, lakehouse)
    if generation is None:
        print("publishing generation 1 ...", flush=True)
        t = time.perf_counter()
        generation = recompute_and_publish(
            spark,
            lakehouse,
            previous=current_generation(spark, lakehouse),
            run_id="bench-serve",
            published_at=datetime.now(timezone.utc),
            keep_generations=3,
        )
        info["publish_s"] = round(time.perf_counter() - t, 1)
    mark = generation.handoff[SPEED_STREAM]

    # One more day, after the 90 generated ones, through the speed layer.
    day_events = max(args.micro_batches, n // SPAN_DAYS)
    day_start = BASE_EPOCH + SPAN_DAYS * 86_400
    print(
        f"a day of {day_events:,} speed events in {args.micro_batches} micro-batches ...",
        flush=True,
    )
    t = time.perf_counter()
    master_df = spark.read.format("delta").load(lakehouse.master_dataset)
    day = (
        master_df.limit(day_events)
        .withColumn("_i", F.monotonically_increasing_id())
        .withColumn("_row", (F.row_number().over(Window.orderBy("_i")) - 1).cast("long"))
        .withColumns(
            {
                "event_id": F.format_string("day-%09d", F.col("_row")),
                "event_time": F.timestamp_seconds(
                    F.lit(day_start) + (F.col("_row") * 86_400 / F.lit(day_events)).cast("long")
                ),
            }
        )
        .withColumns(
            {
                "event_date": F.to_date("event_time"),
                "event_hour": F.date_trunc("hour", "event_time"),
                "month": F.date_format("event_time", "yyyy-MM"),
                "source": F.lit("kafka"),
                "source_name": F.lit("sales-events"),
                "ingest_layer": F.lit("speed"),
                "ingest_run": F.lit(SPEED_STREAM),
                "ingest_batch": (
                    F.lit(mark + 1)
                    + F.floor(F.col("_row") * args.micro_batches / F.lit(day_events))
                ).cast("long"),
                "ingested_at": F.col("event_time"),
            }
        )
        .select(*[F.col(f.name).cast(f.dataType) for f in MASTER_SCHEMA.fields])
    )
    day.write.format("delta").mode("append").save(lakehouse.master_dataset)
    ensure_speed_tables(spark, lakehouse)
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
    day_rows = (
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .where(F.col("ingest_batch") > mark)
    )
    # compute_view per micro-batch: grouping by the micro-batch too gives each one's increment.
    per_view = [
        day_rows.withColumnRenamed("ingest_batch", "batch_id")
        .groupBy("batch_id", *view.key_names)
        .agg(*[m.over_events() for m in view.measures])
        .select(F.lit(SPEED_STREAM).alias("stream"), "batch_id", *view.columns)
        .transform(increment_rows(name))
        for name, view in VIEWS.items()
    ]
    (
        reduce(DataFrame.unionByName, per_view)
        # a file per micro-batch and view, as the streaming job writes them
        .repartitionByRange(args.micro_batches * len(VIEWS), "batch_id", "view")
        .write.format("delta")
        .mode("append")
        .save(lakehouse.speed_increments)
    )
    spark.conf.unset("spark.sql.adaptive.coalescePartitions.enabled")
    info["speed_day_s"] = round(time.perf_counter() - t, 1)
    info["increment_files"] = len(delta_active_files(lakehouse.speed_increments))
    info["day_events"] = day_events
    t = time.perf_counter()
    for name in VIEWS:
        spark.sql(
            f"OPTIMIZE delta.`{lakehouse.batch_view(name)}` WHERE generation = {generation.generation}"
        )
    info["optimize_s"] = round(time.perf_counter() - t, 1)
    info["build_s"] = round(time.perf_counter() - started, 1)
    info["generation"] = current_generation(spark, lakehouse).generation  # type: ignore[union-attr]
    ready.write_text(json.dumps(info) + "\n")
    return lakehouse, info


# --------------------------------------------------------------------------- queries


def typical_queries() -> dict[str, list[Any]]:
    """Per view: the first page of the whole view, and a filtered query a dashboard makes."""
    from serving_layer.query import build_query

    last_day = (
        datetime.fromtimestamp(BASE_EPOCH + SPAN_DAYS * 86_400, timezone.utc).date().isoformat()
    )
    week = (
        datetime.fromtimestamp(BASE_EPOCH + (SPAN_DAYS - 6) * 86_400, timezone.utc)
        .date()
        .isoformat()
    )
    return {
        "sales_daily": [
            build_query("sales_daily", limit=PAGE),
            build_query("sales_daily", ["region=north"], date_from=week, date_to=last_day),
        ],
        "sales_hourly": [
            build_query("sales_hourly", limit=PAGE),
            build_query("sales_hourly", ["channel=web"], date_from=last_day, date_to=last_day),
        ],
        "customer_totals": [
            build_query("customer_totals", limit=PAGE),
            build_query("customer_totals", ["customer_id=cus-000042"]),
        ],
        "revenue_category_monthly": [
            build_query("revenue_category_monthly", limit=PAGE),
            build_query("revenue_category_monthly", ["revenue_category=high"]),
        ],
    }


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def scratch_duck(con: Any, files: list[str], view: Any) -> tuple[float, list[dict[str, Any]]]:
    from serving_layer.query import normalise_value

    sql = duck_view_sql(view, f"read_parquet({_sql_list(files)})").replace(
        "SELECT 1::BIGINT AS generation, ", "SELECT "
    )
    seconds, table = timed(lambda: con.sql(sql).to_arrow_table())
    cols = list(view.columns)
    rows = [{c: normalise_value(r[c]) for c in cols} for r in table.to_pylist()]
    return seconds, rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the micro-batches appended for a measurement are undone.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from sales_core.views import VIEWS, compute_view
    from serving_layer import spark_engine
    from serving_layer.duckdb_engine import FastServing
    from serving_layer.query import ViewQuery

    machine = machine_info()
    print(
        f"machine: {machine['cpu_model']}, {machine['nproc']} CPUs, {machine['mem_total_gib']} GiB; load {load_average()}",
        flush=True,
    )
    spark, _config, startup = start_spark(args)
    print(f"Spark session {startup['session_s']:.1f} s (not in any figure)", flush=True)
    lakehouse, info = build(spark, args)
    print(f"data set: {json.dumps(info)}", flush=True)
    queries = typical_queries()

    # Correctness first: every merged view on both engines equals the from-scratch one.
    con, _ = duck_connect(2)
    master_files = [f.path for f in delta_active_files(lakehouse.master_dataset)]
    reader = FastServing(lakehouse.root)
    for name, view in VIEWS.items():
        _, scratch = scratch_duck(con, master_files, view)
        key = view.key_names
        scratch.sort(key=lambda r: tuple(r[k] for k in key))
        fast_rows = reader.answer(ViewQuery(view)).rows
        if fast_rows != scratch:
            raise SystemExit(
                f"bench: the fast path's merged {name} differs from the from-scratch view"
            )
        if name != "customer_totals":  # 100k rows through py4j: checked on the fast path only
            spark_rows = spark_engine.answer(spark, lakehouse, ViewQuery(view)).rows
            if spark_rows != scratch:
                raise SystemExit(
                    f"bench: the Spark path's merged {name} differs from the from-scratch view"
                )
        print(f"  {name}: merged == from scratch ({len(scratch):,} rows)", flush=True)

    results: dict[str, Any] = {}
    for name, view in VIEWS.items():
        pair = queries[name]
        warm = FastServing(lakehouse.root)
        for q in pair:
            warm.answer(q)  # warm-up: fills the file caches
        fast, new_batch, fresh, cold, on_spark = [], [], [], [], []
        micro_batches = MicroBatchAppender(lakehouse.speed_increments, name)
        try:
            for i in range(args.runs):
                q = pair[i % 2]
                fast.append(timed(lambda q=q, w=warm: w.answer(q))[0])
                micro_batches.append()
                new_batch.append(timed(lambda q=q, w=warm: w.answer(q))[0])
                warm.clear_merged_cache()  # as after a publish: merge everything again
                fresh.append(timed(lambda q=q, w=warm: w.answer(q))[0])
                if i < max(4, args.runs // 5):
                    cold.append(timed(lambda q=q: FastServing(lakehouse.root).answer(q))[0])
        finally:
            micro_batches.undo()
        if warm.merges["incremental"] != args.runs:
            raise SystemExit(
                f"bench: expected {args.runs} incremental merges of {name}, got {warm.merges}"
            )
        spark_reader = spark_engine.SparkServing(spark, lakehouse)
        for q in pair:
            spark_reader.answer(q)  # warm-up: the merged view of these versions is cached
        for i in range(args.spark_runs):
            on_spark.append(timed(lambda q=pair[i % 2], r=spark_reader: r.answer(q))[0])
        spark_uncached = [
            timed(lambda q=pair[i % 2]: spark_engine.answer(spark, lakehouse, q))[0]
            for i in range(max(2, args.spark_runs // 3))
        ]
        duck_scratch = [scratch_duck(con, master_files, view)[0] for _ in range(args.scratch_runs)]
        spark_scratch = [
            timed(lambda v=view: _spark_scratch(spark, lakehouse, v, compute_view))[0]
            for _ in range(args.spark_scratch_runs)
        ]
        results[name] = {
            "fast": summary(fast),
            "fast_new_micro_batch": summary(new_batch),
            "fast_new_versions": summary(fresh),
            "fast_cold": summary(cold),
            "spark": summary(on_spark),
            "spark_uncached": summary(spark_uncached),
            "scratch_duckdb": summary(duck_scratch),
            "scratch_spark": summary(spark_scratch),
        }
        r = results[name]
        print(
            f"{name}: fast p50 {r['fast']['p50_s'] * 1000:.1f} ms p95 {r['fast']['p95_s'] * 1000:.1f} ms | "
            f"new micro-batch p50 {r['fast_new_micro_batch']['p50_s'] * 1000:.1f} p95 {r['fast_new_micro_batch']['p95_s'] * 1000:.1f} ms | "
            f"full re-merge p50 {r['fast_new_versions']['p50_s'] * 1000:.1f} p95 {r['fast_new_versions']['p95_s'] * 1000:.1f} ms | "
            f"cold p50 {r['fast_cold']['p50_s']:.2f} s | spark p50 {r['spark']['p50_s']:.2f} s p95 {r['spark']['p95_s']:.2f} s "
            f"(uncached p50 {r['spark_uncached']['p50_s']:.2f} s) | "
            f"from scratch duckdb {r['scratch_duckdb']['p50_s']:.2f} s spark {r['scratch_spark']['p50_s']:.2f} s | "
            f"load {load_average()[0]:.1f}",
            flush=True,
        )
    print_report(results, info)
    record = {
        "bench": "serve",
        "at": datetime.now(timezone.utc).isoformat(),
        "machine": machine,
        "spark_settings": spark_settings(spark),
        "startup": startup,
        "data": info,
        "results": results,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    append_result(record, args.out)
    return 0


class MicroBatchAppender:
    """Appends copies of the newest micro-batch's increment rows of one view, under new
    micro-batch ids, to the increments table with delta-rs (one file, one commit each: a
    micro-batch as that view's reader sees it), and restores the table's version afterwards."""

    def __init__(self, path: str, view: str) -> None:
        import pyarrow.compute as pc
        from deltalake import DeltaTable

        self.path = path
        table = DeltaTable(path)
        self.version = table.version()
        dataset = table.to_pyarrow_dataset()
        mine = pc.field("view") == view
        newest = pc.max(
            dataset.to_table(columns=["batch_id"], filter=mine).column("batch_id")
        ).as_py()
        self.template = dataset.to_table(filter=mine & (pc.field("batch_id") == newest))
        self.next_id = int(newest) + 1

    def append(self) -> None:
        import pyarrow as pa
        from deltalake import write_deltalake

        ids = pa.array(
            [self.next_id] * self.template.num_rows,
            type=self.template.schema.field("batch_id").type,
        )
        rows = self.template.set_column(
            self.template.schema.get_field_index("batch_id"), "batch_id", ids
        )
        write_deltalake(self.path, rows, mode="append")
        self.next_id += 1

    def undo(self) -> None:
        from deltalake import DeltaTable

        table = DeltaTable(self.path)
        if table.version() != self.version:
            table.restore(self.version)


def _spark_scratch(spark: Any, lakehouse: Any, view: Any, compute_view: Any) -> int:
    rows = (
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .transform(compute_view(view))
        .collect()
    )
    return len(rows)


def print_report(results: dict[str, Any], info: dict[str, Any]) -> None:
    print(
        f"\n{info['events']:,} events + a day of {info.get('day_events', 0):,} in {info['micro_batches']} speed micro-batches"
    )
    header = (
        "view",
        "fast p50 ms",
        "fast p95 ms",
        "new micro-batch p50 / p95 ms",
        "full re-merge p95 ms",
        "cold p50 s",
        "spark p50 s",
        "spark p95 s",
        "spark uncached p50 s",
        "scratch duckdb s",
        "scratch spark s",
        "duckdb/fast",
        "spark scratch/merged",
    )
    print(" | ".join(header))
    for name, r in results.items():
        print(
            " | ".join(
                [
                    name,
                    f"{r['fast']['p50_s'] * 1000:.1f}",
                    f"{r['fast']['p95_s'] * 1000:.1f}",
                    f"{r['fast_new_micro_batch']['p50_s'] * 1000:.1f} / {r['fast_new_micro_batch']['p95_s'] * 1000:.1f}",
                    f"{r['fast_new_versions']['p95_s'] * 1000:.1f}",
                    f"{r['fast_cold']['p50_s']:.2f}",
                    f"{r['spark']['p50_s']:.2f}",
                    f"{r['spark']['p95_s']:.2f}",
                    f"{r['spark_uncached']['p50_s']:.2f}",
                    f"{r['scratch_duckdb']['p50_s']:.2f}",
                    f"{r['scratch_spark']['p50_s']:.2f}",
                    f"{r['scratch_duckdb']['p50_s'] / r['fast']['p50_s']:.0f}x",
                    f"{r['scratch_spark']['p50_s'] / r['spark']['p50_s']:.1f}x",
                ]
            )
        )
    fast_ok = all(r["fast"]["p95_s"] <= FAST_P95_GOAL_S for r in results.values())
    spark_ok = all(r["spark"]["p50_s"] <= SPARK_P50_GOAL_S for r in results.values())
    print(
        f"goals: fast p95 <= {FAST_P95_GOAL_S * 1000:.0f} ms: {'met' if fast_ok else 'NOT met'}; "
        f"spark p50 <= {SPARK_P50_GOAL_S} s: {'met' if spark_ok else 'NOT met'}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
