"""``lambda-sales demo``: the pipeline end to end on the embedded defaults.

Landing files → ``batch`` → a local Kafka broker → ``speed --available-now`` → the merged
views, so every layer and the hand-off between them run once: the Kafka share holds late
events, bad records, duplicates within the topic and re-sends of events the batch already
ingested (which must count once).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from devtools.generator import GeneratorSpec, generate_records
from devtools.writers import write_landing_files
from sales_core.config import Config
from sales_core.views import VIEWS

SHOW_ROWS = 8
KAFKA_SHARE = 0.25  # of the demo's events go through Kafka
RESENT = 200  # events of the landing files published to Kafka again (cross-layer duplicates)


def run_demo(
    config: Config,
    *,
    events: int,
    progress: Callable[[str], None],
    spark_factory: Callable[[Config], Any],
) -> int:
    """Generate sales, run the batch and the speed layer, print every merged view."""
    from batch_layer.job import BatchOptions, run_batch
    from devtools import kafka
    from devtools.writers import publish_records
    from sales_core.runs import format_run_summary
    from serving_layer.duckdb_engine import FastServing
    from serving_layer.query import build_query
    from serving_layer.rows import render
    from speed_layer.job import run_speed

    landing = config.sources.files.landing
    seed = int(time.time())
    batch_events = int(events * (1 - KAFKA_SHARE))
    progress(
        f"generating {batch_events} sales (seed {seed}) into {landing} as jsonl, csv and parquet"
    )
    shares = {"jsonl": 0.6, "csv": 0.2, "parquet": 0.2}
    resend: list[dict[str, Any] | str] = []
    for offset, (fmt, share) in enumerate(shares.items()):
        spec = GeneratorSpec(
            events=int(batch_events * share), seed=seed + offset, id_prefix=f"demo-{fmt}-{seed}"
        )
        records = list(generate_records(spec))
        resend += [r for r in records if isinstance(r, dict)][: RESENT // len(shares)]
        write_landing_files(
            iter(records), landing, fmt=fmt, rows_per_file=10_000, prefix=f"demo-{fmt}-{seed}"
        )

    host, _, port = config.sources.kafka.bootstrap_servers.split(",")[0].rpartition(":")
    progress(f"starting the local Kafka broker on {host or '127.0.0.1'}:{port or 9092}")
    kafka.start(host=host or "127.0.0.1", port=int(port or 9092))
    kafka_spec = GeneratorSpec(
        events=events - batch_events,
        seed=seed + 7,
        id_prefix=f"demo-kafka-{seed}",
        late_share=0.1,
        bad_share=0.03,
        duplicate_share=0.03,
    )
    sent = publish_records(
        [*generate_records(kafka_spec), *resend],
        config.sources.kafka,
        partitions=3,
        progress=progress,
    )
    progress(
        f"published {sent} records to {config.sources.kafka.topic} ({len(resend)} of them already in landing files)"
    )

    progress("starting Spark")
    spark = spark_factory(config)
    record = run_batch(spark, config, options=BatchOptions(), progress=progress)
    print(format_run_summary(record))
    speed = run_speed(spark, config, available_now=True, progress=progress)
    print(speed.summary())

    reader = FastServing(config.lakehouse.root)
    for name, view in VIEWS.items():
        answer = reader.answer(build_query(name))
        shown = answer.rows[:SHOW_ROWS]
        increments = (
            f"the speed increments above its hand-off mark {answer.handoff}"
            if answer.handoff
            else "all speed increments (the stream ran after it)"
        )
        print(
            f"\n== {name}, merged: batch generation {answer.generation} + {increments} "
            f"({len(answer.rows)} rows; first {len(shown)}) =="
        )
        if name == "sales_daily":
            print(
                f"events in the merged view: {sum(row['events'] for row in answer.rows)} "
                f"(batch run: {record.valid} new, speed run: {speed.totals.valid} new)"
            )
        sys.stdout.write(render(shown, view.columns, "table"))
    print(
        f"\nlakehouse: {config.lakehouse.root}\n"
        "query any view: lambda-sales query sales_daily --where region=north\n"
        "serve them over HTTP: lambda-sales serve   (then http://127.0.0.1:8000/docs)\n"
        "stop the local broker: lambda-sales kafka stop"
    )
    return 0
