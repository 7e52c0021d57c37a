"""``lambda-sales demo``: the pipeline end to end on the embedded defaults."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from sales_core.config import Config
from sales_core.generator import GeneratorSpec, generate_records, write_landing_files
from sales_core.lakehouse import Lakehouse
from sales_core.views import VIEWS

SHOW_ROWS = 8


def run_demo(config: Config, *, events: int, progress: Callable[[str], None]) -> int:
    """Generate sales into the landing zone, run the batch job, print every view."""
    from batch_layer.job import BatchOptions, run_batch
    from jobs.cli import format_run_summary
    from sales_core.session import get_spark
    from serving_layer.rows import render
    from serving_layer.spark_views import batch_view

    landing = config.sources.files.landing
    seed = int(time.time())
    progress(f"generating {events} sales (seed {seed}) into {landing} as jsonl, csv and parquet")
    shares = {"jsonl": 0.6, "csv": 0.2, "parquet": 0.2}
    for offset, (fmt, share) in enumerate(shares.items()):
        spec = GeneratorSpec(events=int(events * share), seed=seed + offset, id_prefix=f"demo-{fmt}")
        write_landing_files(generate_records(spec), landing, fmt=fmt, rows_per_file=10_000, prefix=f"demo-{fmt}")

    progress("starting Spark")
    spark = get_spark(config.spark, app_name="lambda-sales-demo")
    record = run_batch(spark, config, options=BatchOptions(), progress=progress)
    print(format_run_summary(record))

    lakehouse = Lakehouse(config.lakehouse.root)
    for name, view in VIEWS.items():
        rows, generation = batch_view(spark, lakehouse, name)
        total = rows.count()
        print(f"\n== {name} (generation {generation}, {total} rows; first {min(SHOW_ROWS, total)}) ==")
        sys.stdout.write(render([r.asDict() for r in rows.limit(SHOW_ROWS).collect()], view.columns, "table"))
    print(f"\nlakehouse: {lakehouse.root}\nquery any view: lambda-sales query sales_daily --where region=north")
    return 0
