"""A property test of the Lambda invariant (CONTRACT §4) on a real broker, Spark and Delta.

For each seed, a random interleaving of steps:

* ``speed``: new events (some late, some copies of events already sent to the landing zone,
  a bad record) are published to Kafka, then the streaming job starts from its checkpoint,
  drains the topic (``available_now``) and stops;
* ``speed-stopped``: the same, but the job is asked to stop (as SIGTERM does) during its first
  micro-batch, so it ends after exactly ``PER_TRIGGER`` records (one partition); the rest stays
  in Kafka for the next start;
* ``batch``: a landing file of new events (late ones, copies of events sent to Kafka, a bad
  record), then the batch job ingests, recomputes and publishes;
* ``batch-killed``: the same, but the batch is the real CLI in its own process, killed with
  SIGKILL at one of its fault points (drawn by the seed); readers still see the previous
  state, and the job, run again, converges;
* ``speed-killed``: new events published, then the real streaming CLI killed with SIGKILL at
  one of its fault points (drawn by the seed); the job, started again, converges.

After every step, every merged view, through the Spark path (chispa) and the fast path, equals
the oracle over every valid event ingested so far, de-duplicated by ``event_id`` (first ingested
wins; the test knows which layer ingested what first).

``LAMBDA_SALES_PROPERTY_SEEDS`` (default 2, about 4 min each) and ``LAMBDA_SALES_PROPERTY_STEPS`` (default 3)
make it run longer.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality

from batch_layer.job import run_batch
from devtools import kafka as kafka_service
from sales_core.lakehouse import Lakehouse
from sales_core.views import VIEWS
from serving_layer import spark_engine
from serving_layer.duckdb_engine import FastServing
from serving_layer.query import NoViewsError
from speed_layer.job import run_speed
from speed_layer.sink import SpeedSink
from tests.conftest import config_environ, write_jsonl
from tests.oracle import compute_views, event, raw_json, rows_to_view
from tests.processes import wait_for_exit
from tests.serving_helpers import expected_df

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

SEEDS = int(os.environ.get("LAMBDA_SALES_PROPERTY_SEEDS", "2"))
STEPS = int(os.environ.get("LAMBDA_SALES_PROPERTY_STEPS", "3"))
PER_TRIGGER = 3
NOW = datetime.now(timezone.utc).replace(microsecond=0)


CLI = str(Path(sys.executable).with_name("lambda-sales"))
# Fault points every killed step reaches whatever its records (each step brings new valid
# events; a reject is there only sometimes).
BATCH_KILLS = (
    "batch.after_plan",
    "batch.after_master_insert",
    "batch.after_ledger_commit",
    "batch.after_view_2",
)
SPEED_KILLS = (
    "speed.after_master_insert",
    "speed.after_increments",
    "speed.before_checkpoint_commit",
    "speed.after_checkpoint_commit",
)


def killed_cli(job: str, environ: dict[str, str], fault_point: str, *args: str) -> None:
    """The real CLI in its own process, which kills itself with SIGKILL at ``fault_point``."""
    env = {**os.environ, **environ, "LAMBDA_SALES_FAULT_POINT": fault_point}
    proc = subprocess.Popen(
        [CLI, job, "--quiet", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = wait_for_exit(proc)
    assert done.returncode == -signal.SIGKILL, (
        f"{job} never reached {fault_point}: {done.stderr[-2000:]}"
    )


@dataclass
class World:
    """What the test has sent where, and what the pipeline has ingested, in order."""

    rng: random.Random
    seed: int
    next_id: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # every valid event made
    # Records published but not consumed yet, in offset order (one partition); None: a bad one.
    kafka_queue: list[dict[str, Any] | None] = field(default_factory=list)
    ingested: dict[str, dict[str, Any]] = field(default_factory=dict)  # event_id -> first copy in

    def new_event(self) -> dict[str, Any]:
        rng = self.rng
        self.next_id += 1
        late = rng.random() < 0.25
        when = NOW - timedelta(
            days=rng.randint(400, 2000) if late else rng.randint(0, 6), minutes=rng.randint(0, 1439)
        )
        made = event(
            f"p{self.seed}-{self.next_id}",
            amount=f"{rng.randint(1, 250_000) / 100:.2f}",
            quantity=rng.randint(1, 4),
            event_time=when.isoformat(),
            category=rng.choice(["books", "toys", "home"]),
            region=rng.choice(["north", "south"]),
            channel=rng.choice(["web", "store"]),
            customer_id=rng.choice(["c1", "c2", "c3", "c4"]),
        )
        self.sent.append(made)
        return made

    def new_events(self, *, for_kafka: bool) -> list[dict[str, Any]]:
        """2-4 new events and, often, a copy (another amount) of an event sent before, through
        either layer. One topic never holds two unconsumed copies of an event."""
        events = [self.new_event() for _ in range(self.rng.randint(2, 4))]
        taken = {e["event_id"] for e in events}
        if for_kafka:
            taken |= {e["event_id"] for e in self.kafka_queue if e is not None}
        choices = [e for e in self.sent if e["event_id"] not in taken]
        if choices and self.rng.random() < 0.6:
            original = self.rng.choice(choices)
            events.append(
                {
                    **original,
                    "amount": Decimal(f"{self.rng.randint(1, 9_999) / 100:.2f}"),
                    "revenue_category": "low",
                }
            )
        return events

    def ingest(self, events: list[dict[str, Any] | None]) -> None:
        for e in events:
            if e is not None:
                self.ingested.setdefault(e["event_id"], e)


BAD = {
    "event_id": "bad",
    "order_id": "o",
    "product_id": "p",
    "quantity": 0,
    "amount": "1.00",
    "event_time": "2024-01-01T00:00:00Z",
}


def publish(bootstrap: str, topic: str, records: list[dict[str, Any] | str]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for r in records:
            key = r["event_id"].encode() if isinstance(r, dict) else None
            producer.send(
                topic,
                key=key,
                value=(json.dumps(r) if isinstance(r, dict) else r).encode(),
                partition=0,
            )
        producer.flush()
    finally:
        producer.close()


@contextlib.contextmanager
def stop_after_first_micro_batch(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` once the first micro-batch's sink is done (as SIGTERM would): the next
    micro-batch is refused, whenever Spark starts it."""
    original = SpeedSink.write_micro_batch

    def then_stop(sink: SpeedSink, batch_df: Any, batch_id: int) -> None:
        original(sink, batch_df, batch_id)
        stop.set()

    SpeedSink.write_micro_batch = then_stop  # type: ignore[method-assign]
    try:
        yield
    finally:
        SpeedSink.write_micro_batch = original  # type: ignore[method-assign]


def check_invariant(
    spark: Any, lakehouse: Lakehouse, world: World, step: str, reader: FastServing
) -> None:
    """``reader`` lives through the whole test (as the HTTP server's does): it merges only new
    micro-batches into its last merged view when it can; a new reader merges everything."""
    expected_events = list(world.ingested.values())
    expected = compute_views(expected_events)
    fast = FastServing(lakehouse.root)
    snapshot = spark_engine.pin_snapshot(spark, lakehouse)
    if snapshot.generation is None and "increments" not in snapshot.versions:
        # Nothing published and no speed tables yet: an empty view, said as such.
        assert not expected_events, (
            f"no views, but {len(expected_events)} events ingested, after {step}"
        )
        for serving in (fast, reader):
            with pytest.raises(NoViewsError):
                serving.rows("sales_daily")
        return
    for name in VIEWS:
        assert rows_to_view(fast.rows(name), name) == expected[name], (
            f"fast path, {name}, after {step}"
        )
        assert reader.rows(name) == fast.rows(name), (
            f"fast path, long-lived reader, {name}, after {step}"
        )
        assert_df_equality(
            spark_engine.merged_view(spark, lakehouse, name, snapshot),
            expected_df(spark, name, expected_events),
            ignore_row_order=True,
            ignore_nullable=True,
        )


def plan(rng: random.Random) -> list[str]:
    """``STEPS`` steps with at least one of each layer and one real process kill."""
    kinds = ["speed", "batch", "speed-stopped", "batch-killed", "speed-killed"]
    steps = [rng.choices(kinds, weights=[4, 3, 2, 2, 2])[0] for _ in range(STEPS)]
    if not any(s.endswith("killed") for s in steps):
        steps[rng.randrange(STEPS)] = rng.choice(["batch-killed", "speed-killed"])
    for layer in ("speed", "batch"):
        if not any(s.startswith(layer) for s in steps):
            plain = [i for i, s in enumerate(steps) if not s.endswith("killed")]
            steps[rng.choice(plain)] = layer
    return steps


@pytest.mark.timeout(
    1800
)  # one seed is a few minutes; far more on a machine shared with other JVMs
@pytest.mark.parametrize("seed", range(SEEDS))
def test_merged_views_equal_a_recomputation_after_every_step(
    spark, make_config, kafka_bootstrap, tmp_path, seed: int
) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    topic = f"prop-{seed}-{uuid.uuid4().hex[:6]}"
    kafka_service.create_topic(kafka_bootstrap, topic, partitions=1)
    env = {
        "LAMBDA_SALES__SOURCES__KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LAMBDA_SALES__SOURCES__KAFKA__TOPIC": topic,
        "LAMBDA_SALES__SOURCES__KAFKA__DLQ_TOPIC": f"{topic}-dlq",
    }
    config = make_config(**env)
    environ = config_environ(tmp_path, **env)
    stopping_config = make_config(
        **env, LAMBDA_SALES__SOURCES__KAFKA__MAX_OFFSETS_PER_TRIGGER=str(PER_TRIGGER)
    )
    lakehouse = Lakehouse(config.lakehouse.root)
    world = World(rng, seed)
    reader = FastServing(lakehouse.root)
    files = 0
    steps = plan(rng)
    for index, step in enumerate(steps):
        label = f"step {index} ({step}) of {steps}, seed {seed}"
        if step.startswith("speed"):
            records: list[dict[str, Any] | None] = list(world.new_events(for_kafka=True))
            if rng.random() < 0.5:
                records.insert(rng.randrange(len(records) + 1), None)
            publish(
                kafka_bootstrap, topic, [raw_json(r) if r is not None else BAD for r in records]
            )
            world.kafka_queue += records
            if step in ("speed", "speed-killed"):
                if step == "speed-killed":
                    killed_cli("speed", environ, rng.choice(SPEED_KILLS), "--available-now")
                run_speed(spark, config, available_now=True)
                consumed = len(world.kafka_queue)
            else:
                stop = threading.Event()
                with stop_after_first_micro_batch(stop):
                    run = run_speed(spark, stopping_config, available_now=True, stop=stop)
                assert run.totals.batches == 1 and run.status == "stopped", label
                consumed = run.totals.input_rows
                assert consumed == min(PER_TRIGGER, len(world.kafka_queue)), label
            world.ingest(world.kafka_queue[:consumed])
            world.kafka_queue = world.kafka_queue[consumed:]
        else:
            files += 1
            events = world.new_events(for_kafka=False)
            lines: list[Any] = [raw_json(e) for e in events] + (
                ["{not json"] if rng.random() < 0.5 else []
            )
            write_jsonl(tmp_path / "landing" / f"f{files:03d}.jsonl", lines)
            if step == "batch-killed":
                killed_cli("batch", environ, rng.choice(BATCH_KILLS))
                check_invariant(
                    spark, lakehouse, world, f"{label}: readers still see the last publish", reader
                )
            run_batch(spark, config)
            world.ingest(list(events))
        check_invariant(spark, lakehouse, world, label, reader)
