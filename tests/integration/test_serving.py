"""The serving layer on real Spark and Delta tables: the merge (Spark path and fast path)
against the independent oracle, the SQL views, reconciliation and a reader racing publishes.

Speed micro-batches go through the real ``foreachBatch`` sink of the streaming job with
static Kafka-shaped DataFrames (the broker itself is exercised in the property test).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from deltalake.exceptions import DeltaProtocolError
from pyspark.sql import functions as F

from batch_layer.job import run_batch
from sales_core.config import load_config
from sales_core.lakehouse import Lakehouse
from sales_core.views import VIEWS
from serving_layer import spark_engine
from serving_layer.duckdb_engine import FastServing
from serving_layer.query import ViewQuery, build_query
from serving_layer.sql_views import merged_view_name, register_merged_views
from tests.conftest import write_jsonl
from tests.oracle import compute_views, event, rows_to_view
from tests.serving_helpers import expected_df, raw, speed_micro_batch, totals

pytestmark = pytest.mark.integration

BATCH_1 = [
    event("b1", amount="10.005", quantity=2, event_time="2024-05-01T23:30:00-02:00"),
    event(
        "b2", amount="150.00", event_time="2024-05-02T00:10:00Z", category="toys", customer_id="c2"
    ),
    event("b3", amount="1000.01", quantity=3, event_time="2024-05-02T01:59:59Z", channel="mobile"),
    event(
        "b4",
        amount="99.99",
        event_time="2024-06-30T12:00:00+00:00",
        region="south",
        customer_id="c2",
    ),
]
SPEED_0 = [
    event("s1", amount="20.00", event_time="2024-05-02T00:30:00Z", customer_id="c3"),
    event(
        "late1", amount="7.25", event_time="2023-03-01T09:00:00Z", region="east", channel="store"
    ),
]
SPEED_1 = [
    event("s2", amount="1200.00", quantity=5, event_time="2024-05-02T01:05:00Z", category="toys")
]
SPEED_2 = [
    event("s3", amount="0.10", event_time="2024-06-30T23:59:59Z", region="south", customer_id="c3"),
    event("late2", amount="3.00", event_time="2022-12-24T18:00:00Z", customer_id="c9"),
]
ALL_EVENTS = BATCH_1 + SPEED_0 + SPEED_1 + SPEED_2
# b1 arrives through Kafka too, with another amount: the batch layer brought it first.
B1_AGAIN = {**raw([BATCH_1[0]])[0], "amount": "999.00"}


def config_for(base: Path) -> Any:
    (base / "landing").mkdir(parents=True, exist_ok=True)
    return load_config(
        environ={
            "LAMBDA_SALES__LAKEHOUSE__ROOT": str(base / "lakehouse"),
            "LAMBDA_SALES__SOURCES__FILES__LANDING": str(base / "landing"),
            "LAMBDA_SALES__SPARK__MASTER": "local[2]",
            "LAMBDA_SALES__SPARK__SHUFFLE_PARTITIONS": "2",
            "LAMBDA_SALES__QUALITY__MIN_SCORE": "0",
        }
    )


@pytest.fixture(scope="module")
def served(spark, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Batch generation 1, two micro-batches, generation 2 absorbing them, one more micro-batch."""
    base = tmp_path_factory.mktemp("served")
    config = config_for(base)
    write_jsonl(base / "landing" / "day1.jsonl", raw(BATCH_1) + ["not json"])
    first = run_batch(spark, config)
    speed_micro_batch(spark, config, 0, raw(SPEED_0) + [B1_AGAIN], first_offset=0)
    speed_micro_batch(spark, config, 1, raw(SPEED_1), first_offset=10)
    second = run_batch(spark, config)
    speed_micro_batch(
        spark, config, 2, raw(SPEED_2) + raw(SPEED_0[:1], amount="1.00"), first_offset=20
    )
    return {
        "config": config,
        "lakehouse": Lakehouse(config.lakehouse.root),
        "runs": (first, second),
    }


def test_merged_views_equal_the_oracle_on_both_engines(spark, served) -> None:  # type: ignore[no-untyped-def]
    lakehouse: Lakehouse = served["lakehouse"]
    fast = FastServing(lakehouse.root)
    snapshot = spark_engine.pin_snapshot(spark, lakehouse)
    assert snapshot.generation is not None and snapshot.generation.generation == 2
    assert snapshot.handoff == {"speed": 1}
    for name, view in VIEWS.items():
        spark_df = spark_engine.merged_view(spark, lakehouse, name, snapshot)
        assert_df_equality(
            spark_df,
            expected_df(spark, name, ALL_EVENTS),
            ignore_row_order=True,
            ignore_nullable=True,
        )
        spark_rows = spark_engine.answer(spark, lakehouse, ViewQuery(view)).rows
        fast_answer = fast.answer(ViewQuery(view))
        assert fast_answer.rows == spark_rows, name  # same values, same types, same order
        assert rows_to_view(fast_answer.rows, name) == compute_views(ALL_EVENTS)[name], name
        assert (fast_answer.generation, fast_answer.handoff) == (2, {"speed": 1})
        assert [tuple(r[k] for k in view.key_names) for r in spark_rows] == sorted(
            tuple(r[k] for k in view.key_names) for r in spark_rows
        )
    types = {type(v) for r in fast.rows("customer_totals") for v in r.values()}
    assert types == {str, int, Decimal, datetime}
    assert all(r["first_event_time"].tzinfo is timezone.utc for r in fast.rows("customer_totals"))


QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("sales_daily", {"where": ["region=north", "category=books"]}),
    ("sales_daily", {"date_from": "2024-05-02", "date_to": "2024-05-02"}),
    ("sales_daily", {"where": ["events=2"]}),  # a measure: filtered after the merge
    (
        "sales_hourly",
        {"date_from": "2024-05-02", "date_to": "2024-05-02", "where": ["channel=web"]},
    ),
    ("sales_hourly", {"where": ["event_hour=2024-05-02T01:00:00Z"]}),
    ("customer_totals", {"date_from": "2024-06-30", "date_to": "2024-06-30"}),
    ("customer_totals", {"where": ["revenue=249.99"]}),
    ("customer_totals", {"limit": 2, "offset": 1}),
    ("revenue_category_monthly", {"date_from": "2024-05-15", "date_to": "2024-06-01"}),
    ("revenue_category_monthly", {"where": ["region=north"]}),  # unknown column: refused
]


@pytest.mark.parametrize(
    ("name", "args"), QUERIES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(QUERIES)]
)
def test_filters_ranges_and_pages_agree_on_both_engines(
    spark, served, name: str, args: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    lakehouse: Lakehouse = served["lakehouse"]
    if name == "revenue_category_monthly" and args.get("where"):
        with pytest.raises(
            ValueError, match="unknown column 'region' for view revenue_category_monthly"
        ):
            build_query(name, args["where"])
        return
    query = build_query(
        name,
        args.get("where", []),
        date_from=args.get("date_from"),
        date_to=args.get("date_to"),
        limit=args.get("limit"),
        offset=args.get("offset"),
    )
    fast_rows = FastServing(lakehouse.root).answer(query).rows
    assert fast_rows == spark_engine.answer(spark, lakehouse, query).rows
    everything = compute_views(ALL_EVENTS)[name]
    # Expected rows worked out from the oracle with the documented meaning of each filter.
    if name == "sales_daily" and "date_from" in args:
        keep = {k for k in everything if k[0] == date(2024, 5, 2)}
    elif name == "sales_daily" and args["where"] == ["events=2"]:
        keep = {k for k, m in everything.items() if m["events"] == 2}
    elif name == "sales_daily":
        keep = {k for k in everything if k[1:] == ("books", "north")}
    elif name == "sales_hourly" and "date_from" in args:
        keep = {k for k in everything if k[0].date() == date(2024, 5, 2) and k[1] == "web"}
    elif name == "sales_hourly":
        keep = {k for k in everything if k[0] == datetime(2024, 5, 2, 1, tzinfo=timezone.utc)}
    elif name == "customer_totals" and "date_from" in args:
        day = datetime(2024, 6, 30, tzinfo=timezone.utc)
        keep = {
            k
            for k, m in everything.items()
            if m["last_event_time"] >= day
            and m["first_event_time"] < datetime(2024, 7, 1, tzinfo=timezone.utc)
        }
        assert keep == {("c2",), ("c3",)}
    elif name == "customer_totals" and "where" in args:
        keep = {("c2",)}
        assert everything[("c2",)]["revenue"] == Decimal("249.99")  # b2 + b4
    elif name == "customer_totals":
        keep = set(sorted(everything)[1:3])
    else:
        keep = {k for k in everything if k[0] in ("2024-05", "2024-06")}
    assert rows_to_view(fast_rows, name) == {k: everything[k] for k in keep}
    assert fast_rows, "every query here selects something"


def test_sql_views_equal_the_python_merge(spark, served) -> None:  # type: ignore[no-untyped-def]
    lakehouse: Lakehouse = served["lakehouse"]
    names = register_merged_views(spark, lakehouse, database="default")
    assert names == [merged_view_name(n, "default") for n in VIEWS]
    register_merged_views(spark, lakehouse, temporary=True)
    for name in VIEWS:
        python = spark_engine.merged_view(spark, lakehouse, name)
        for table in (f"default.{name}_merged", f"{name}_merged"):
            assert_df_equality(
                spark.table(table), python, ignore_row_order=True, ignore_nullable=True
            )
    # The views follow new data: one more micro-batch shows up without re-registering.
    more = [event("s9", amount="5.55", event_time="2024-05-01T10:00:00Z")]
    speed_micro_batch(spark, served["config"], 3, raw(more), first_offset=40)
    try:
        assert_df_equality(
            spark.table("default.sales_daily_merged"),
            expected_df(spark, "sales_daily", ALL_EVENTS + more),
            ignore_row_order=True,
            ignore_nullable=True,
        )
    finally:  # leave the module's lakehouse as the other tests expect it
        DeltaTable.forPath(spark, lakehouse.speed_increments).delete(F.col("batch_id") == 3)


def test_reconciliation_of_absorbed_micro_batches_is_recorded(spark, served) -> None:  # type: ignore[no-untyped-def]
    first, second = served["runs"]
    assert first.details["reconciliation"]["absorbed"] == {}
    rec = second.details["reconciliation"]
    assert rec["absorbed"] == {"speed": {"after": -1, "through": 1}}
    assert rec["compared_batches"] == {"speed": 2} and rec["pending_batches"] == {"speed": []}
    assert rec["drift"] is False
    assert rec["views"] == {
        n: {"differing_groups": 0, "events_diff": 0, "revenue_diff": "0.00"} for n in VIEWS
    }


def test_tampered_increment_shows_as_drift_in_the_run_record(
    spark, make_config, tmp_path, caplog
) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    lakehouse = Lakehouse(config.lakehouse.root)
    write_jsonl(tmp_path / "landing" / "day1.jsonl", raw(BATCH_1))
    run_batch(spark, config)
    speed_micro_batch(spark, config, 0, raw(SPEED_0 + SPEED_1), first_offset=0)
    # Someone (a bug, a hand edit) adds an event and 1.50 to one group of sales_daily.
    DeltaTable.forPath(spark, lakehouse.speed_increments).update(
        (F.col("view") == "sales_daily")
        & (F.col("event_date") == date(2024, 5, 2))
        & (F.col("category") == "books"),
        {"events": F.col("events") + 1, "revenue": F.col("revenue") + F.lit(Decimal("1.50"))},
    )
    with caplog.at_level(logging.WARNING, logger="batch_layer"):
        record = run_batch(spark, config)
    rec = record.details["reconciliation"]
    assert rec["drift"] is True
    assert rec["views"]["sales_daily"] == {
        "differing_groups": 1,
        "events_diff": 1,
        "revenue_diff": "1.50",
    }
    assert all(rec["views"][n]["differing_groups"] == 0 for n in VIEWS if n != "sales_daily")
    stored = (
        spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .where(F.col("run_id") == record.run_id)
        .first()
    )
    assert (
        stored is not None
        and '"drift": true' in stored["details"]
        and '"events_diff": 1' in stored["details"]
    )
    assert any(
        "reconciliation drift" in r.getMessage() and r.levelno == logging.ERROR
        for r in caplog.records
    )
    assert any(
        r.name == "batch_layer.reconcile" and r.levelno == logging.WARNING for r in caplog.records
    )
    # The publish itself stands, with the master dataset's numbers.
    assert (
        rows_to_view(FastServing(lakehouse.root).rows("sales_daily"), "sales_daily")
        == compute_views(BATCH_1 + SPEED_0 + SPEED_1)["sales_daily"]
    )


def test_a_long_lived_reader_adds_new_micro_batches_to_its_last_merge(
    spark, make_config, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The HTTP server's reader merges only the new increments files into its last merged view
    when nothing else changed, and everything again after a publish or a compaction; its
    answers always equal a new reader's (same rows, types and order) and the oracle."""
    config = make_config()
    lakehouse = Lakehouse(config.lakehouse.root)
    reader = FastServing(lakehouse.root)

    def check(events: list[dict[str, Any]], merges: str, label: str) -> None:
        before = dict(reader.merges)
        for name, view in VIEWS.items():
            for query in (ViewQuery(view), ViewQuery(view, limit=1, offset=1)):
                rows = reader.answer(query).rows
                assert rows == FastServing(lakehouse.root).answer(query).rows, f"{name}, {label}"
            assert rows_to_view(reader.rows(name), name) == compute_views(events)[name], (
                f"{name}, {label}"
            )
        assert reader.merges[merges] - before[merges] == len(VIEWS), (label, before, reader.merges)
        assert sum(reader.merges.values()) - sum(before.values()) == len(VIEWS), (
            label,
            before,
            reader.merges,
        )

    write_jsonl(tmp_path / "landing" / "day1.jsonl", raw(BATCH_1))
    run_batch(spark, config)
    check(BATCH_1, "full", "generation 1")
    speed_micro_batch(spark, config, 0, raw(SPEED_0) + [B1_AGAIN], first_offset=0)
    check(BATCH_1 + SPEED_0, "full", "micro-batch 0 (the increments table is new)")
    speed_micro_batch(spark, config, 1, raw(SPEED_1), first_offset=10)
    check(BATCH_1 + SPEED_0 + SPEED_1, "incremental", "micro-batch 1")
    speed_micro_batch(spark, config, 2, raw(SPEED_2), first_offset=20)
    check(ALL_EVENTS, "incremental", "micro-batch 2")
    # compaction: files the last merge holds are gone
    spark.sql(f"OPTIMIZE delta.`{lakehouse.speed_increments}`")
    check(ALL_EVENTS, "full", "OPTIMIZE of the increments table")
    run_batch(spark, config)  # generation 2 absorbs micro-batches 0-2
    check(ALL_EVENTS, "full", "generation 2")
    later = [event("s4", amount="5.55", event_time="2024-07-01T08:00:00Z", customer_id="c2")]
    speed_micro_batch(spark, config, 3, raw(later) + raw(SPEED_1, amount="1.00"), first_offset=30)
    check(ALL_EVENTS + later, "incremental", "micro-batch 3, with a duplicate")
    speed = reader.health()["speed"]  # stream_metrics: a file per micro-batch, the newest read
    assert speed["last_micro_batch"] == 3 and speed["newest_event_at"] is not None, speed
    # Rows Parquet alone does not give (deletion vectors): refused with a clear error.
    spark.sql(
        f"ALTER TABLE delta.`{lakehouse.speed_increments}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')"
    )
    with pytest.raises(DeltaProtocolError, match="deletionVectors"):
        FastServing(lakehouse.root).rows("sales_daily")


def test_readers_never_see_a_mixed_or_empty_generation(spark, make_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fast-path queries loop in a thread while batches publish: every answer's totals are
    those of one consistent state (double-counted or missing speed events would show)."""
    config = make_config()
    lakehouse = Lakehouse(config.lakehouse.root)
    write_jsonl(tmp_path / "landing" / "day1.jsonl", raw(BATCH_1))
    run_batch(spark, config)
    speed_micro_batch(spark, config, 0, raw(SPEED_0 + SPEED_1), first_offset=0)
    later = [event("d2", amount="42.00", event_time="2024-07-01T08:00:00Z")]
    expected = {
        totals(rows_to_rows(BATCH_1 + SPEED_0 + SPEED_1)),
        totals(rows_to_rows(BATCH_1 + SPEED_0 + SPEED_1 + later)),
    }
    seen: dict[str, set[Any]] = {name: set() for name in VIEWS}
    problems: list[str] = []
    stop = threading.Event()
    reader = FastServing(lakehouse.root)

    def read_in_a_loop() -> None:
        while not stop.is_set():
            for name in VIEWS:
                try:
                    answer = reader.answer(ViewQuery(VIEWS[name]))
                except Exception as exc:  # noqa: BLE001 - reported by the test
                    problems.append(f"{name}: {exc!r}")
                    continue
                got = totals(answer.rows)
                seen[name].add((answer.generation, got))
                if got not in expected:
                    problems.append(
                        f"{name} generation {answer.generation}: totals {got} not in {expected}"
                    )

    thread = threading.Thread(target=read_in_a_loop, daemon=True)
    thread.start()
    try:
        run_batch(spark, config)  # generation 2 absorbs micro-batch 0
        write_jsonl(tmp_path / "landing" / "day2.jsonl", raw(later))
        run_batch(spark, config)  # generation 3 adds d2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            any(g == 3 for g, _ in seen[n]) for n in VIEWS
        ):
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not problems, problems[:5]
    for name in VIEWS:
        generations = {g for g, _ in seen[name]}
        assert generations >= {3}, (name, seen[name])
        assert len(generations) >= 2, f"{name}: the reader saw only {generations}"


def rows_to_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The customer_totals rows of the oracle (every view has the same event/revenue totals)."""
    return list(compute_views(events)["customer_totals"].values())


def test_a_long_lived_reader_sees_each_micro_batch_commit_at_once(spark, make_config) -> None:  # type: ignore[no-untyped-def]
    """The reader behind ``serve`` notices an increments commit on its next answer (one probe
    of the log's next version), and ``/health`` names the newest micro-batch and its newest
    event from that commit, before the metrics (written seconds later, in batches) say so."""
    config = make_config()
    lakehouse = Lakehouse(config.lakehouse.root)
    sent = datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone.utc)
    speed_micro_batch(spark, config, 0, raw(SPEED_0), first_offset=0, batch_time=sent)
    DeltaTable.forPath(spark, lakehouse.stream_metrics).delete()  # as if not written yet
    reader = FastServing(lakehouse.root)
    assert (
        rows_to_view(reader.rows("sales_daily"), "sales_daily")
        == (compute_views(SPEED_0)["sales_daily"])
    )
    speed = reader.health(now=sent)["speed"]
    assert (speed["last_micro_batch"], speed["newest_event_at"]) == (0, sent), speed
    speed_micro_batch(spark, config, 1, raw(SPEED_1), first_offset=10, batch_time=sent)
    DeltaTable.forPath(spark, lakehouse.stream_metrics).delete()
    # The same reader, right after the commit: micro-batch 1 is in the answer and in /health.
    expected = compute_views(SPEED_0 + SPEED_1)
    for name in VIEWS:
        assert rows_to_view(reader.rows(name), name) == expected[name], name
    assert reader.health()["speed"]["last_micro_batch"] == 1
    # A compaction is a newer commit of another kind: the newest micro-batch is still 1.
    spark.sql(f"OPTIMIZE delta.`{lakehouse.speed_increments}`")
    assert reader.health()["speed"]["last_micro_batch"] == 1
    assert (
        rows_to_view(reader.rows("customer_totals"), "customer_totals")
        == (expected["customer_totals"])
    )
