"""``lambda-sales quarantine list|show|replay`` on a real lakehouse.

Two classes of quarantined records pass today's rules on replay:

* records whose ``event_time`` was more than 5 minutes ahead of the batch's processing time
  (a producer's clock running fast): ``future_event_time`` when read, valid once that time
  has come — a JSONL line and a CSV line (read again with its file's header);
* records an older release rejected with a stricter rule (its ``amount_out_of_range`` limit
  was 10,000.00, today's is 1,000,000.00): quarantine rows as that release wrote them, from
  Kafka.

One of them carries an ``event_id`` another landing file has brought since: it counts once
(a duplicate), the first one ingested wins. The replay runs through the real CLI; the views
are compared with the oracle over every event valid now, the quarantine is unchanged, each
replayed row is marked with its run, and a second replay changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from batch_layer.job import run_batch
from batch_layer.quarantine import (
    QuarantineFilter,
    list_quarantine,
    read_quarantine,
    replay_quarantine,
    show_quarantined,
)
from sales_core.errors import PipelineError
from sales_core.handoff import current_generation
from sales_core.lakehouse import QUARANTINE_TABLE_SCHEMA, Lakehouse
from sales_core.runs import RunRecord, new_run_id, start_run, utcnow
from tests.conftest import config_environ, write_jsonl
from tests.integration.test_speed_layer import merged_views
from tests.oracle import compute_views, event, raw_json

pytestmark = [pytest.mark.integration]

CLI = str(Path(sys.executable).with_name("lambda-sales"))
AHEAD = timedelta(minutes=5, seconds=50)  # past the rule's 5 minutes when the batch reads it


def _time(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _cli(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "quarantine", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _older_release_rows(spark, lakehouse: Lakehouse, records: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    """Quarantine rows as a release whose amount limit was 10,000.00 wrote them (Kafka)."""
    rejected_at = datetime.now(timezone.utc) - timedelta(days=3)
    rows = [
        {
            "source": "kafka",
            "source_name": "sales-events",
            "source_partition": 0,
            "source_offset": 700 + i,
            "source_key": r["event_id"],
            "raw_record": json.dumps(r),
            "reason": "amount_out_of_range",
            "rejected_at": rejected_at,
            "ingest_layer": "speed",
            "ingest_run": "speed",
        }
        for i, r in enumerate(records)
    ]
    spark.createDataFrame(rows, QUARANTINE_TABLE_SCHEMA).write.format("delta").mode("append").save(
        lakehouse.quarantine
    )


@pytest.mark.timeout(900)
def test_replay_ingests_what_passes_now_once_with_lineage_and_twice_changes_nothing(
    spark, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from sales_core.config import load_config

    environ = config_environ(tmp_path)
    config = load_config(environ=environ)
    lakehouse = Lakehouse(config.lakehouse.root)
    landing = tmp_path / "landing"

    written_at = datetime.now(timezone.utc).replace(microsecond=0)
    ahead = _time(written_at + AHEAD)
    valid = [event(f"v{i}", amount=f"{10 + i}.50", customer_id=f"c{i}") for i in range(3)]
    future = [
        event("f1", amount="20.00", event_time=ahead),
        event("f2", amount="30.25", event_time=ahead, channel="store"),
        event("f3", amount="40.00", event_time=ahead, customer_id="c9"),
    ]
    csv_future = event("fc", amount="55.55", event_time=ahead, region="east")
    stays = [{**raw_json(event("m1", amount="1.00")), "event_id": " "}, "not json"]
    write_jsonl(landing / "a.jsonl", [raw_json(e) for e in valid + future] + stays)
    header = list(raw_json(csv_future))
    (landing / "b.csv").write_text(
        ",".join(header) + "\n" + ",".join(str(raw_json(csv_future)[k]) for k in header) + "\n",
        encoding="utf-8",
    )
    first = run_batch(spark, config)
    assert (first.records_read, first.valid, first.quarantined) == (9, 3, 6)
    reasons = {
        r["source_offset"]: r["reason"]
        for r in spark.read.format("delta").load(lakehouse.quarantine).collect()
        if r["source_name"].endswith("a.jsonl")
    }
    assert reasons == {
        4: "future_event_time",
        5: "future_event_time",
        6: "future_event_time",
        7: "missing_required:event_id",
        8: "malformed",
    }, f"the machine was too slow to read the events while they were ahead: {reasons}"

    # Since: the same event as f1 arrives valid (its clock fixed), and an older release's rows.
    f1_again = event("f1", amount="21.00", event_time=_time(written_at), category="games")
    write_jsonl(landing / "c.jsonl", [raw_json(f1_again)])
    assert run_batch(spark, config).valid == 1
    big = [event("k1", amount="12000.00"), event("k2", amount="999999.99", quantity=2)]
    _older_release_rows(spark, lakehouse, [raw_json(e) for e in big])

    # list / show before any replay (list through the real CLI)
    listed = _cli(environ, "list", "--reason", "future_event_time", "--format", "jsonl")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 4 and {r["reason"] for r in rows} == {"future_event_time"}
    assert all(r["replayed_by"] is None for r in rows)
    assert {r["source_offset"] for r in rows} == {2, 4, 5, 6}  # b.csv line 2, a.jsonl 4-6
    csv_row = next(r for r in rows if r["source_name"].endswith("b.csv"))
    shown = _cli(environ, "show", csv_row["quarantine_id"][:8])
    assert shown.returncode == 0, shown.stderr
    items = dict((line.split(None, 1) + [""])[:2] for line in shown.stdout.splitlines()[2:])
    assert items["quarantine_id"] == csv_row["quarantine_id"]
    assert (items["reason"], items["source_offset"]) == ("future_event_time", "2")
    assert items["raw_record"] == ",".join(str(raw_json(csv_future)[k]) for k in header)
    [found] = show_quarantined(spark, lakehouse, csv_row["quarantine_id"])
    assert found["replayed_by"] is None and found["ingest_layer"] == "batch"
    quarantine_before = spark.read.format("delta").load(lakehouse.quarantine).count()

    # the clock reaches the events' time (the rule allows 5 minutes ahead)
    time.sleep(
        max(
            0.0,
            (written_at + AHEAD - timedelta(minutes=5) - datetime.now(timezone.utc)).total_seconds()
            + 1,
        )
    )

    dry = replay_quarantine(spark, config, dry_run=True)
    assert (dry.records_read, dry.valid, dry.quarantined) == (8, 5, 2), dry.details
    assert not Path(lakehouse.quarantine_replays).exists()

    replayed = _cli(
        environ, "replay", "--reason", "future_event_time", "--reason", "amount_out_of_range"
    )
    assert replayed.returncode == 0, replayed.stderr
    summary = dict(
        line.rsplit(None, 1) for line in replayed.stdout.splitlines()[2:] if line[:1] != "-"
    )
    assert summary["  valid now (new events)"] == "5", replayed.stdout
    assert summary["  duplicates"] == "1" and summary["  still quarantined"] == "0"

    runs = spark.read.format("delta").load(lakehouse.pipeline_runs).where(F.col("job") == "replay")
    [run] = runs.collect()
    assert run["status"] == "succeeded", run["error"]
    # 4 future + 2 older-release rows considered: f1 is a duplicate (c.jsonl brought it
    # first), k2 passes today's limit, k1 (12,000.00) passes too: 5 new events, 1 duplicate.
    assert (run["records_read"], run["valid"], run["duplicates"], run["quarantined"]) == (
        6,
        5,
        1,
        0,
    )
    details = json.loads(run["details"])
    assert details["passed_by_original_reason"] == {
        "amount_out_of_range": 2,
        "future_event_time": 4,
    }

    # the views: every event valid now, once (f1 as c.jsonl brought it)
    now_valid = valid + [f1_again] + future[1:] + [csv_future] + big
    assert merged_views(spark, lakehouse) == compute_views(now_valid)
    generation = current_generation(spark, lakehouse)
    assert generation is not None and generation.events == len(now_valid)

    # lineage: master rows point at the record as received and at the replaying run
    master = {
        r["event_id"]: r
        for r in spark.read.format("delta").load(lakehouse.master_dataset).collect()
    }
    # the replay took the ledger's next ingest epoch (after the two batch runs' 1 and 2)
    assert details["epoch"] == 3
    [entry] = (
        spark.read.format("delta")
        .load(lakehouse.ingest_ledger)
        .where(F.col("epoch") == 3)
        .collect()
    )
    assert (entry["source"], entry["name"], entry["state"]) == ("replay", run["run_id"], "ingested")
    tag = "batch-00000003"
    assert {k for k, r in master.items() if r["ingest_run"] == tag} == {
        "f2",
        "f3",
        "fc",
        "k1",
        "k2",
    }
    assert master["f2"]["source_name"].endswith("a.jsonl") and master["f2"]["source_offset"] == 5
    assert master["fc"]["source_name"].endswith("b.csv") and master["fc"]["source_offset"] == 2
    assert master["k1"]["source"] == "kafka" and master["k1"]["source_offset"] == 700
    assert master["f1"]["source_name"].endswith("c.jsonl")
    marks = {
        r["replayed_event_id"]: (r["replay_outcome"], r["replayed_by"])
        for r in read_quarantine(spark, lakehouse).where(F.col("replayed_by").isNotNull()).collect()
    }
    assert marks == {
        "f1": ("duplicate", run["run_id"]),
        **{e: ("ingested", run["run_id"]) for e in ("f2", "f3", "fc", "k1", "k2")},
    }
    # the quarantine is append-only: nothing removed or changed
    assert spark.read.format("delta").load(lakehouse.quarantine).count() == quarantine_before
    listed_after = list_quarantine(spark, lakehouse, QuarantineFilter(("future_event_time",)), 10)
    assert listed_after is not None and all(r["replayed_by"] == run["run_id"] for r in listed_after)

    # twice: nothing left to take (the two records that still fail are looked at again)
    master_version = spark.sql(f"DESCRIBE HISTORY delta.`{lakehouse.master_dataset}`").first()
    again = replay_quarantine(spark, config)
    assert (again.records_read, again.valid, again.duplicates, again.quarantined) == (2, 0, 0, 2)
    assert again.details["rejected_by_reason"] == {
        "malformed": 1,
        "missing_required:event_id": 1,
    }
    assert again.generation is None  # nothing new: no publish
    assert (
        spark.sql(f"DESCRIBE HISTORY delta.`{lakehouse.master_dataset}`").first() == master_version
    )
    assert merged_views(spark, lakehouse) == compute_views(now_valid)

    # never beside a batch run: both take ledger epochs and publish
    start_run(spark, lakehouse.pipeline_runs, RunRecord(new_run_id("batch"), "batch", utcnow()))
    with pytest.raises(PipelineError, match="is running"):
        replay_quarantine(spark, config)


def test_quarantine_command_errors_are_one_line_before_spark(tmp_path: Path) -> None:
    environ = config_environ(tmp_path)
    for args, expected in (
        (["show"], "needs the record's id"),
        (["list", "abc123"], "takes no id"),
        (["list", "--since", "yesterday"], "is not an ISO 8601 time"),
        (["list", "--limit", "0"], "--limit must be at least 1"),
    ):
        started = time.monotonic()
        result = _cli(environ, *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)
        assert time.monotonic() - started < 15, args
