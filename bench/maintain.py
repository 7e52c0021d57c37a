"""Maintenance benchmark: files and cold-query time before and after ``lambda-sales maintain``
on a lakehouse that has taken a day of speed micro-batches, all in one run.

Set-up (built once under ``bench/out/data/maintain-n<N>-b<M>-k<K>/built``, not timed; each
invocation works on a fresh copy of it, since maintenance changes the tables):

1. a synthetic master dataset of N events (``bench.common.generate_master``) and batch
   generation 1 over it (``recompute_and_publish``, the real publish);
2. a day of the stream at its 1-second trigger: M micro-batches (default 86,400) of K events
   each, written as the streaming job writes them in its steady state: the master rows and
   then the micro-batch's speed increments, each appended and committed from the driver by the
   job's own writer (``speed_layer.deltalog.DriverAppends``, the increments computed by the
   sink's ``increments_over_arrow``), the stream metrics appended every 15 micro-batches
   (``append_metrics``, as the job's metrics thread does every 15 s), and the job's own
   compaction of its small files in the increments and the master dataset
   (``StreamCompactor.compact_once``), each table every ``--compact-every`` of its own
   micro-batches (the default ``speed.compact_interval_seconds`` is 600).
   The master appends run in one process, the increments and metrics in another (the tables'
   logs are independent), the compaction in this one; a table's writer waits while that
   table is compacted (the writers go several times faster than the trigger, and the
   compaction's commit would otherwise chase theirs through the log). While the day is written,
   the log entries far behind each table's newest checkpoint (which no writer reads again)
   wait in a folder beside ``_delta_log`` and go back into it when the day is done: on a local
   disk every append lists the whole ``_delta_log`` directory (inside delta-rs), so a day's
   appends in a log of all the day's entries would take about 5 hours here, not the ~1 hour of
   the same appends with the log kept short. What is measured after is the day's whole log;

3. the nightly batch: generation 2, which covers the whole day (its hand-off mark is the
   day's last micro-batch).

Then, on a copy: per table its active data files, log entries and data files on disk, and
``--runs`` times each cold query (a new reader each time, nothing cached): the fast path
(``FastServing``, a new reader per query, the CLI's and a restarted server's case) and the
Spark path (``spark_engine.answer`` after the Delta log cache is cleared) for the first page of
each view, and the nightly batch's read of the master dataset (a full scan aggregating every
row, cold). Then ``maintain`` (timed), then the same measurements again. The answers after
equal those before (the maintenance changes no row). Printed and appended to
``bench/out/results.jsonl``.

    python bench/maintain.py                                   # 1M events + a day of 86,400 micro-batches
    python bench/maintain.py --micro-batches 2000 --runs 2     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.batch import start_spark  # noqa: E402
from bench.common import (  # noqa: E402
    BASE_EPOCH,
    CATEGORIES,
    CHANNELS,
    OUT,
    REGIONS,
    SPAN_DAYS,
    append_result,
    delta_active_files,
    generate_master,
    load_average,
    new_record,
    parse_count,
)
from sales_core.handoff import SPEED_STREAM  # noqa: E402

TOPIC = "sales-events"
ASIDE = "_bench_log_aside"  # beside _delta_log, while the day is written
KEEP_BEHIND = 2000  # log versions kept in _delta_log behind the newest checkpoint
METRICS_EVERY = 15  # micro-batches per stream-metrics append (the job's 15 s at a 1 s trigger)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="1M", help="events in the master dataset")
    parser.add_argument(
        "--micro-batches",
        type=int,
        default=86_400,
        help="micro-batches of the day (default 86,400: a 1-second trigger)",
    )
    parser.add_argument(
        "--events-per-batch", type=int, default=10, help="events in each micro-batch"
    )
    parser.add_argument(
        "--compact-every",
        type=int,
        default=600,
        help="a table's micro-batches between the stream's own compactions of it (0: none)",
    )
    parser.add_argument("--runs", type=int, default=3, help="cold queries of each kind")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--rebuild", action="store_true", help="build the day again")
    parser.add_argument(
        "--build-only", action="store_true", help="build (or keep) the data set, measure nothing"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.events = parse_count(args.events)
    return args


# --------------------------------------------------------------------------- the day


def _micro_batch(first_batch: int, i: int, k: int, day_start: int) -> Any:
    """Micro-batch ``i`` of the day: ``k`` valid events as master rows (Arrow)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    from sales_core.lakehouse import MASTER_SCHEMA

    at = datetime.fromtimestamp(day_start + i, timezone.utc)
    rows = []
    for j in range(k):
        n = i * k + j
        amount = Decimal((n * 7919) % 500_000 + 1) / 100
        rows.append(
            {
                "event_id": f"day-{i:06d}-{j:03d}",
                "order_id": f"dord-{n // 3:09d}",
                "product_id": f"prd-{n * 31 % 5000:05d}",
                "customer_id": f"cus-{n * 17 % 100_000:06d}",
                "category": CATEGORIES[n % len(CATEGORIES)],
                "region": REGIONS[n % len(REGIONS)],
                "channel": CHANNELS[n % len(CHANNELS)],
                "quantity": 1 + n % 5,
                "amount": amount,
                "event_time": at,
                "event_date": at.date(),
                "event_hour": at.replace(minute=0, second=0),
                "month": at.strftime("%Y-%m"),
                "revenue_category": "high"
                if amount > 1000
                else ("medium" if amount > 100 else "low"),
                "source": "kafka",
                "source_name": TOPIC,
                "source_partition": n % 3,
                "source_offset": n,
                "source_key": f"day-{i:06d}-{j:03d}",
                "ingest_layer": "speed",
                "ingest_run": SPEED_STREAM,
                "ingest_batch": first_batch + i,
                "ingested_at": at + timedelta(milliseconds=400),
            }
        )
    return pa.Table.from_pylist(rows, schema=to_arrow_schema(MASTER_SCHEMA, timezone="UTC"))


def _progress_file(root: Path, table: str) -> Path:
    return root / f"_bench_{table}_written"


def _written(path: str, column: str, first_batch: int) -> int:
    """How many of the day's micro-batches ``path`` holds already (its rows of batch ids from
    ``first_batch`` on are consecutive: each writer appends them in order)."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    ids = DeltaTable(path).to_pyarrow_dataset().to_table(columns=[column]).column(column)
    newest = pc.max(pc.filter(ids, pc.greater_equal(ids, first_batch))).as_py()
    return 0 if newest is None else newest - first_batch + 1


def write_day(
    table: str, root: str, first_batch: int, m: int, k: int, day_start: int, go: Any
) -> None:
    """One writer process: the day's appends to ``table`` (``master`` or ``increments``, the
    latter with the stream metrics), micro-batch by micro-batch, as the streaming job writes
    them in its steady state; each micro-batch waits for ``go`` (cleared while the stream's
    compaction runs)."""
    from sales_core.lakehouse import Lakehouse, increments_commit_metadata
    from speed_layer.deltalog import DriverAppends
    from speed_layer.metrics import MicroBatchMetrics, append_metrics
    from speed_layer.sink import increments_over_arrow

    lakehouse = Lakehouse(root)
    driver = DriverAppends()
    progress = _progress_file(Path(root), table)
    pending: list[MicroBatchMetrics] = []
    # A build stopped half-way goes on from what its tables hold (each micro-batch exactly once).
    if table == "master":
        resume = {"master": _written(lakehouse.master_dataset, "ingest_batch", first_batch)}
    else:
        resume = {
            "increments": _written(lakehouse.speed_increments, "batch_id", first_batch),
            "metrics": _written(lakehouse.stream_metrics, "batch_id", first_batch),
        }
    for i in range(min(resume.values()), m):
        go.wait()
        batch_id = first_batch + i
        events = _micro_batch(first_batch, i, k, day_start)
        at = datetime.fromtimestamp(day_start + i, timezone.utc)
        if table == "master":
            driver.append(lakehouse.master_dataset, events, user_metadata=f"bench:{batch_id}")
        else:
            if i >= resume["increments"]:
                driver.append(
                    lakehouse.speed_increments,
                    increments_over_arrow(events, stream=SPEED_STREAM, batch_id=batch_id),
                    user_metadata=increments_commit_metadata(SPEED_STREAM, batch_id, at),
                )
            if i < resume["metrics"]:
                continue
            pending.append(
                MicroBatchMetrics(
                    stream=SPEED_STREAM,
                    batch_id=batch_id,
                    batch_time=at,
                    started_at=at,
                    ended_at=at + timedelta(milliseconds=450),
                    input_rows=k,
                    valid=k,
                    duplicates=0,
                    quarantined=0,
                    kafka_lag=0,
                    newest_message_at=at,
                )
            )
            if len(pending) == METRICS_EVERY or i == m - 1:
                append_metrics(
                    None,  # type: ignore[arg-type]  # never used: every key is new, delta-rs writes
                    lakehouse.stream_metrics,
                    pending,
                    present=set(),
                    driver=driver,
                )
                pending = []
        if i % 200 == 0 or i == m - 1:
            progress.write_text(str(i + 1))


def _log_version(name: str) -> int | None:
    """The version of a ``_delta_log`` entry (commit, checksum, checkpoint), None for others."""
    head = name.split(".", 1)[0]
    return int(head) if len(head) == 20 and head.isdigit() else None


def set_log_aside(table: Path) -> int:
    """Move the entries of ``table``'s log more than :data:`KEEP_BEHIND` versions behind its
    newest checkpoint into :data:`ASIDE` (writers and readers start from that checkpoint and
    never read them); how many were moved."""
    log = table / "_delta_log"
    try:
        newest = json.loads((log / "_last_checkpoint").read_text())["version"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0
    aside = table / ASIDE
    aside.mkdir(exist_ok=True)
    moved = 0
    for entry in os.scandir(log):
        version = _log_version(entry.name)
        if version is not None and version < newest - KEEP_BEHIND:
            os.rename(entry.path, aside / entry.name)
            moved += 1
    return moved


def put_log_back(table: Path) -> int:
    """Move every entry :func:`set_log_aside` moved back into ``table``'s log."""
    aside = table / ASIDE
    if not aside.is_dir():
        return 0
    moved = 0
    for entry in os.scandir(aside):
        os.rename(entry.path, table / "_delta_log" / entry.name)
        moved += 1
    aside.rmdir()
    return moved


# --------------------------------------------------------------------------- set-up


def build(spark: Any, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    """The built lakehouse at ``base``: master + generation 1 + the day + generation 2."""
    from batch_layer.publish import recompute_and_publish
    from sales_core.handoff import current_generation
    from sales_core.lakehouse import Lakehouse, ensure_serving_tables, ensure_speed_tables
    from speed_layer.compaction import StreamCompactor

    ready, started_day = base / "_bench_ready.json", base / "_bench_day.json"
    if ready.is_file() and not args.rebuild:
        return {**json.loads(ready.read_text()), "cached": True}
    lakehouse = Lakehouse(str(base))
    if started_day.is_file() and not args.rebuild:
        # A day stopped half-way (the build takes hours): go on with it.
        info = {**json.loads(started_day.read_text()), "resumed": True}
        print(f"going on with the day built under {base} ...", flush=True)
    else:
        if base.exists():
            shutil.rmtree(base)
        info = {"events": args.events, "cached": False}
        print(f"generating {args.events:,} events ...", flush=True)
        info["master"] = generate_master(spark, lakehouse, args.events, rows_per_file=250_000)
        ensure_serving_tables(spark, lakehouse)
        ensure_speed_tables(spark, lakehouse)
        first = recompute_and_publish(
            spark,
            lakehouse,
            previous=None,
            run_id="bench-maintain-1",
            published_at=datetime.now(timezone.utc),
            keep_generations=3,
        )
        info["generation_1_handoff"] = first.handoff
        started_day.write_text(json.dumps(info))
    first_batch = info["generation_1_handoff"][SPEED_STREAM] + 1
    m, k = args.micro_batches, args.events_per_batch
    day_start = BASE_EPOCH + SPAN_DAYS * 86_400
    print(f"a day of the stream: {m:,} micro-batches of {k} events ...", flush=True)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    tables = {"master": lakehouse.master_dataset, "increments": lakehouse.speed_increments}
    go = {table: context.Event() for table in tables}
    for event in go.values():
        event.set()
    writers = [
        context.Process(
            target=write_day,
            args=(table, str(base), first_batch, m, k, day_start, go[table]),
            daemon=True,
        )
        for table in tables
    ]
    for w in writers:
        w.start()
    # The stream's compaction, per table, every --compact-every of that table's micro-batches
    # (in the stream both tables take each micro-batch together; here each writer goes at its
    # own pace).
    compactors = {t: StreamCompactor(spark, (path,), 0) for t, path in tables.items()}
    compactions = 0
    next_compaction = dict.fromkeys(tables, args.compact_every)
    logged = [
        Path(p)
        for p in (lakehouse.master_dataset, lakehouse.speed_increments, lakehouse.stream_metrics)
    ]
    while any(w.is_alive() for w in writers):
        time.sleep(2)
        for table in logged:
            set_log_aside(table)
        done = {
            t: int(p.read_text() or 0) if p.is_file() else 0
            for t in tables
            for p in [_progress_file(base, t)]
        }
        for t, compactor in compactors.items():
            if not args.compact_every or done[t] < next_compaction[t]:
                continue
            # The table's writer waits while its compaction runs: the writers go several times
            # faster than the 1-second trigger, and a compaction's commit would otherwise chase
            # their commits through a growing log (Spark's conflict check lists the whole local
            # _delta_log for each retry: one took over 5 minutes of CPU while the log grew).
            # In the stream, a compaction runs beside one commit a second to each table.
            go[t].clear()
            compactions += compactor.compact_once()
            go[t].set()
            next_compaction[t] = done[t] + args.compact_every
        if int(time.perf_counter() - started) % 60 < 2:
            print(f"  {done} after {time.perf_counter() - started:.0f} s", flush=True)
    if any(w.exitcode != 0 for w in writers):
        raise RuntimeError(f"a writer failed: exit codes {[w.exitcode for w in writers]}")
    info["day_s"] = round(time.perf_counter() - started, 1)
    info["log_entries_put_back"] = sum(put_log_back(table) for table in logged)
    info["stream_compactions"] = compactions
    print(f"  written in {info['day_s']} s ({compactions} stream compactions)", flush=True)
    print("the nightly batch: generation 2 ...", flush=True)
    second = recompute_and_publish(
        spark,
        lakehouse,
        previous=current_generation(spark, lakehouse),
        run_id="bench-maintain-2",
        published_at=datetime.now(timezone.utc),
        keep_generations=3,
    )
    info["handoff"] = {
        "generation_1": info.pop("generation_1_handoff"),
        "generation_2": second.handoff,
    }
    ready.write_text(json.dumps(info))
    return info


# --------------------------------------------------------------------------- measures


def table_files(root: Path) -> dict[str, dict[str, int]]:
    """Per table: active data files, log entries, Parquet files on disk."""
    from sales_core.lakehouse import Lakehouse

    lakehouse = Lakehouse(str(root))
    out = {}
    for name, path in (
        ("master_dataset", lakehouse.master_dataset),
        ("speed_increments", lakehouse.speed_increments),
        ("stream_metrics", lakehouse.stream_metrics),
    ):
        table = Path(path)
        out[name] = {
            "active_files": len(delta_active_files(table)),
            "log_entries": len(os.listdir(table / "_delta_log")),
            "files_on_disk": sum(
                1 for p in table.rglob("*.parquet") if "_delta_log" not in p.parts
            ),
        }
    return out


def cold_queries(spark: Any, root: Path, runs: int) -> dict[str, Any]:
    """Seconds of each cold query, ``runs`` times; and the answers (to compare)."""
    from pyspark.sql import functions as F

    from sales_core.lakehouse import Lakehouse
    from sales_core.views import VIEWS
    from serving_layer import spark_engine
    from serving_layer.duckdb_engine import FastServing
    from serving_layer.query import build_query

    lakehouse = Lakehouse(str(root))
    queries = {name: build_query(name, limit=1000) for name in VIEWS}
    delta_log = spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaLog
    times: dict[str, list[float]] = {"fast": [], "spark": [], "master_scan": []}
    answers: dict[str, Any] = {}
    for _ in range(runs):
        t = time.perf_counter()
        for name, q in queries.items():
            answers[f"fast:{name}"] = FastServing(str(root)).answer(q).rows
        times["fast"].append(time.perf_counter() - t)
        delta_log.clearCache()
        t = time.perf_counter()
        for name, q in queries.items():
            answers[f"spark:{name}"] = spark_engine.answer(spark, lakehouse, q).rows
        times["spark"].append(time.perf_counter() - t)
        delta_log.clearCache()
        t = time.perf_counter()
        row = (
            spark.read.format("delta")
            .load(lakehouse.master_dataset)
            .agg(F.count("*").alias("n"), F.sum("amount").alias("amount"))
            .first()
        )
        times["master_scan"].append(time.perf_counter() - t)
        answers["master"] = (row["n"], str(row["amount"]))
    return {
        "seconds": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
        "median_s": {k: round(statistics.median(vs), 3) for k, vs in times.items()},
        "answers": answers,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from batch_layer.maintain import maintain
    from sales_core.config import load_config

    name = f"maintain-n{args.events}-b{args.micro_batches}-k{args.events_per_batch}"
    data = args.out / "data" / name
    base, work = data / "built", data / "work"
    spark, _, start = start_spark(args)
    print(f"Spark started in {start['session_s']:.1f} s", flush=True)
    info = build(spark, args, base)
    if args.build_only:
        spark.stop()
        return 0
    print(f"copying the built lakehouse to {work} ...", flush=True)
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(base, work)

    load_before = load_average()
    before_files = table_files(work)
    print(f"before: {json.dumps(before_files)}", flush=True)
    before = cold_queries(spark, work, args.runs)
    print(f"before: cold query medians {before['median_s']}", flush=True)

    environ = dict(os.environ)
    environ["LAMBDA_SALES__LAKEHOUSE__ROOT"] = str(work)
    config = load_config(environ=environ)
    t = time.perf_counter()
    record = maintain(spark, config, progress=lambda m: print(f"  maintain: {m}", flush=True))
    maintain_s = time.perf_counter() - t
    print(f"maintain: {maintain_s:.1f} s, {json.dumps(record.details)}", flush=True)

    after_files = table_files(work)
    print(f"after: {json.dumps(after_files)}", flush=True)
    after = cold_queries(spark, work, args.runs)
    print(f"after: cold query medians {after['median_s']}", flush=True)
    if before["answers"] != after["answers"]:
        raise RuntimeError("the answers changed with the maintenance")

    print()
    print(
        f"{args.micro_batches:,} micro-batches of {args.events_per_batch} events over "
        f"{args.events:,}: maintain took {maintain_s:.1f} s"
    )
    print(f"{'table':<18}{'active files':>22}{'log entries':>20}{'files on disk':>22}")
    for table in before_files:
        b, a = before_files[table], after_files[table]
        print(
            f"{table:<18}"
            + "".join(
                f"{b[k]:>11,} → {a[k]:<8,}"
                for k in ("active_files", "log_entries", "files_on_disk")
            )
        )
    print(f"{'cold query (median s)':<26}{'before':>10}{'after':>10}{'before/after':>14}")
    for kind in before["median_s"]:
        b, a = before["median_s"][kind], after["median_s"][kind]
        print(f"{kind:<26}{b:>10.2f}{a:>10.2f}{b / a:>14.1f}")
    record_out = new_record(
        "maintain",
        args,
        load_before_queries=load_before,
        build=info,
        files={"before": before_files, "after": after_files},
        cold_s={"before": before["seconds"], "after": after["seconds"]},
        maintain_s=round(maintain_s, 1),
        maintain_details=record.details,
    )
    append_result(record_out, args.out)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
