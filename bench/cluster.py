"""Batch recompute on ``local[2]`` and on a Spark standalone cluster (2 workers × 1 core), with
the lakehouse on this machine's disk and on an S3-compatible object store, same run.

One synthetic master dataset (``bench.common.generate_master``, cached under ``bench/out/``)
is recomputed by the real code path, ``batch_layer.publish.recompute_and_publish`` (pinned
snapshot, four views, four Delta writes, the publish commit), first in a ``local[2]`` session,
then, in the same process, in a session whose executors are two 1-core workers of a standalone
cluster started on 127.0.0.1 from the pip pyspark distribution (master, workers and executors
are separate JVMs: executors exchange shuffle blocks over loopback and ship results to the
driver). The project's packages travel to the executors as the same zip ``spark-submit.sh``
uses.

``--stores local,s3`` (the default) also copies the master dataset into a bucket of a MinIO
server the bench starts on loopback (``devtools.object_store``, the tests' server) and
recomputes there through ``s3a://`` with the project's S3 settings (S3A, the conditional-PUT
LogStore), interleaved with the local-disk runs so both see the same machine. Each session
then carries S3A's jars whatever the store. The published views of every engine and store are
compared row for row; the run fails if they differ.

Session start-up is timed apart and is in none of the figures. Results are printed and
appended as one JSON line to ``bench/out/results.jsonl``.

    python bench/cluster.py                      # 10M events, 1 warm-up + 2 measured runs each
    python bench/cluster.py --size 1M --runs 3 --stores local
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
    parser.add_argument(
        "--stores",
        default="local,s3",
        help="where the lakehouse lives: local (this disk), s3 (MinIO on loopback); default both",
    )
    args = parser.parse_args(argv)
    args.size = parse_count(args.size)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if args.runs < 1 or args.warmup < 0 or args.size < 1:
        parser.error("need --runs >= 1, --warmup >= 0 and a positive size")
    if not args.stores or set(args.stores) - {"local", "s3"}:
        parser.error("--stores takes local, s3 or both (comma-separated)")
    return args


def fmt_n(n: int) -> str:
    return (
        f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
    )


def start_session(
    master: str, args: argparse.Namespace, extra: dict[str, str], s3: Any = None
) -> tuple[Any, float]:
    """A session on ``master``; ``s3``: ``[lakehouse.s3]`` of the object store (S3A's jars
    and settings, as the jobs get them for a lakehouse on ``s3a://``)."""
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
    spark = get_spark(config.spark, app_name=config.spark.app_name, s3=s3)
    spark.range(1000).selectExpr("sum(id)").collect()
    return spark, time.perf_counter() - start


def recompute_once(spark: Any, lakehouse: Any, run_id: str, n: int, meter: CpuMeter) -> Any:
    """One measured recompute and publish; returns (CPU sample, generation)."""
    from batch_layer.publish import recompute_and_publish
    from sales_core.handoff import current_generation

    with meter.measure() as sample:
        published = recompute_and_publish(
            spark,
            lakehouse,
            previous=current_generation(spark, lakehouse),
            run_id=run_id,
            published_at=datetime.now(timezone.utc),
            keep_generations=100,
            progress=lambda _: None,
        )
    if published.events != n:
        raise SystemExit(f"bench: {run_id} published {published.events} events, expected {n}")
    return sample[0], published.generation


def recompute_runs(
    spark: Any,
    lakehouses: dict[str, Any],
    args: argparse.Namespace,
    engine: str,
    n: int,
    meter: CpuMeter,
) -> tuple[dict[str, Samples], dict[str, int]]:
    """Warm-up and measured runs of ``engine`` on each store, interleaved run by run."""
    samples = {store: Samples() for store in lakehouses}
    generations: dict[str, int] = {}
    for i in range(args.warmup + args.runs):
        warm = i < args.warmup
        for store, lakehouse in lakehouses.items():
            label = f"{engine}, {store}"
            sample, generations[store] = recompute_once(
                spark, lakehouse, f"bench-{engine}-{store}-{i}", n, meter
            )
            samples[store].add(sample, warm=warm)
            print(
                f"[{label}] run {i + 1}{' (warm-up)' if warm else ''}: {samples[store].last:.2f}s "
                f"(load {load_average()[0]:.2f}, others {100 * sample.others_busy:.0f}% of the CPUs)",
                flush=True,
            )
    return samples, generations


def compare(spark: Any, published: dict[str, tuple[Any, int]]) -> dict[str, int]:
    """Rows that differ from the first published generation, per view and generation (all
    must be 0). ``published``: label -> (lakehouse, generation)."""
    from sales_core.handoff import read_batch_view
    from sales_core.views import VIEWS

    (first_label, (first, first_generation)), *others = published.items()
    report = {}
    for label, (lakehouse, generation) in others:
        for name in VIEWS:
            a = read_batch_view(spark, first, name, first_generation).drop("generation")
            b = read_batch_view(spark, lakehouse, name, generation).drop("generation")
            report[f"{label} vs {first_label}: {name}"] = (
                a.exceptAll(b).count() + b.exceptAll(a).count()
            )
    if any(report.values()):
        raise SystemExit(f"bench: published views differ: {report}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from devtools import object_store as minio
    from jobs.bundle import build_archive
    from sales_core.config import S3Conf
    from sales_core.lakehouse import Lakehouse
    from sales_core.packages import cached_jars

    n = args.size
    root = args.out / "data" / f"n{n}"
    lakehouses: dict[str, Any] = {"local": Lakehouse(str(root))}
    master_table = Path(lakehouses["local"].master_dataset)
    small_tables = {"spark.databricks.delta.snapshotPartitions": "2"}
    print(f"machine: {json.dumps(machine_info())}", flush=True)

    store, s3, environ = None, None, {}
    if "s3" in args.stores:
        store = minio.start(args.out / "minio" / "data")
        environ = store.env()
        os.environ.update(environ)  # S3A's and delta-rs's credentials, as a job's
        s3 = S3Conf(endpoint=store.endpoint, region=minio.REGION, path_style=True)
    try:
        spark, local_start = start_session("local[2]", args, small_tables, s3)
        meter = CpuMeter(int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()))
        info = cached_master(master_table, n)
        if info is None:
            print(f"[{fmt_n(n)}] generating {n:,} events into {master_table} ...", flush=True)
            info = generate_master(spark, lakehouses["local"], n, rows_per_file=args.rows_per_file)
            print(
                f"[{fmt_n(n)}] generated in {info['generate_s']} s (not part of the comparison)",
                flush=True,
            )
        for part in ("gold", "serving", "meta"):
            shutil.rmtree(root / part, ignore_errors=True)
        if store is not None:
            bucket = f"bench-{datetime.now(timezone.utc):%Y%m%d%H%M%S}"
            minio.create_bucket(store, bucket)
            s3_root = f"s3a://{bucket}/n{n}"
            s3_lakehouse = Lakehouse(s3_root)
            started = time.perf_counter()
            prefix = s3_lakehouse.master_dataset.split(f"s3a://{bucket}/", 1)[1]
            copied = sum(minio.upload_tree(store, master_table, bucket, prefix).values())
            print(
                f"[{fmt_n(n)}] master copied to {s3_root} ({copied / 2**20:.0f} MiB in "
                f"{time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            lakehouses["s3"] = s3_lakehouse
        lakehouses = {k: v for k, v in lakehouses.items() if k in args.stores}
        print(
            f"[{fmt_n(n)}] master: {info['files']} files, {info['bytes'] / 2**20:.0f} MiB; "
            f"stores {', '.join(lakehouses)}; "
            f"{args.warmup} warm-up + {args.runs} measured runs per engine and store",
            flush=True,
        )

        local, local_generations = recompute_runs(spark, lakehouses, args, "local[2]", n, meter)
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
            args.out / "standalone",
            workers=2,
            worker_memory=args.worker_memory,
            environ=environ,  # the workers' machines carry the store's credentials
        ) as cluster_handle:
            spark, cluster_start = start_session(cluster_handle.url, args, cluster_conf, s3)
            executors = (
                spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
            )  # minus the driver
            if executors != 2:
                raise SystemExit(f"bench: {executors} executors registered, expected 2")
            meter = CpuMeter(int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()))
            cluster, cluster_generations = recompute_runs(
                spark, lakehouses, args, "standalone 2x1", n, meter
            )
            published = {
                **{f"local[2] {k}": (lakehouses[k], g) for k, g in local_generations.items()},
                **{f"cluster {k}": (lakehouses[k], g) for k, g in cluster_generations.items()},
            }
            differences = compare(spark, published)
            spark.stop()
    finally:
        if store is not None:
            minio.stop(store)

    print(f"\n{fmt_n(n)} events, batch recompute (median of {args.runs}):")
    rows = [("local[2]", k, local[k]) for k in lakehouses] + [
        ("standalone 2x1", k, cluster[k]) for k in lakehouses
    ]
    base = local[args.stores[0]].median
    for engine, where, samples in rows:
        print(
            f"  {engine:<15} {where:<6} {samples.median:8.2f} s   "
            f"({n / samples.median / 1e3:,.0f}k events/s)   x{samples.median / base:.2f} "
            f"of local[2] {args.stores[0]}   runs {', '.join(f'{x:.1f}' for x in samples.seconds)}"
        )
    if "s3" in lakehouses and "local" in lakehouses:
        for engine, results in (("local[2]", local), ("standalone 2x1", cluster)):
            extra = results["s3"].median - results["local"].median
            print(
                f"  object store on {engine}: {extra:+.2f} s per recompute "
                f"({results['s3'].median / results['local'].median:.2f}x local disk)"
            )
    print(f"  views identical: {not any(differences.values())}")
    print(
        f"  session start: local {local_start:.1f}s, cluster {cluster_start:.1f}s (not in the figures)"
    )
    result = {
        "bench": "cluster",
        "at": datetime.now(timezone.utc).isoformat(),
        "events": n,
        "stores": list(lakehouses),
        "jars": len(jars or []),
        "machine": machine_info(),
        "local": {k: v.as_json() for k, v in local.items()},
        "cluster": {k: v.as_json() for k, v in cluster.items()},
        "session_start_s": {"local": round(local_start, 2), "cluster": round(cluster_start, 2)},
        "differences": differences,
        "settings": {"driver_memory": args.driver_memory, "worker_memory": args.worker_memory},
    }
    append_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
