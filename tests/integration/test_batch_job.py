"""The batch job end to end on real Spark and Delta tables (CONTRACT §2, §3, §4)."""

from __future__ import annotations

from datetime import timezone
from decimal import Decimal

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from batch_layer import publish
from batch_layer.job import BatchOptions, run_batch
from sales_core.errors import QualityGateError
from sales_core.handoff import current_generation, read_batch_view
from sales_core.lakehouse import Lakehouse
from sales_core.views import VIEWS
from tests.conftest import write_jsonl
from tests.oracle import compute_views, event, raw_json, rows_to_view
from tests.serving_helpers import published_views

pytestmark = pytest.mark.integration


def master_rows(spark, lakehouse: Lakehouse) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
    df = spark.read.format("delta").load(lakehouse.master_dataset)
    return sorted(
        tuple(r)
        for r in df.select(
            "event_id", "amount", "event_time", "source_name", "source_offset"
        ).collect()
    )


GOOD = [
    event(
        "e1", amount="10.005", quantity=2, event_time="2024-05-01T23:30:00-02:00", category="books"
    ),
    event(
        "e2", amount="150.00", event_time="2024-05-02T00:10:00Z", category="books", customer_id="c2"
    ),
    event(
        "e3",
        amount="1000.01",
        quantity=3,
        event_time="2024-05-02T01:59:59Z",
        category="toys",
        channel="mobile",
    ),
    event(
        "e4",
        amount="99.99",
        event_time="2024-06-30T12:00:00+00:00",
        region="south",
        customer_id="c2",
    ),
]


def test_batch_views_equal_an_independent_computation(spark, make_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    records = [raw_json(e) for e in GOOD]
    records[0]["amount"] = 10.005  # a JSON number: rounds half-up to 10.01 without a double
    records[0]["event_time"] = "2024-05-01T23:30:00-02:00"
    noise = [
        {**raw_json(GOOD[1]), "amount": "999.00"},  # duplicate event_id: the first one wins
        {
            "event_id": "bad1",
            "order_id": "o",
            "product_id": "p",
            "quantity": 1,
            "amount": -1,
            "event_time": "2024-05-01T00:00:00Z",
        },
        "this is not json",
    ]
    write_jsonl(tmp_path / "landing" / "a.jsonl", records + noise)

    record = run_batch(spark, config)

    assert (record.records_read, record.valid, record.duplicates, record.quarantined) == (
        7,
        4,
        1,
        2,
    )
    assert record.status == "succeeded" and record.generation == 1
    lakehouse = Lakehouse(config.lakehouse.root)
    expected_events = [dict(e) for e in GOOD]
    expected_events[0]["amount"] = Decimal("10.01")
    assert published_views(spark, lakehouse) == compute_views(expected_events)
    # e1 happened at 2024-05-02T01:30Z: its UTC date, not the local one.
    daily = published_views(spark, lakehouse)["sales_daily"]
    assert (GOOD[0]["event_date"], "books", "north") in daily
    assert str(GOOD[0]["event_date"]) == "2024-05-02"
    quarantine = (
        spark.read.format("delta").load(lakehouse.quarantine).orderBy("source_offset").collect()
    )
    assert [(q["reason"], q["source_offset"], q["raw_record"]) for q in quarantine] == [
        (
            "negative_amount",
            6,
            '{"event_id": "bad1", "order_id": "o", "product_id": "p", "quantity": 1, "amount": -1, "event_time": "2024-05-01T00:00:00Z"}',
        ),
        ("malformed", 7, "this is not json"),
    ]
    assert all(q["source_name"].endswith("/landing/a.jsonl") for q in quarantine)


def test_rerun_leaves_master_dataset_and_views_identical(spark, make_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    write_jsonl(tmp_path / "landing" / "a.jsonl", [raw_json(e) for e in GOOD[:2]])
    write_jsonl(tmp_path / "landing" / "b.jsonl", [raw_json(e) for e in GOOD[2:]])
    lakehouse = Lakehouse(config.lakehouse.root)

    first = run_batch(spark, config)
    views_1, master_1 = published_views(spark, lakehouse), master_rows(spark, lakehouse)
    second = run_batch(spark, config)

    assert (first.records_read, first.valid) == (4, 4)
    assert (second.records_read, second.valid, second.duplicates, second.quarantined) == (
        0,
        0,
        0,
        0,
    )
    assert master_rows(spark, lakehouse) == master_1
    assert published_views(spark, lakehouse) == views_1 == compute_views(GOOD)
    assert second.generation == 2


def test_views_written_from_the_driver_and_by_spark_are_the_same(  # type: ignore[no-untyped-def]
    spark, make_config, tmp_path, monkeypatch
) -> None:
    """Small views (aggregates) are written by delta-rs from the driver, larger ones by Spark
    (``publish.DRIVER_WRITE_MAX_ROWS``): the same published views either way, and either way
    the generations older than the kept ones leave in the commit that writes the new one."""
    published = {}
    for writer in ("delta-rs", "spark"):
        if writer == "spark":
            monkeypatch.setattr(publish, "DRIVER_WRITE_MAX_ROWS", 0)
        base = tmp_path / writer
        config = make_config(base, LAMBDA_SALES__BATCH__KEEP_GENERATIONS="1")
        lakehouse = Lakehouse(config.lakehouse.root)
        write_jsonl(base / "landing" / "a.jsonl", [raw_json(e) for e in GOOD[:2]])
        run_batch(spark, config)
        write_jsonl(base / "landing" / "b.jsonl", [raw_json(e) for e in GOOD[2:]])
        run_batch(spark, config)
        assert run_batch(spark, config).generation == 3
        for name in VIEWS:
            path = lakehouse.batch_view(name)
            engines = [c.get("engineInfo", "") for c in DeltaTable(path).history(3)]
            assert [e.startswith("delta-rs") for e in engines] == [writer == "delta-rs"] * 3, (
                name,
                engines,
            )
            kept = spark.read.format("delta").load(path).select("generation").distinct()
            assert sorted(r["generation"] for r in kept.collect()) == [2, 3], name
        published[writer] = published_views(spark, lakehouse)
    assert published["delta-rs"] == published["spark"] == compute_views(GOOD)


def test_a_landing_location_spark_cannot_list_fails_the_run_and_records_it(
    spark, make_config, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """What a landing URI the CLI cannot check before Spark (``s3a://``, a cluster's default
    file system) gets when it is missing: the run is recorded failed with the reason."""
    from sales_core.errors import SourceError

    config = make_config(LAMBDA_SALES__SOURCES__FILES__LANDING=f"file://{tmp_path}/gone")
    with pytest.raises(SourceError, match="landing location does not exist: file://"):
        run_batch(spark, config)
    runs = spark.read.format("delta").load(Lakehouse(config.lakehouse.root).pipeline_runs)
    [run] = runs.collect()
    assert (run["job"], run["status"]) == ("batch", "failed")
    assert run["error"].startswith("landing location does not exist: file://")


def test_duplicates_and_late_events_across_runs(spark, make_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    lakehouse = Lakehouse(config.lakehouse.root)
    write_jsonl(tmp_path / "landing" / "day1.jsonl", [raw_json(e) for e in GOOD[:3]])
    run_batch(spark, config)

    late = event("late-1", amount="5.00", event_time="2024-01-15T08:00:00Z", customer_id="c1")
    write_jsonl(
        tmp_path / "landing" / "day2.jsonl", [raw_json(GOOD[0]), raw_json(late), raw_json(GOOD[3])]
    )
    record = run_batch(spark, config)

    assert (record.records_read, record.valid, record.duplicates, record.quarantined) == (
        3,
        2,
        1,
        0,
    )
    assert published_views(spark, lakehouse) == compute_views(GOOD + [late])
    first_seen = (
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .where(F.col("event_id") == GOOD[0]["event_id"])
    )
    assert [r["source_name"].rsplit("/", 1)[-1] for r in first_seen.collect()] == ["day1.jsonl"]


def test_quality_gate_keeps_the_previous_generation(spark, make_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = make_config(LAMBDA_SALES__QUALITY__MIN_SCORE="90")
    lakehouse = Lakehouse(config.lakehouse.root)
    write_jsonl(tmp_path / "landing" / "good.jsonl", [raw_json(e) for e in GOOD])
    run_batch(spark, config)
    views_before = published_views(spark, lakehouse)

    bad = [
        {
            "event_id": f"b{i}",
            "order_id": "o",
            "product_id": "p",
            "quantity": 0,
            "amount": 1,
            "event_time": "2024-05-01T00:00:00Z",
        }
        for i in range(3)
    ]
    write_jsonl(tmp_path / "landing" / "bad.jsonl", [raw_json(event("ok-1", amount="1.00"))] + bad)
    with pytest.raises(QualityGateError, match=r"score 25\.00 is below the threshold 90\.00"):
        run_batch(spark, config)

    assert current_generation(spark, lakehouse).generation == 1  # type: ignore[union-attr]
    assert published_views(spark, lakehouse) == views_before
    runs = (
        spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .where(F.col("status") == "quality_failed")
        .collect()
    )
    assert len(runs) == 1 and "below the threshold" in runs[0]["error"]

    # The refused data is still unpublished: a rerun with nothing new is refused too...
    with pytest.raises(QualityGateError):
        run_batch(spark, config)
    # ...until an operator accepts it.
    accepted = run_batch(spark, config, options=BatchOptions(accept_low_quality=True))
    assert accepted.generation == 2
    assert published_views(spark, lakehouse) == compute_views(GOOD + [event("ok-1", amount="1.00")])


def test_reader_sees_whole_generations_only(spark, make_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every published generation's rows are complete: generation N's views never change."""
    config = make_config()
    lakehouse = Lakehouse(config.lakehouse.root)
    write_jsonl(tmp_path / "landing" / "a.jsonl", [raw_json(e) for e in GOOD[:2]])
    run_batch(spark, config)
    gen1 = published_views(spark, lakehouse)
    write_jsonl(tmp_path / "landing" / "b.jsonl", [raw_json(e) for e in GOOD[2:]])
    run_batch(spark, config)
    assert published_views(spark, lakehouse) == compute_views(GOOD)
    old = {
        name: rows_to_view(
            [r.asDict() for r in read_batch_view(spark, lakehouse, name, 1).collect()], name
        )
        for name in VIEWS
    }
    assert old == gen1 == compute_views(GOOD[:2])
    gens = spark.read.format("delta").load(lakehouse.generations).orderBy("generation").collect()
    assert [(g["generation"], g["events"]) for g in gens] == [(1, 2), (2, 4)]
    assert all(
        g["published_at"].replace(tzinfo=timezone.utc)
        <= gens[-1]["published_at"].replace(tzinfo=timezone.utc)
        for g in gens
    )
