"""The one Spark session factory: Delta, UTC, the pinned JVM packages."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from pyspark.sql import SparkSession

from sales_core import jvm_archive
from sales_core.config import CONF_DIR, S3Conf, SparkConf
from sales_core.object_store import spark_settings, spark_uri
from sales_core.packages import (
    JVM_PACKAGES,
    LOCAL_LOGSTORE_CLASS,
    S3_PACKAGES,
    appended_class_path,
    cached_jars,
    driver_class_path,
    ivy_settings,
    jar_cache_dir,
    local_logstore_jar,
    s3_jars,
)

log = logging.getLogger(__name__)

DIST_CLASS_PATH = "SPARK_DIST_CLASSPATH"

DELTA_SETTINGS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
# Settings that are safe to apply to a session that already exists (spark-submit, Databricks).
RUNTIME_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    # Writes of a micro-batch or a run stay one Delta commit each; schema stays as declared.
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
}
# Defaults a user's own setting (``[spark.conf]``, ``spark-submit --conf``) overrides.
DEFAULT_SETTINGS = {
    # OPTIMIZE (the stream's compaction, ``maintain``) rewrites only files below 32 MiB, into
    # files of up to 1 GiB: Delta's default (1 GiB) would rewrite the whole master dataset
    # each time, where only the stream's small files need it.
    "spark.databricks.delta.optimize.minFileSize": str(32 * 1024 * 1024),
}


def _active_session() -> SparkSession | None:
    return SparkSession.getActiveSession()


def get_spark(
    conf: SparkConf,
    *,
    app_name: str | None = None,
    java_options: tuple[str, ...] = (),
    s3: S3Conf | None = None,
    warehouse: str | None = None,
) -> SparkSession:
    """Return the job's SparkSession, creating it only when none exists.

    Under ``spark-submit`` or on Databricks a session (or at least its context) exists
    already; it is reused and only runtime settings are applied. Locally, a session is built
    with the Delta extension and the cached pinned jars (resolved from Maven Central on first
    use, then never again), and the class-data-sharing archive of ``make archive`` when it fits
    (``sales_core.jvm_archive``). ``java_options`` are added to the driver JVM's own.

    ``s3``: the lakehouse or landing zone is on ``s3a://``: the session gets S3A, the AWS SDK
    and the conditional-PUT LogStore (:mod:`sales_core.object_store`), set from these
    settings. Other sessions go without them (about 690 MB of jars).

    ``warehouse``: ``spark.sql.warehouse.dir`` for a new session (Spark's default, a
    ``spark-warehouse`` directory in the working directory, is created by every session);
    ``spark.sql.warehouse.dir`` in the user's ``[spark.conf]`` wins.
    """
    existing = _active_session()
    if existing is not None:
        _apply_runtime(existing, conf, s3)
        return existing
    if conf.master.startswith("local"):
        # A laptop: bind to loopback rather than guessing an external interface.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name or conf.app_name)
    appended: list[str] = []
    jars = None if _under_launcher() else cached_jars()
    object_store_jars = s3_jars() if s3 is not None and not _under_launcher() else None
    local = conf.master.startswith("local")
    # This process starts the driver JVM whatever the master (a cluster's is client mode):
    # with or without the object store's jars (appended after Spark's own below), its class
    # path starts as the pinned jars' archive was recorded with.
    options = driver_java_options(conf, jars, extra=java_options)
    if options:
        builder = builder.config("spark.driver.extraJavaOptions", options)
    if conf.master and not _under_launcher():
        builder = builder.master(conf.master)
    for key, value in DELTA_SETTINGS.items():
        builder = builder.config(key, value)
    for key, value in {**RUNTIME_SETTINGS, **DEFAULT_SETTINGS}.items():
        builder = builder.config(key, value)
    builder = builder.config("spark.sql.shuffle.partitions", str(conf.shuffle_partitions))
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    if warehouse:
        builder = builder.config("spark.sql.warehouse.dir", spark_uri(warehouse))
    if conf.driver_memory:
        builder = builder.config("spark.driver.memory", conf.driver_memory)
    if not _under_launcher():
        store = local_logstore_jar()  # the project's LogStores (jvm/), once built
        if jars is not None:
            # The driver puts every jar on its own class path: given as spark.jars alone, each
            # session would first copy them (about 100 MB, 690 MB more with S3) into its
            # temporary directory, and load them through a class loader the class-data archive
            # does not cover (a small local batch run: 0.7 s less; the same layout through
            # spark-submit.sh, a standalone cluster's batch and speed drivers on the object
            # store: 111 CPU-s, now 77-81).
            class_path = driver_class_path(jars)
            user = conf.conf.get("spark.driver.extraClassPath")
            builder = builder.config(
                "spark.driver.extraClassPath", ":".join([user, *class_path] if user else class_path)
            )
            if object_store_jars:
                appended = appended_class_path(object_store_jars)
            if not local:
                # A cluster's executors get them all, served by the driver.
                shipped = [
                    *jars,
                    *(object_store_jars or []),
                    *([store] if store is not None else []),
                ]
                builder = builder.config("spark.jars", ",".join(dict.fromkeys(shipped)))
        if jars is not None and store is not None:
            # Delta lists a local table's log through this LogStore: the names, then a status
            # only for the entries from the version it asks for (jvm/, LocalListingLogStore).
            builder = builder.config("spark.delta.logStore.file.impl", LOCAL_LOGSTORE_CLASS)
        if jars is None:
            log.info("resolving JVM packages from Maven Central into %s", jar_cache_dir())
            packages = (*JVM_PACKAGES, *(S3_PACKAGES if s3 is not None else ()))
            builder = builder.config("spark.jars.packages", ",".join(packages))
            builder = builder.config("spark.jars.ivy", str(jar_cache_dir() / "ivy"))
            builder = builder.config("spark.jars.ivySettings", str(ivy_settings()))
    for key, value in (spark_settings(s3) if s3 is not None else {}).items():
        builder = builder.config(key, value)
    for key, value in conf.conf.items():
        if key == "spark.driver.extraClassPath" and jars is not None:
            continue  # joined to the driver's class path above
        if key != "spark.driver.extraJavaOptions":
            builder = builder.config(key, value)
    with _launcher_class_path(appended):
        spark = builder.getOrCreate()
    _apply_runtime(spark, conf, s3)
    return spark


def driver_java_options(
    conf: SparkConf, jars: list[str] | None, *, extra: tuple[str, ...] = ()
) -> str:
    """The driver JVM's options: the CLI's log4j settings, the class-data archive (the driver
    runs in this process whatever the master), the caller's and then the user's
    ``spark.driver.extraJavaOptions``."""
    options: list[str] = []
    log4j = CONF_DIR / "log4j2.properties"
    if log4j.is_file():
        options.append(f"-Dlog4j2.configurationFile=file:{log4j}")
    if not any(o.startswith(("-XX:SharedArchiveFile", "-XX:ArchiveClassesAtExit")) for o in extra):
        options += jvm_archive.java_options(jars)
    options += extra
    user = conf.conf.get("spark.driver.extraJavaOptions", "")
    return " ".join([*options, user] if user else options)


@contextlib.contextmanager
def _launcher_class_path(appended: list[str]) -> Iterator[None]:
    """``appended`` at the end of the driver JVM's class path while it is launched: Spark's
    launcher puts ``SPARK_DIST_CLASSPATH`` after its own jars (a user's value kept first)."""
    if not appended:
        yield
        return
    saved = os.environ.get(DIST_CLASS_PATH)
    os.environ[DIST_CLASS_PATH] = ":".join([saved, *appended] if saved else appended)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(DIST_CLASS_PATH, None)
        else:
            os.environ[DIST_CLASS_PATH] = saved


def _under_launcher() -> bool:
    """True under spark-submit or on Databricks: master and jars are the launcher's to set."""
    # spark-submit's PythonRunner hands the driver its JVM through these variables.
    return "PYSPARK_GATEWAY_PORT" in os.environ or "DATABRICKS_RUNTIME_VERSION" in os.environ


def _apply_runtime(spark: SparkSession, conf: SparkConf, s3: S3Conf | None = None) -> None:
    for key, value in RUNTIME_SETTINGS.items():
        spark.conf.set(key, value)
    # A session that exists already (the tests' own, spark-submit's) takes the S3 settings
    # as session settings: Hadoop's under their own names, Delta's as they are.
    for key, value in (spark_settings(s3) if s3 is not None else {}).items():
        spark.conf.set(key.removeprefix("spark.hadoop."), value)
    launched = spark.sparkContext.getConf()
    for key, value in DEFAULT_SETTINGS.items():
        if key not in conf.conf and not launched.contains(key):
            spark.conf.set(key, value)
    spark.conf.set("spark.sql.shuffle.partitions", str(conf.shuffle_partitions))
