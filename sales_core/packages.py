"""The JVM packages every Spark entry point needs, pinned in one place.

The session factory, ``spark-submit.sh`` and the Databricks job definitions all read
:data:`JVM_PACKAGES`. ``python -m sales_core.packages fetch`` resolves them from Maven
Central once into ``.cache/jars`` (through Spark's own Ivy resolver, so the jar set is the
one ``--packages`` would give); afterwards sessions use the cached jars and never download.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

SPARK_VERSION = "4.2.0"
SCALA_BINARY = "2.13"
DELTA_VERSION = "4.4.0"
POSTGRES_JDBC_VERSION = "42.7.8"

JVM_PACKAGES: tuple[str, ...] = (
    f"io.delta:delta-spark_{SPARK_VERSION.rsplit('.', 1)[0]}_{SCALA_BINARY}:{DELTA_VERSION}",
    f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{SPARK_VERSION}",
    f"org.postgresql:postgresql:{POSTGRES_JDBC_VERSION}",
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def jar_cache_dir() -> Path:
    """Where the resolved jars live (``LAMBDA_SALES_JAR_CACHE`` overrides)."""
    return Path(os.environ.get("LAMBDA_SALES_JAR_CACHE", PROJECT_ROOT / ".cache" / "jars"))


def _fingerprint(packages: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(packages).encode()).hexdigest()[:16]


def cached_jars(packages: tuple[str, ...] = JVM_PACKAGES) -> list[str] | None:
    """The cached jar paths for ``packages``, or None when they were never fetched."""
    manifest = jar_cache_dir() / "MANIFEST"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    if data.get("fingerprint") != _fingerprint(packages):
        return None
    jars = [str(jar_cache_dir() / "ivy" / "jars" / name) for name in data["jars"]]
    return jars if all(Path(j).is_file() for j in jars) else None


MAVEN_CENTRAL = "https://repo1.maven.org/maven2/"

# Spark's own resolver chain also asks the local Maven and Ivy caches and Spark's package
# repository (a host this machine may not reach: a warning a package): Maven Central only.
_IVY_SETTINGS = f"""<ivysettings>
  <settings defaultResolver="central"/>
  <resolvers>
    <ibiblio name="central" m2compatible="true" root="{MAVEN_CENTRAL}"/>
  </resolvers>
</ivysettings>
"""


def ivy_settings() -> Path:
    """The Ivy settings file that resolves from Maven Central alone (written once)."""
    path = jar_cache_dir() / "ivysettings.xml"
    if not path.is_file() or path.read_text() != _IVY_SETTINGS:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_IVY_SETTINGS)
    return path


def fetch(packages: tuple[str, ...] = JVM_PACKAGES) -> list[str]:
    """Resolve ``packages`` from Maven Central into the jar cache (once) and return the jars."""
    existing = cached_jars(packages)
    if existing is not None:
        return existing
    from pyspark.sql import SparkSession

    ivy_dir = jar_cache_dir() / "ivy"
    ivy_dir.mkdir(parents=True, exist_ok=True)
    jars_dir = ivy_dir / "jars"
    before = set(os.listdir(jars_dir)) if jars_dir.is_dir() else set()
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("lambda-sales-fetch-jars")
        .config("spark.jars.packages", ",".join(packages))
        .config("spark.jars.ivy", str(ivy_dir))
        .config("spark.jars.ivySettings", str(ivy_settings()))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        resolved = spark.sparkContext.getConf().get("spark.jars", "")
    finally:
        spark.stop()
    names = sorted({Path(p.replace("file:", "")).name for p in resolved.split(",") if p})
    if not names:
        names = sorted(set(os.listdir(jars_dir)) - before)
    manifest = {"fingerprint": _fingerprint(packages), "packages": list(packages), "jars": names}
    tmp = jar_cache_dir() / "MANIFEST.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(jar_cache_dir() / "MANIFEST")
    jars = cached_jars(packages)
    if jars is None:
        raise RuntimeError(f"resolved jars missing under {jars_dir}")
    return jars


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["fetch"]:
        if cached_jars() is None:
            import time

            from sales_core.logs import redirect_jvm_output

            started = time.monotonic()
            print(
                f"resolving {len(JVM_PACKAGES)} JVM packages from Maven Central into "
                f"{jar_cache_dir()} (once)",
                flush=True,
            )
            log = redirect_jvm_output("fetch-jars")  # Ivy's report: a file, not the terminal
            try:
                jars = fetch()
            except Exception as exc:
                print(
                    f"could not resolve the JVM packages: {type(exc).__name__}"
                    + (f" (Ivy's report: {log})" if log else ""),
                    file=sys.stderr,
                )
                return 1
            print(f"{len(jars)} jars cached in {time.monotonic() - started:.0f} s", flush=True)
        else:
            print(f"{len(cached_jars() or [])} jars cached in {jar_cache_dir()}")
        return 0
    if args[:1] == ["list"]:
        print(",".join(JVM_PACKAGES))
        return 0
    if args[:1] == ["jars"]:
        cached = cached_jars()
        if cached is None:
            print("jars not fetched: run `python -m sales_core.packages fetch`", file=sys.stderr)
            return 1
        print(",".join(cached))
        return 0
    print("usage: python -m sales_core.packages fetch|list|jars", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
