"""``maintain``'s log expiry on a real Delta table (sales_core.delta_log.expire_log): the
versions older than the retention go from the log, every version inside it still reads the
same in Spark and in delta-rs, and the table goes on taking commits and VACUUMs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable as RsTable

from sales_core.delta_log import expire_log

pytestmark = pytest.mark.integration

DAY = 86400.0


def rows_at(spark, path: Path, version: int) -> list[int]:  # type: ignore[no-untyped-def]
    frame = spark.read.format("delta").option("versionAsOf", version).load(str(path))
    return sorted(r["id"] for r in frame.collect())


def vacuum_lite(spark, path: Path) -> None:  # type: ignore[no-untyped-def]
    """VACUUM as ``maintain`` runs it (LITE: the removed files the log names)."""
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"VACUUM delta.`{path}` RETAIN 1 HOURS LITE")
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")


def test_expired_log_keeps_every_version_inside_the_retention(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "table"
    spark.sql(
        f"CREATE TABLE delta.`{path}` (id BIGINT) USING delta "
        "TBLPROPERTIES ('delta.checkpointInterval' = '2')"
    )
    for i in range(5):  # versions 1..5, checkpoints at 2 and 4
        spark.range(i * 2, i * 2 + 2).write.format("delta").mode("append").save(str(path))
    log = path / "_delta_log"
    old = time.time() - 10 * DAY
    for version in range(3):  # versions 0..2 are ten days old
        os.utime(log / f"{version:020d}.json", (old, old))
    # Spark reads only versions inside delta.deletedFileRetentionDuration (7 days): 3..5
    kept = {v: rows_at(spark, path, v) for v in range(3, 6)}
    vacuum_lite(spark, path)  # maintain VACUUMs, then expires the log

    assert expire_log(path, 7 * DAY) > 0

    versions = sorted({int(p.name[:20]) for p in log.iterdir() if p.name[:20].isdigit()})
    # cut at checkpoint 2, the newest with old commits only (VACUUM's own commits follow 5)
    assert versions == list(range(2, versions[-1] + 1)) and versions[-1] >= 5
    for version, ids in kept.items():
        assert rows_at(spark, path, version) == ids
        assert (
            sorted(RsTable(str(path), version=version).to_pyarrow_table()["id"].to_pylist()) == ids
        )
    with pytest.raises(Exception):  # noqa: B017 - delta-rs: the commit files are gone
        RsTable(str(path), version=1)

    spark.range(100, 102).write.format("delta").mode("append").save(str(path))
    vacuum_lite(spark, path)  # the next night's: the log since the last VACUUM is all there
    latest = sorted(r["id"] for r in spark.read.format("delta").load(str(path)).collect())
    assert latest == [*range(10), 100, 101]
    assert sorted(RsTable(str(path)).to_pyarrow_table()["id"].to_pylist()) == latest
