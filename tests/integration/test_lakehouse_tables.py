"""A table the driver creates on a local lakehouse is the table Spark's builder creates (its
schema, partitioning, properties and protocol), created once whoever races for it, and an
existing table is never created again."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from delta.tables import DeltaTable

from sales_core.lakehouse import (
    MASTER_PROPERTIES,
    MASTER_SCHEMA,
    ensure_table,
    view_table_schema,
)
from sales_core.views import VIEWS

pytestmark = pytest.mark.integration


def detail(spark, path: Path) -> dict:  # type: ignore[no-untyped-def]
    row = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").collect()[0].asDict()
    return {
        "partitionColumns": row["partitionColumns"],
        "properties": row["properties"],
        "minReaderVersion": row["minReaderVersion"],
        "minWriterVersion": row["minWriterVersion"],
        "schema": spark.read.format("delta").load(str(path)).schema,
    }


def spark_built(spark, path: Path, schema, partitioned_by=(), properties=None) -> None:  # type: ignore[no-untyped-def]
    builder = DeltaTable.createIfNotExists(spark).location(str(path)).addColumns(schema)
    if partitioned_by:
        builder = builder.partitionedBy(*partitioned_by)
    for key, value in (properties or {}).items():
        builder = builder.property(key, value)
    builder.execute()


def test_driver_created_tables_are_the_tables_spark_builds(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    view = next(iter(VIEWS))
    cases = [
        ("master", MASTER_SCHEMA, (), MASTER_PROPERTIES),
        ("view", view_table_schema(view), ("generation",), {}),
    ]
    for name, schema, partitioned_by, properties in cases:
        ours, theirs = tmp_path / f"{name}-driver", tmp_path / f"{name}-spark"
        ensure_table(spark, str(ours), schema, partitioned_by=partitioned_by, properties=properties)
        spark_built(spark, theirs, schema, partitioned_by, properties)
        assert detail(spark, ours) == detail(spark, theirs), name
    # Spark commits to it and reads it, as to any table
    target = tmp_path / "view-driver"
    spark.sql(f"ALTER TABLE delta.`{target}` SET TBLPROPERTIES ('lambda.test' = 'committed')")
    spark.createDataFrame([], view_table_schema(view)).write.format("delta").mode("append").save(
        str(target)
    )
    assert spark.read.format("delta").load(str(target)).count() == 0
    assert DeltaTable.forPath(spark, str(target)).history().count() == 2


def create(path: str) -> None:
    ensure_table(None, path, MASTER_SCHEMA, properties=MASTER_PROPERTIES)  # type: ignore[arg-type]


def test_racing_creates_write_one_first_commit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "raced")
    context = multiprocessing.get_context("fork")
    racers = [context.Process(target=create, args=(path,)) for _ in range(8)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert [racer.exitcode for racer in racers] == [0] * 8
    log = tmp_path / "raced" / "_delta_log"
    assert sorted(p.name for p in log.iterdir()) == [
        "00000000000000000000.crc",
        "00000000000000000000.json",
    ]
    # one table: the checksum describes the commit that won
    commit = [json.loads(line) for line in (log / "00000000000000000000.json").open()]
    checksum = json.loads((log / "00000000000000000000.crc").read_text())
    assert checksum["metadata"]["id"] == commit[2]["metaData"]["id"]


def test_an_existing_table_is_not_created_again(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Not even once its first commits are cleaned up (a checkpoint holds the table)."""
    path = tmp_path / "old"
    create(str(path))
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.checkpointInterval' = '2')")
    for n in range(3):
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('lambda.n' = '{n}')")
    log = path / "_delta_log"
    checkpoints = sorted(log.glob("*.checkpoint.parquet"))
    assert checkpoints, "no checkpoint written"
    kept_from = int(checkpoints[-1].name.split(".")[0])
    for commit in log.glob("*.json"):
        if int(commit.name.split(".")[0]) < kept_from:
            commit.unlink()  # what the log's clean-up leaves: a checkpoint and what follows
    create(str(path))
    assert not (log / "00000000000000000000.json").exists()
    assert DeltaTable.forPath(spark, str(path)).history().count() >= 1
