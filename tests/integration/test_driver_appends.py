"""Appends written and committed from the driver by delta-rs (the speed layer's steady state)
into tables Spark created and writes: one protocol, one log.

The append takes exactly the version after the one it expects or commits nothing; its
checksum is the one Delta itself would write (checked against the table's files as delta-rs
lists them, before and after a Spark append that derives its own checksum from it); Spark
reads every row and the commit's ``userMetadata``.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql.pandas.types import to_arrow_schema

from sales_core.delta_log import checksum_file
from sales_core.lakehouse import MASTER_SCHEMA, Lakehouse, ensure_speed_tables
from speed_layer.deltalog import RELOAD_AFTER, DriverAppends, commits_from

pytestmark = pytest.mark.integration

MASTER_ARROW = to_arrow_schema(MASTER_SCHEMA, timezone="UTC")
WHEN = datetime(2026, 1, 15, 10, 0, tzinfo=timezone.utc)


def rows(*ids: str) -> pa.Table:
    def row(event_id: str) -> dict[str, Any]:
        values = {f.name: f"{f.name}-{event_id}" for f in MASTER_SCHEMA.fields}
        values.update(
            event_id=event_id,
            quantity=2,
            amount=Decimal("1000.01"),
            event_time=WHEN,
            event_date=date(2026, 1, 15),
            event_hour=WHEN,
            source_partition=0,
            source_offset=7,
            ingest_batch=3,
            ingested_at=WHEN,
        )
        return values

    return pa.Table.from_pylist([row(i) for i in ids], schema=MASTER_ARROW)


def assert_checksum_is_the_tables(path: str) -> None:
    table = DeltaTable(path)
    adds = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    crc = json.loads((Path(path) / checksum_file(table.version())).read_text())
    assert crc["numFiles"] == len(adds)
    assert crc["tableSizeBytes"] == sum(a["size_bytes"] for a in adds)
    assert sum(crc["fileSizeHistogram"]["fileCounts"]) == len(adds)
    assert sum(crc["fileSizeHistogram"]["totalBytes"]) == crc["tableSizeBytes"]
    if "allFiles" in crc:
        assert sorted(f["path"] for f in crc["allFiles"]) == sorted(a["path"] for a in adds)


def test_driver_appends_share_the_log_with_spark(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lakehouse = Lakehouse(str(tmp_path / "lakehouse"))
    ensure_speed_tables(spark, lakehouse)
    path = lakehouse.master_dataset
    spark.createDataFrame(rows("s-1").to_pylist(), MASTER_SCHEMA).write.format("delta").mode(
        "append"
    ).save(path)
    version = DeltaTable(path).version()
    appends = DriverAppends()

    assert appends.append(path, rows("d-1", "d-2"), user_metadata="app:1", expected_version=version)
    assert DeltaTable(path).version() == version + 1
    assert_checksum_is_the_tables(path)
    (commit,) = commits_from(path, version + 1) or []
    assert commit.user_metadata == "app:1" and commit.output_rows in (None, 2)

    # A writer that expected an older version commits nothing.
    assert not appends.append(path, rows("d-3"), user_metadata="app:2", expected_version=version)
    assert DeltaTable(path).version() == version + 1

    # Spark reads every row, exact, and derives its own checksum from the driver's.
    read = spark.read.format("delta").load(path)
    assert sorted(r["event_id"] for r in read.collect()) == ["d-1", "d-2", "s-1"]
    assert {r["amount"] for r in read.collect()} == {Decimal("1000.01")}
    spark.createDataFrame(rows("s-2").to_pylist(), MASTER_SCHEMA).write.format("delta").mode(
        "append"
    ).save(path)
    assert_checksum_is_the_tables(path)
    assert appends.append(path, rows("d-4"), user_metadata="app:3", expected_version=version + 2)
    assert_checksum_is_the_tables(path)
    assert read.count() == 5


def test_a_long_run_of_appends_reloads_its_state_and_loses_nothing(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A stream appends forever: the state kept between appends is loaded again from the
    newest checkpoint every RELOAD_AFTER commits, with the versions and checksums right
    across it and every row readable by Spark."""
    lakehouse = Lakehouse(str(tmp_path / "lakehouse"))
    ensure_speed_tables(spark, lakehouse)
    path = lakehouse.master_dataset
    version = DeltaTable(path).version()
    appends = DriverAppends()
    count = RELOAD_AFTER + 30
    for n in range(count):
        assert appends.append(
            path, rows(f"r-{n}"), user_metadata=f"app:{n}", expected_version=version + n
        )
    assert DeltaTable(path).version() == version + count
    assert_checksum_is_the_tables(path)
    assert list((Path(path) / "_delta_log").glob("*.checkpoint.parquet"))  # reloaded from it
    commits = commits_from(path, version + 1) or []
    assert [c.user_metadata for c in commits] == [f"app:{n}" for n in range(count)]
    ids = [r.event_id for r in spark.read.format("delta").load(path).collect()]
    assert sorted(ids) == sorted(f"r-{n}" for n in range(count))
