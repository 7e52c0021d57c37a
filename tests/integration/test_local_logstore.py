"""Spark reads a local table's log through the project's LogStore (jvm/LocalListingLogStore):
every version as another reader (delta-rs) reads it; a ``_last_checkpoint`` that delta-rs
replaced is read at once, not after Delta's three retries and a listing of the whole log; and
the driver's appends leave no stale Hadoop side checksum for readers without that LogStore."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable as RsTable
from deltalake import write_deltalake

from speed_layer.deltalog import DriverAppends

pytestmark = pytest.mark.integration

SCHEMA = pa.schema([("id", pa.int64()), ("n", pa.int64())])


def rows(start: int, count: int) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.table({"id": ids, "n": [i * 10 for i in ids]}, schema=SCHEMA)


def hadoop_checksum(data: bytes, per: int = 512) -> bytes:
    """A Hadoop ChecksumFileSystem side file (".name.crc") for ``data``: CRC32 per chunk."""
    sums = b"".join(
        zlib.crc32(data[i : i + per]).to_bytes(4, "big") for i in range(0, len(data), per)
    )
    return b"crc\0" + per.to_bytes(4, "big") + sums


def side_checksum_matches(file: Path) -> bool:
    """Whether Hadoop's checked read of ``file`` succeeds: no side file, or one that matches."""
    side = file.with_name(f".{file.name}.crc")
    if not side.exists():
        return True
    raw = side.read_bytes()
    assert raw[:4] == b"crc\0", raw[:8]
    per = int.from_bytes(raw[4:8], "big")
    return raw == hadoop_checksum(file.read_bytes(), per)


def spark_rows(spark, path: Path, version: int | None = None) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return sorted((r["id"], r["n"]) for r in reader.load(str(path)).collect())


def spark_table(spark, path: Path, appends: list[pa.Table]) -> None:  # type: ignore[no-untyped-def]
    """A table Spark creates (a checkpoint every 2 commits) and appends ``appends`` to, one
    commit each."""
    spark.sql(
        f"CREATE TABLE delta.`{path}` (id BIGINT, n BIGINT) USING delta "
        "TBLPROPERTIES ('delta.checkpointInterval' = '2')"
    )
    for table in appends:
        frame = spark.createDataFrame(table.to_pylist()).select("id", "n")
        frame.write.format("delta").mode("append").save(str(path))


def test_every_version_of_a_checkpointed_log_reads_as_delta_rs_reads_it(
    spark, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "table"
    spark_table(spark, path, [rows(i * 3, 3) for i in range(5)])
    log = path / "_delta_log"
    # Spark's own writes: checkpoints, Hadoop's hidden side checksums and _last_checkpoint
    assert any(p.name.endswith(".checkpoint.parquet") for p in log.iterdir())
    assert any(p.name.startswith(".") and p.name.endswith(".crc") for p in log.iterdir())
    for version in range(6):
        columns = RsTable(str(path), version=version).to_pyarrow_table().to_pydict()
        expected = sorted(zip(columns["id"], columns["n"], strict=True))
        assert spark_rows(spark, path, version) == expected, version
    assert spark_rows(spark, path) == [(i, i * 10) for i in range(15)]


def delta_rs_table(path: Path) -> None:
    """A table written and checkpointed by delta-rs alone (Spark has not opened it)."""
    write_deltalake(str(path), rows(0, 5))
    write_deltalake(str(path), rows(5, 5), mode="append")
    RsTable(str(path)).create_checkpoint()


def test_a_last_checkpoint_replaced_without_its_side_checksum_is_read_at_once(
    spark, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    for name in ("warm-up", "clean", "stale"):
        delta_rs_table(tmp_path / name)
    stale = tmp_path / "stale" / "_delta_log" / "_last_checkpoint"
    # What Spark's checkpoint leaves when delta-rs replaces _last_checkpoint afterwards: the
    # side checksum of the file Spark wrote.
    stale.with_name("._last_checkpoint.crc").write_bytes(hadoop_checksum(b'{"version":0}\n'))
    assert not side_checksum_matches(stale)

    assert len(spark_rows(spark, tmp_path / "warm-up")) == 10
    started = time.monotonic()
    assert len(spark_rows(spark, tmp_path / "clean")) == 10
    clean_s = time.monotonic() - started
    started = time.monotonic()
    assert spark_rows(spark, tmp_path / "stale") == [(i, i * 10) for i in range(10)]
    stale_s = time.monotonic() - started
    # Delta's stock local store fails the checked read, sleeps 1 s three times and lists the
    # whole log: at least 3 s more than the same table without the side file.
    assert stale_s < clean_s + 2.5, (stale_s, clean_s)


def test_driver_appends_leave_no_stale_side_checksum_of_the_last_checkpoint(
    spark, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "table"
    spark_table(spark, path, [rows(i, 1) for i in range(2)])
    last = path / "_delta_log" / "_last_checkpoint"
    written_by_spark = last.read_bytes()
    assert last.with_name("._last_checkpoint.crc").exists()  # Spark's checkpoint, checked

    appends = DriverAppends()
    for i in range(2, 6):
        assert appends.append(str(path), rows(i, 1), user_metadata=f"test:{i}")
    assert last.read_bytes() != written_by_spark  # delta-rs replaced it
    assert side_checksum_matches(last)
    assert spark_rows(spark, path) == [(i, i * 10) for i in range(6)]
