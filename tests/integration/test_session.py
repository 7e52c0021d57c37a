"""The session factory: Delta, UTC, and the pinned JVM packages from the local cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyspark.errors import AnalysisException

from sales_core import jvm_archive
from sales_core.lakehouse import table_version
from sales_core.packages import (
    JVM_PACKAGES,
    LOCAL_LOGSTORE_CLASS,
    appended_class_path,
    cached_jars,
    driver_class_path,
    jar_cache_dir,
    s3_jars,
)
from tests.processes import descendants

pytestmark = pytest.mark.integration


def test_session_uses_cached_pinned_jars_and_utc(spark) -> None:  # type: ignore[no-untyped-def]
    jars = cached_jars()
    assert jars is not None, "make setup caches the pinned packages"
    # A local driver holds them on its own class path (nothing copied into spark.jars' loader),
    # but for artifacts pyspark ships itself.
    configured = spark.sparkContext.getConf().get("spark.driver.extraClassPath", "").split(":")
    assert set(driver_class_path(jars)) <= set(configured)
    assert not spark.sparkContext.getConf().get("spark.jars", "")
    assert (
        spark.sparkContext.getConf().get("spark.delta.logStore.file.impl") == LOCAL_LOGSTORE_CLASS
    )
    # Cached jars are used as files: nothing is resolved (downloaded) again.
    assert spark.sparkContext.getConf().get("spark.jars.packages", None) is None
    assert all(j.startswith(str(jar_cache_dir())) for j in jars)
    names = " ".join(jars)
    for coordinate in JVM_PACKAGES:
        group, artifact, version = coordinate.split(":")
        assert f"{group}_{artifact}-{version}.jar" in names
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"


def test_the_object_stores_jars_come_last_and_the_archive_still_fits(spark) -> None:  # type: ignore[no-untyped-def]
    """The tests' session has S3A (as a job's on s3a:// has): its class path is the one the
    class-data archive was recorded with (the pinned jars, the project's, Spark's own), then
    the object store's jars; and it maps the pinned jars' archive (a JVM takes an archive whose
    class path is a prefix of its own)."""
    import pyspark

    jars, extra = cached_jars(), s3_jars()
    assert jars is not None and extra is not None, "make setup fetches both jar sets"
    spark.range(1).collect()  # the session's JVM is up
    # The driver JVM as it was launched: a child of this process (through spark-submit).
    commands = {
        pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        for pid in descendants(os.getpid())
        if Path(f"/proc/{pid}/cmdline").is_file()
    }
    drivers = {p: c for p, c in commands.items() if b"org.apache.spark.deploy.SparkSubmit" in c}
    assert len(drivers) == 1, "one Spark driver for the whole test process"
    [(pid, command)] = drivers.items()
    argv = [a.decode() for a in command]
    class_path = argv[argv.index("-cp") + 1].split(":")
    appended = appended_class_path(extra)
    assert appended and class_path[-len(appended) :] == appended
    recorded = driver_class_path(jars)
    assert class_path[: len(recorded)] == recorded
    spark_home = Path(pyspark.__file__).parent  # Spark's own conf/ and jars/ in between
    between = class_path[len(recorded) : -len(appended)]
    assert between and all(Path(entry).is_relative_to(spark_home) for entry in between), between
    archive = jvm_archive.archive_path(jars)
    assert archive.is_file(), "make test records the class-data archive before the tests"
    assert f"-XX:SharedArchiveFile={archive}" in argv
    # and the JVM mapped it (it ignores, unmapped, an archive whose class path is not its own):
    # the machine's archive, recorded with another path to each of this clone's files
    assert str(archive) in Path(f"/proc/{pid}/maps").read_text(), "the archive is not mapped"


def test_existing_session_is_reused(spark) -> None:  # type: ignore[no-untyped-def]
    from sales_core.config import load_config
    from sales_core.session import get_spark

    spark.conf.set("spark.sql.session.timeZone", "Europe/Paris")
    again = get_spark(load_config().spark)
    assert again is spark
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


def test_table_version_follows_commits_from_any_writer(spark, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The latest version through Delta's log API (and through the history, its fallback),
    including commits another process made (delta-rs here, as the batch and speed jobs are
    other processes for a server)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from sales_core import lakehouse

    path = str(tmp_path / "table")
    for version in range(2):
        spark.range(1).write.format("delta").mode("append").save(path)
        assert table_version(spark, path) == version
    write_deltalake(path, pa.table({"id": pa.array([7], pa.int64())}), mode="append")
    assert table_version(spark, path) == 2
    assert lakehouse.DELTA_LOG_API["usable"], "the log API was not used"
    with pytest.raises(AnalysisException, match="not a Delta table"):
        table_version(spark, str(tmp_path / "nothing"))
    monkeypatch.setitem(lakehouse.DELTA_LOG_API, "usable", False)  # as on Spark Connect
    spark.range(1).write.format("delta").mode("append").save(path)
    assert table_version(spark, path) == 3
