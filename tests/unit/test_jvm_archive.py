"""The local driver's JVM options: the class-data archive only for a local master and only
when it exists, the log4j settings first and the user's own options last."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sales_core.config import SparkConf
from sales_core.jvm_archive import ARCHIVE_VAR, archive_path
from sales_core.session import driver_java_options

pytestmark = pytest.mark.unit


def conf(master: str = "local[2]", **extra: str) -> SparkConf:
    return SparkConf(
        master=master, app_name="t", shuffle_partitions=2, driver_memory="", conf=extra
    )


def test_an_existing_archive_is_mapped_by_a_local_driver(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    archive = tmp_path / "spark.jsa"
    archive.write_bytes(b"x")
    monkeypatch.setenv(ARCHIVE_VAR, str(archive))
    options = driver_java_options(conf(), None).split()
    assert options[0].startswith("-Dlog4j2.configurationFile=")
    assert f"-XX:SharedArchiveFile={archive}" in options
    # a cluster's driver runs in this process too (client mode): same class path, same archive
    assert (
        f"-XX:SharedArchiveFile={archive}"
        in driver_java_options(conf("spark://host:7077"), None).split()
    )


def test_no_archive_no_option_and_off_means_off(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(ARCHIVE_VAR, str(tmp_path / "missing.jsa"))
    assert "SharedArchiveFile" not in driver_java_options(conf(), None)
    monkeypatch.setenv(ARCHIVE_VAR, "off")
    assert "SharedArchiveFile" not in driver_java_options(conf(), None)


def test_the_users_options_come_last_and_the_callers_replace_the_archive(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    archive = tmp_path / "spark.jsa"
    archive.write_bytes(b"x")
    monkeypatch.setenv(ARCHIVE_VAR, str(archive))
    options = driver_java_options(
        conf(**{"spark.driver.extraJavaOptions": "-Xss4m"}),
        None,
        extra=("-XX:ArchiveClassesAtExit=/tmp/new.jsa",),
    ).split()
    assert options[-1] == "-Xss4m"
    assert "-XX:ArchiveClassesAtExit=/tmp/new.jsa" in options
    assert not any(o.startswith("-XX:SharedArchiveFile") for o in options)


def test_the_archive_is_named_by_the_jars_it_was_recorded_with(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(ARCHIVE_VAR, raising=False)
    assert archive_path(["/a.jar"]) == archive_path(["/a.jar"])
    assert archive_path(["/a.jar"]) != archive_path(["/a.jar", "/b.jar"])


def test_the_archive_is_named_by_the_files_not_their_paths(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A clone's class path is hard links of the machine's files: the same archive name from
    another path to the same file (one archive for every clone), another name for a copy."""
    monkeypatch.delenv(ARCHIVE_VAR, raising=False)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "three").mkdir()
    jar = tmp_path / "one" / "a.jar"
    jar.write_bytes(b"PK")
    os.link(jar, tmp_path / "two" / "a.jar")
    copy = tmp_path / "three" / "a.jar"
    shutil.copy2(jar, copy)  # same name, bytes, size and time: another file
    same = archive_path([str(jar)]).name
    assert archive_path([str(tmp_path / "two" / "a.jar")]).name == same
    assert archive_path([str(copy)]).name != same
