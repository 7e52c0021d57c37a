"""Batch recompute on ``local[2]`` and on a Spark standalone cluster (2 workers × 1 core), same run.

One synthetic master dataset (``bench.common.generate_master``, cached under ``bench/out/``)
is recomputed by the real code path, ``batch_layer.publish.recompute_and_publish`` (pinned
snapshot, four views, four Delta writes, the publish commit), first in a ``local[2]`` session,
then, in the same process, in a session whose executors are two 1-core workers of a standalone
cluster started on 127.0.0.1 from the pip pyspark distribution (master, workers and executors
are separate JVMs: executors exchange shuffle blocks over loopback and ship results to the
driver). The project's packages travel to the executors as the same zip ``spark-submit.sh``
uses. The two engines' published views are compared row for row; the run fails if they differ.

Session start-up is timed apart and is in none of the figures. Results are printed and
appended as one JSON line to ``bench/out/results.jsonl``.

    python bench/cluster.py                      # 10M events, 1 warm-up + 2 measured runs each
    python bench/cluster.py --size 1M --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    OUT,
    CpuMeter,
    Samples,
    append_result,
    cached_master,
    generate_master,
    load_average,
    machine_info,
    parse_count,
)
from devtools.spark_cluster import standalone_cluster  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", default="10M", help="events in the master dataset (10M, 1M, 500k ...)"
    )
    parser.add_argument(
        "--runs", type=int, default=2, help="measured runs per engine (median reported)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first, per engine")
    parser.add_argument(
        "--driver-memory", default="4g", help="driver memory, both engines (default 4g)"
    )
    parser.add_argument(
        "--worker-memory", default="3g", help="memory of each worker = its executor (default 3g)"
    )
    parser.add_argument(
        "--rows-per-file", type=int, default=250_000, help="rows per generated master file"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help="cache and results directory (bench/out)"
    )
    args = parser.parse_args(argv)
    args.size = parse_count(args.size)
    if args.runs < 1 or args.warmup < 0 or args.size < 1:
        parser.error("need --runs >= 1, --warmup >= 0 and a positive size")
    return args


def fmt_n(n: int) -> str:
    return (
        f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
    )


def start_session(
    master: str, args: argparse.Namespace, extra: dict[str, str]
) -> tuple[Any, float]:
    from sales_core.config import load_config
    from sales_core.session import get_spark

    environ = {
        **os.environ,
        "LAMBDA_SALES__SPARK__MASTER": master,
        "LAMBDA_SALES__SPARK__DRIVER_MEMORY": args.driver_memory,
        "LAMBDA_SALES__SPARK__APP_NAME": f"lambda-sales-bench-{'local' if master.startswith('local') else 'cluster'}",
        **{f"LAMBDA_SALES__SPARK__CONF__{k}": v for k, v in extra.items()},
    }
    config = load_config(environ=environ)
    start = time.perf_counter()
    spark = get_spark(config.spark, app_name=config.spark.app_name)
    spark.range(1000).selectExpr("sum(id)").collect()
    return spark, time.perf_counter() - start


def recompute_runs(
    spark: Any, lakehouse: Any, args: argparse.Namespace, label: str, n: int, meter: CpuMeter
) -> tuple[Samples, int]:
    from batch_layer.publish import recompute_and_publish
    from sales_core.handoff import current_generation

    samples = Samples()
    generation = 0
    for i in range(args.warmup + args.runs):
        warm = i < args.warmup
        with meter.measure() as sample:
            published = recompute_and_publish(
                spark,
                lakehouse,
                previous=current_generation(spark, lakehouse),
                run_id=f"bench-{label}-{i}",
                published_at=datetime.now(timezone.utc),
                keep_generations=100,
                progress=lambda _: None,
            )
        if published.events != n:
            raise SystemExit(f"bench: {label} published {published.events} events, expected {n}")
        samples.add(sample[0], warm=warm)
        generation = published.generation
        print(
            f"[{label}] run {i + 1}{' (warm-up)' if warm else ''}: {samples.last:.2f}s "
            f"(load {load_average()[0]:.2f}, others {100 * sample[0].others_busy:.0f}% of the CPUs)",
            flush=True,
        )
    return samples, generation


def compare(
    spark: Any, lakehouse: Any, local_generation: int, cluster_generation: int
) -> dict[str, int]:
    """Rows that differ between the two published generations, per view (all must be 0)."""
    from sales_core.handoff import read_batch_view
    from sales_core.views import VIEWS

    report = {}
    for name in VIEWS:
        a = read_batch_view(spark, lakehouse, name, local_generation).drop("generation")
        b = read_batch_view(spark, lakehouse, name, cluster_generation).drop("generation")
        report[name] = a.exceptAll(b).count() + b.exceptAll(a).count()
    if any(report.values()):
        raise SystemExit(f"bench: local[2] and cluster views differ: {report}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jobs.bundle import build_archive
    from sales_core.lakehouse import Lakehouse
    from sales_core.packages import cached_jars

    n = args.size
    root = args.out / "data" / f"n{n}"
    lakehouse = Lakehouse(str(root))
    master_table = Path(lakehouse.master_dataset)
    small_tables = {"spark.databricks.delta.snapshotPartitions": "2"}
    print(f"machine: {json.dumps(machine_info())}", flush=True)

    spark, local_start = start_session("local[2]", args, small_tables)
    meter = CpuMeter(int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()))
    info = cached_master(master_table, n)
    if info is None:
        print(f"[{fmt_n(n)}] generating {n:,} events into {master_table} ...", flush=True)
        info = generate_master(spark, lakehouse, n, rows_per_file=args.rows_per_file)
        print(
            f"[{fmt_n(n)}] generated in {info['generate_s']} s (not part of the comparison)",
            flush=True,
        )
    for part in ("gold", "serving", "meta"):
        shutil.rmtree(root / part, ignore_errors=True)
    print(
        f"[{fmt_n(n)}] master: {info['files']} files, {info['bytes'] / 2**20:.0f} MiB; "
        f"{args.warmup} warm-up + {args.runs} measured runs per engine",
        flush=True,
    )

    local, local_generation = recompute_runs(spark, lakehouse, args, "local[2]", n, meter)
    spark.stop()

    archive = build_archive(ROOT / ".cache" / "dist")
    cluster_conf = {
        **small_tables,
        "spark.executor.memory": args.worker_memory,
        "spark.executor.cores": "1",
        "spark.cores.max": "2",
        "spark.submit.pyFiles": str(archive),
        "spark.ui.enabled": "false",
    }
    jars = cached_jars()
    with standalone_cluster(
        args.out / "standalone", workers=2, worker_memory=args.worker_memory
    ) as cluster:
        spark, cluster_start = start_session(cluster.url, args, cluster_conf)
        executors = (
            spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
        )  # minus the driver
        if executors != 2:
            raise SystemExit(f"bench: {executors} executors registered, expected 2")
        meter = CpuMeter(int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()))
        cluster, cluster_generation = recompute_runs(
            spark, lakehouse, args, "standalone 2x1", n, meter
        )
        differences = compare(spark, lakehouse, local_generation, cluster_generation)
        spark.stop()

    ratio = cluster.median / local.median
    print(f"\n{fmt_n(n)} events, batch recompute (median of {args.runs}):")
    print(
        f"  local[2]                      {local.median:8.2f} s   ({n / local.median / 1e3:,.0f}k events/s)"
    )
    print(
        f"  standalone, 2 workers x 1 core {cluster.median:7.2f} s   ({n / cluster.median / 1e3:,.0f}k events/s)"
    )
    print(
        f"  cluster / local               {ratio:8.2f}x   views identical: {not any(differences.values())}"
    )
    print(
        f"  session start: local {local_start:.1f}s, cluster {cluster_start:.1f}s (not in the figures)"
    )
    result = {
        "bench": "cluster",
        "at": datetime.now(timezone.utc).isoformat(),
        "events": n,
        "jars": len(jars or []),
        "machine": machine_info(),
        "local": local.as_json(),
        "cluster": cluster.as_json(),
        "cluster_over_local": round(ratio, 3),
        "session_start_s": {"local": round(local_start, 2), "cluster": round(cluster_start, 2)},
        "differences": differences,
        "settings": {"driver_memory": args.driver_memory, "worker_memory": args.worker_memory},
    }
    append_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
