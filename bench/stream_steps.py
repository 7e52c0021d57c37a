"""Where a speed-layer micro-batch spends its time, step by step.

Runs ``run_speed(available_now=True)`` over a pre-filled topic of ``bench/stream.py`` (same
broker, same port, same data: run ``bench/stream.py --only throughput --events N`` first so
the topic ``bench-prefill-N`` exists), with a wall-clock timer around each step of the sink:
the first action over the micro-batch (Kafka read, parse, validation, the de-duplication
state, counted per reason: the rows are cached), the quarantine and dead-letter topic (only
with rejects), the master append, the four view increments, the metrics rows (written in the
background, off the micro-batch's path); and, per run, the two run-record upserts. The first run pays for table creation and JIT warm-up; later runs show
the steady state. Results are printed and appended to ``bench/out/results.jsonl``.

    python bench/stream_steps.py --events 1M --runs 2
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    OUT,
    STEPS,
    append_result,
    instrument,
    load_average,
    new_record,
    parse_count,
)
from bench.stream import Bench, config_for  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events",
        type=parse_count,
        default=1_000_000,
        help="size of the pre-filled topic (default 1M)",
    )
    parser.add_argument(
        "--runs", type=int, default=2, help="runs from an empty lakehouse (default 2)"
    )
    args = parser.parse_args(argv)

    from sales_core.session import get_spark
    from speed_layer import job

    times: dict[str, list[float]] = collections.defaultdict(list)
    instrument(times)
    work = OUT / "stream"
    bench = Bench(work)
    topic = f"bench-prefill-{args.events}"
    if bench.topic_size(topic) != args.events:
        raise SystemExit(
            f"bench: topic {topic} is missing: run bench/stream.py --only throughput --events {args.events} first"
        )
    spark = get_spark(
        config_for(bench, work / "session", "unused").spark, app_name="bench-stream-steps"
    )
    results: dict[str, Any] = new_record("stream_steps", args, runs=[])
    for run in range(args.runs):
        root = work / "steps"
        shutil.rmtree(root, ignore_errors=True)
        times.clear()
        started = time.monotonic()
        outcome = job.run_speed(
            spark, config_for(bench, root, topic), available_now=True, progress=lambda _m: None
        )
        total = time.monotonic() - started
        rows = [int(r) for r in _batch_rows(spark, root)]
        print(
            f"run {run + 1}: {total:.1f}s for {outcome.totals.input_rows:,} events in micro-batches of {rows}",
            flush=True,
        )
        for _module, _attribute, label in STEPS:
            spent = times.get(label, [])
            print(
                f"    {label:50s} {sum(spent):7.1f}s  ({', '.join(f'{s:.1f}' for s in spent)})",
                flush=True,
            )
        results["runs"].append(
            {
                "total_s": round(total, 1),
                "batch_rows": rows,
                "steps_s": {
                    label: [round(s, 2) for s in times.get(label, [])] for *_x, label in STEPS
                },
            }
        )
    results["load_after"] = load_average()
    append_result(results)
    return 0


def _batch_rows(spark: Any, root: Path) -> list[int]:
    from sales_core.lakehouse import Lakehouse

    metrics = spark.read.format("delta").load(Lakehouse(str(root / "lakehouse")).stream_metrics)
    return [r["input_rows"] for r in metrics.orderBy("batch_id").collect()]


if __name__ == "__main__":
    raise SystemExit(main())
