"""Build the local Spark driver's class-data-sharing archive (see ``sales_core.jvm_archive``).

``python -m devtools.jvm_archive build`` (``make archive``, run by ``make demo`` and ``make test``) runs a short, real pass of
the pipeline in a driver JVM started with ``-XX:ArchiveClassesAtExit``: a batch run over a few
generated landing files (Delta writes, MERGE, the ledger, the four views, the publish), a
query of a merged view, and a streaming query with RocksDB state and a ``foreachBatch`` Delta
sink. The JVM writes the classes it loaded when it exits; the archive is renamed into place
only when complete, so a killed build leaves no archive rather than a broken one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sales_core.jvm_archive import archive_path, disabled, recording_options, shared_dir
from sales_core.packages import cached_jars, jar_cache_dir, local_logstore_jar

KAFKA_SOURCE = "org.apache.spark.sql.kafka010.KafkaSourceProvider"
# How the tests' short-lived Spark drivers run (tests/conftest.py sets both), and so the recorded
# pass: the JVM compiles with C1 alone, and Spark evaluates expressions interpreted (no Janino
# code generation).
SHORT_LIVED_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"
INTERPRETED = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}


def build(*, force: bool = False) -> Path | None:
    """Build the archive for the cached jars unless it exists; returns its path (None: off).

    Recorded into the machine's archives (``sales_core.jvm_archive.shared_dir``) with the class
    path laid out as hard links beside it, so that any clone whose class path is the same files
    maps it; into the clone's ``.cache/jvm`` where the files cannot be linked there."""
    if disabled():
        return None
    jars = cached_jars()
    target = archive_path(jars)
    if target.is_file() and not force:
        return target
    shared = shared_dir()
    environ = dict(os.environ)
    if shared is not None and jars is not None:
        layout = _linked_class_path(_layout_dir(shared / target.name), jars)
        if layout is not None:
            target = shared / target.name
            environ.update(layout)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    with tempfile.TemporaryDirectory(prefix="lambda-sales-cds-") as work:
        # the recording JVM maps no archive (sales_core.session.driver_java_options)
        result = subprocess.run(
            [sys.executable, "-m", "devtools.jvm_archive", "record", str(partial), work],
            capture_output=True,
            text=True,
            check=False,
            env=environ,
        )
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"recording the JVM class archive failed: {tail[0]}")
    partial.replace(target)
    if target.parent == shared:
        _prune(shared, keep=target)
    return target


def _linked_class_path(layout: Path, jars: list[str]) -> dict[str, str] | None:
    """A local driver's class path as hard links under ``layout`` (made once): Spark's
    ``bin``, ``jars`` and ``python`` as ``SPARK_HOME``, the pinned jars and the LogStores as the jar cache.
    Returns the environment that makes a driver start from there; None when the files cannot
    be linked (another file system)."""
    spark_home, jar_cache = layout / "spark", layout / "jars"
    environ = {"SPARK_HOME": str(spark_home), "LAMBDA_SALES_JAR_CACHE": str(jar_cache)}
    if layout.is_dir():
        return environ
    import pyspark

    pyspark_home = Path(pyspark.__file__).parent
    building = layout.with_name(f"{layout.name}.{os.getpid()}.partial")
    shutil.rmtree(building, ignore_errors=True)
    try:
        for part in ("bin", "jars", "python"):  # python/lib: the workers' pyspark
            shutil.copytree(pyspark_home / part, building / "spark" / part, copy_function=os.link)
        cache = jar_cache_dir()
        (building / "jars").mkdir()
        shutil.copy2(cache / "MANIFEST", building / "jars" / "MANIFEST")
        for jar in (*jars, *filter(None, [local_logstore_jar()])):
            relative = Path(jar).relative_to(cache)
            (building / "jars" / relative).parent.mkdir(parents=True, exist_ok=True)
            os.link(jar, building / "jars" / relative)
        building.replace(layout)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        return None if not layout.is_dir() else environ
    return environ


def _prune(shared: Path, *, keep: Path, archives: int = 3) -> None:
    """The machine's newest ``archives`` archives (this one among them) and their class path
    layouts; older ones (other jar sets, JDKs or pyspark builds) are removed."""
    found = sorted(shared.glob("spark-*.jsa"), key=lambda p: p.stat().st_mtime, reverse=True)
    old = [p for p in found if p != keep][max(archives - 1, 0) :]
    for archive in old:
        archive.unlink(missing_ok=True)
        shutil.rmtree(_layout_dir(archive), ignore_errors=True)


def _layout_dir(archive: Path) -> Path:
    """Where the class path ``archive`` is recorded with lies, as hard links, beside it."""
    return archive.with_name(f"classpath-{archive.stem}")


def record(target: Path, work: Path) -> None:
    """The recorded pass (in its own process: the archive is written when its JVM exits)."""
    from batch_layer.job import run_batch
    from devtools.generator import GeneratorSpec, generate_records
    from devtools.writers import write_landing_files
    from sales_core.config import load_config
    from sales_core.lakehouse import Lakehouse
    from sales_core.session import get_spark
    from serving_layer.query import build_query
    from serving_layer.spark_engine import answer

    config = load_config(
        environ={
            "LAMBDA_SALES__LAKEHOUSE__ROOT": str(work / "lakehouse"),
            "LAMBDA_SALES__SOURCES__FILES__LANDING": str(work / "landing"),
            "LAMBDA_SALES__SPARK__MASTER": "local[2]",
            "LAMBDA_SALES__QUALITY__MIN_SCORE": "0",
        }
    )
    # The archive holds classes, not compiled code: the recording JVM compiles with C1 alone
    # (C2 took a third of the recording's CPU) and evaluates the pass's expressions
    # interpreted, as the tests' short-lived drivers do; then a query with Spark's code
    # generation (production's default) loads that path's classes too.
    spark = get_spark(
        config.spark,
        app_name="lambda-sales-jvm-archive",
        java_options=(*recording_options(target), SHORT_LIVED_JAVA_OPTIONS),
    )
    spark.sparkContext.setLogLevel("ERROR")
    for key, value in INTERPRETED.items():
        spark.conf.set(key, value)
    spec = GeneratorSpec(events=400, seed=1, bad_share=0.05, duplicate_share=0.05)
    write_landing_files(generate_records(spec), work / "landing", rows_per_file=200)
    run_batch(spark, config, progress=lambda _: None)
    lakehouse = Lakehouse(config.lakehouse.root)
    for view in ("sales_daily", "customer_totals"):
        answer(spark, lakehouse, build_query(view, limit=10))
    _stream(spark, work)
    for key in INTERPRETED:
        spark.conf.unset(key)
    answer(spark, lakehouse, build_query("sales_daily", limit=10))
    jvm = spark.sparkContext._jvm
    jvm.org.apache.spark.util.Utils.classForName(KAFKA_SOURCE, True, False)  # type: ignore[union-attr]
    spark.stop()


def _stream(spark, work: Path) -> None:  # type: ignore[no-untyped-def]
    """A few micro-batches with the speed layer's machinery: RocksDB de-duplication, JSON
    parsing and a Delta sink in ``foreachBatch``."""
    from pyspark.sql import functions as F

    spark.conf.set(
        "spark.sql.streaming.stateStore.providerClass",
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    )
    source = work / "stream-in"
    source.mkdir()
    for n in range(3):
        (source / f"part-{n}.json").write_text(
            "".join(f'{{"id": "e{i % 7}", "amount": {i}.5}}\n' for i in range(n * 5, n * 5 + 5))
        )
    sink = str(work / "stream-out")

    def write(frame, batch_id: int) -> None:  # type: ignore[no-untyped-def]
        frame.write.format("delta").mode("append").save(sink)

    query = (
        spark.readStream.schema("id string, amount double")
        .option("maxFilesPerTrigger", 1)
        .json(str(source))
        .withColumn("ts", F.current_timestamp())
        .withWatermark("ts", "1 hour")
        .dropDuplicates(["id"])
        .writeStream.foreachBatch(write)
        .option("checkpointLocation", str(work / "stream-checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    deadline = time.monotonic() + 300
    while query.isActive and time.monotonic() < deadline:
        query.awaitTermination(1)
    query.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["record"] and len(args) == 3:
        record(Path(args[1]), Path(args[2]))
        return 0
    if args[:1] == ["build"]:
        started = time.monotonic()
        try:
            path = build(force="--force" in args)
        except RuntimeError as exc:
            print(f"{exc} (Spark starts without it)", file=sys.stderr)
            return 0
        if path is None:
            print("JVM class archive: off (LAMBDA_SALES_JVM_ARCHIVE=off)")
        else:
            print(f"JVM class archive for local Spark: {path} ({time.monotonic() - started:.0f} s)")
        return 0
    print("usage: python -m devtools.jvm_archive build [--force]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
