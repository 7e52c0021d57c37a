"""The JVM package lock (sales_core/jars.lock.json): what ``fetch`` downloads without Ivy."""

from __future__ import annotations

import os
import urllib.request

import pytest

from sales_core import packages

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", sorted(packages.PACKAGE_SETS))
def test_every_pinned_package_set_is_locked_with_a_sha1_per_jar(name: str) -> None:
    """A version bumped in packages.py without `python -m sales_core.packages lock` fails here
    (``fetch`` would fall back to a minute of Ivy resolution on every fresh machine)."""
    jars = packages.locked_jars(packages.PACKAGE_SETS[name])
    assert jars, f"the {name} packages are not in {packages.LOCK_FILE.name}"
    for jar in jars:
        assert set(jar) == {"group", "artifact", "version", "sha1"}, jar
        assert len(jar["sha1"]) == 40 and int(jar["sha1"], 16) >= 0, jar
    # each package asked for is among its set's jars, at the pinned version
    coordinates = {f"{j['group']}:{j['artifact']}:{j['version']}" for j in jars}
    assert set(packages.PACKAGE_SETS[name]) <= coordinates


def test_packages_the_lock_does_not_cover_are_not_locked() -> None:
    assert packages.locked_jars(("org.example:not-pinned:1.0",)) is None
    assert packages.locked_jars((*packages.JVM_PACKAGES, "org.example:extra:1.0")) is None


def test_a_local_driver_class_path_leaves_out_what_pyspark_ships() -> None:
    """Spark's own Jackson, Hadoop and Parquet win over a pinned package's older ones (as they
    do in spark.jars' child class loader); Delta, the Kafka connector and the JDBC driver join."""
    jars = packages.cached_jars()
    assert jars is not None, "make setup caches the pinned packages"
    kept = packages.driver_class_path(jars)
    names = " ".join(kept)
    for joined in ("io.delta_delta-spark_", "spark-sql-kafka-0-10_", "org.postgresql_postgresql-"):
        assert joined in names
    provided = packages.spark_provides()
    assert {"jackson-databind", "hadoop-client-api", "parquet-hadoop"} <= provided
    for left_out in ("jackson-databind-", "hadoop-client-api-", "parquet-hadoop-"):
        assert any(left_out in jar for jar in jars) and left_out not in names


def test_a_clone_links_the_jars_of_the_machines_store_and_asks_maven_central_for_none(
    tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Every fresh clone used to download the same 44 jars (700 MB, 15 s): a jar whose SHA-1
    is in the machine's store is linked from there, the same file."""
    cached = packages.cached_jars()
    assert cached is not None, "make setup caches the pinned packages"
    by_name = {os.path.basename(j): j for j in cached}
    store = tmp_path / "store"
    store.mkdir()
    locked = packages.locked_jars(packages.JVM_PACKAGES)
    assert locked
    for jar in locked:
        os.link(
            by_name[f"{jar['group']}_{jar['artifact']}-{jar['version']}.jar"],
            store / f"{jar['sha1']}.jar",
        )
    monkeypatch.setenv("LAMBDA_SALES_JAR_STORE", str(store))
    monkeypatch.setenv("LAMBDA_SALES_JAR_CACHE", str(tmp_path / "clone"))

    def no_network(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"a download: {args[0]}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    jars = packages.fetch(packages.JVM_PACKAGES)
    assert len(jars) == len(locked)
    assert sorted(os.stat(j).st_ino for j in jars) == sorted(
        os.stat(store / f"{jar['sha1']}.jar").st_ino for jar in locked
    )
    assert packages.cached_jars() == jars
