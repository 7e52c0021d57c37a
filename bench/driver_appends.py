"""Driver appends over a long run: what one micro-batch's delta-rs append costs as the stream
keeps appending, the speed layer's writer against a kept table state, in one run.

Both append the same small Arrow table (a micro-batch of master rows) ``--appends`` times to a
table of their own, each append one Delta commit:

* ``product``: ``speed_layer.deltalog.DriverAppends`` (the sink's steady-state writer): its
  table state loaded again from the newest checkpoint every ``RELOAD_AFTER`` commits, the
  log's expired entries cleaned only then;
* ``kept state``: what it did before: one ``DeltaTable`` brought forward with
  ``update_incremental`` before each ``write_deltalake``, delta-rs's default post-commit
  hooks (a checkpoint every 100 commits, and a listing of the whole log after every commit).

Printed: the median append time of each block of ``--block`` appends, side by side, and
their ratio; appended to ``bench/out/results.jsonl``.

``--log-commits 0,20000,40000,80000`` measures instead what the length of the log costs an
append on a local disk (where listing ``_delta_log`` reads every entry): for each N, a table
whose log holds N commits and a checkpoint at its end, then ``--probe`` appends by
``DriverAppends``, median. The N commits are written directly as Delta commit files that
carry only ``commitInfo`` (valid commits that change nothing): a day of real appends takes
hours (see ``bench/maintain.py``), and the log's length, not its content, is what is timed.

    python bench/driver_appends.py                    # 3,000 appends each
    python bench/driver_appends.py --appends 1000     # quicker
    python bench/driver_appends.py --log-commits 0,20000,40000,80000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT, append_result, new_record, percentile  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=3000)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--rows", type=int, default=10, help="rows per append")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--log-commits",
        default="",
        help="comma-separated log lengths: time appends after that many commits instead",
    )
    parser.add_argument("--probe", type=int, default=30, help="appends timed per log length")
    return parser.parse_args(argv)


def log_length(args: argparse.Namespace, rows: Any, work: Path) -> int:
    """``--log-commits``: the median ``DriverAppends`` append after N commits, per N."""
    import json

    from deltalake import DeltaTable, write_deltalake

    from sales_core.delta_log import commit_file
    from speed_layer.deltalog import DriverAppends

    no_op = json.dumps({"commitInfo": {"operation": "WRITE", "timestamp": 0}}) + "\n"
    results = []
    print(f"{'commits':>10}{'log entries':>13}{'append p50 (ms)':>17}{'p90 (ms)':>10}")
    for n in [int(x) for x in args.log_commits.split(",")]:
        path = work / f"log-{n}"
        write_deltalake(str(path), rows)
        for version in range(1, n + 1):
            (path / commit_file(version)).write_text(no_op)
        if n:
            DeltaTable(str(path)).create_checkpoint()
        appends = DriverAppends()
        appends.append(str(path), rows, user_metadata="bench:warm")  # the state loaded
        times = []
        for i in range(args.probe):
            t = time.perf_counter()
            appends.append(str(path), rows, user_metadata=f"bench:{i}")
            times.append((time.perf_counter() - t) * 1000)
        entries = len(list((path / "_delta_log").iterdir()))
        p50, p90 = statistics.median(times), percentile(times, 0.9)
        results.append({"commits": n, "log_entries": entries, "p50_ms": p50, "p90_ms": p90})
        print(f"{n:>10,}{entries:>13,}{p50:>17.1f}{p90:>10.1f}", flush=True)
        shutil.rmtree(path)
    append_result(new_record("driver_appends_log_length", args, results=results), args.out)
    return 0


def micro_batch(rows: int) -> Any:
    """``rows`` master rows as Arrow (what the sink appends)."""
    from datetime import date, datetime, timezone
    from decimal import Decimal

    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    from sales_core.lakehouse import MASTER_SCHEMA

    at = datetime(2026, 1, 15, 10, 0, tzinfo=timezone.utc)
    values = []
    for i in range(rows):
        row: dict[str, Any] = {f.name: f"{f.name}-{i}" for f in MASTER_SCHEMA.fields}
        row.update(
            quantity=2,
            amount=Decimal("10.01"),
            event_time=at,
            event_date=date(2026, 1, 15),
            event_hour=at,
            source_partition=0,
            source_offset=i,
            ingest_batch=1,
            ingested_at=at,
        )
        values.append(row)
    return pa.Table.from_pylist(values, schema=to_arrow_schema(MASTER_SCHEMA, timezone="UTC"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from deltalake import DeltaTable, write_deltalake

    from speed_layer.deltalog import DriverAppends

    rows = micro_batch(args.rows)
    work = Path(tempfile.mkdtemp(prefix="bench-driver-appends-"))
    if args.log_commits:
        try:
            return log_length(args, rows, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    product_path, kept_path = str(work / "product"), str(work / "kept")
    for path in (product_path, kept_path):
        write_deltalake(path, rows)
    appends = DriverAppends()
    kept = DeltaTable(kept_path)

    def product(n: int) -> None:
        appends.append(product_path, rows, user_metadata=f"bench:{n}")

    def kept_state(n: int) -> None:
        kept.update_incremental()
        write_deltalake(kept, rows, mode="append")

    times: dict[str, list[float]] = {"product": [], "kept state": []}
    print(f"{args.appends:,} appends of {args.rows} rows each, interleaved ...", flush=True)
    for n in range(args.appends):
        for name, append in (("product", product), ("kept state", kept_state)):
            t = time.perf_counter()
            append(n)
            times[name].append(time.perf_counter() - t)
    blocks = []
    print(f"{'appends':>12}{'product (ms)':>16}{'kept state (ms)':>18}{'ratio':>8}")
    for start in range(0, args.appends, args.block):
        end = min(args.appends, start + args.block)
        p = statistics.median(times["product"][start:end]) * 1000
        k = statistics.median(times["kept state"][start:end]) * 1000
        blocks.append({"appends": f"{start + 1}-{end}", "product_ms": p, "kept_ms": k})
        print(f"{f'{start + 1}-{end}':>12}{p:>16.1f}{k:>18.1f}{k / p:>8.1f}")
    append_result(new_record("driver_appends", args, blocks=blocks), args.out)
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
