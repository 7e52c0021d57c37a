"""Shared fixtures: one SparkSession for the whole run, built by the project's own factory,
and one Kafka broker per test process on a free port."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools import spark_gateway
from devtools.jvm_archive import INTERPRETED, SHORT_LIVED_JAVA_OPTIONS
from tests.cpu_report import pytest_runtest_protocol, pytest_terminal_summary  # noqa: F401

os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)  # type: ignore[attr-defined]
# Every Spark driver a test starts in a process of its own (the CLI) lives for seconds over
# tiny inputs: the JVM's C2 compiler spends about half its CPU compiling code that never runs
# long enough to pay it back (a 2,000-event batch run: 89 s of CPU with C2, 48 s without), on
# two cores shared by two test workers. C1 alone (the same code runs, compiled less); the
# tests' own long-lived session keeps the default.
DRIVER_JAVA_OPTIONS = SHORT_LIVED_JAVA_OPTIONS
os.environ.setdefault(
    "LAMBDA_SALES__SPARK__CONF__spark.driver.extraJavaOptions", DRIVER_JAVA_OPTIONS
)
# The same for the drivers spark-submit.sh starts (the cluster's, Airflow's tasks), through
# Spark's own variable for the submitting JVM's options.
os.environ.setdefault("SPARK_SUBMIT_OPTS", DRIVER_JAVA_OPTIONS)
# Tests feed Spark tiny inputs through thousands of distinct small queries: compiling each
# query's projections and predicates to Java bytecode (Janino, then the JIT) costs more than
# evaluating them, so every driver of the tests evaluates expressions interpreted (Spark's
# own fallback path, the same results). Measured on a quiet machine: 40 small Delta
# appends and reads in one session, 127-141 -> 105-118 s of CPU; a cold 400-event CLI batch,
# 44-45 -> 39-40 s; test_serving.py alone, 319 -> 246-257 s of CPU, 213 -> 172-175 s.
# Production keeps Spark's defaults (code generation pays off at scale).
TINY_INPUT_ENVIRON = {
    f"LAMBDA_SALES__SPARK__CONF__{key}": value for key, value in INTERPRETED.items()
}
for name, value in TINY_INPUT_ENVIRON.items():
    os.environ.setdefault(name, value)
# Both, as the LAMBDA_SALES__* variables of a CLI whose configuration the test writes itself
# (environ_without_config below). Tests that dropped every LAMBDA_SALES* variable ran their
# drivers with C2 or Janino (the JDBC kill test's two, Airflow's, the CLI error and logging
# tests'): the logging test's 4-event cluster-layer batch alone, 29 -> 25 CPU-s with these.
DRIVER_ENVIRON = {
    "LAMBDA_SALES__SPARK__CONF__spark.driver.extraJavaOptions": DRIVER_JAVA_OPTIONS,
    **TINY_INPUT_ENVIRON,
}
# The tests' own session lives for the whole run and plans thousands of small queries, each
# with classes of its own: with G1 and the default JIT thresholds, a worker's JVM spent about a
# fifth of its CPU in C2 compiles and a tenth in GC (concurrent marking). The parallel
# collector, and methods compiled at three times the usual counts (the hot ones still are):
# test_serving.py alone, 257 -> 209 s of CPU, 150 -> 133 s.
SESSION_JAVA_OPTIONS = ("-XX:+UseParallelGC", "-XX:CompileThresholdScaling=3")
# The tests' Kafka brokers carry a few hundred events a test on two shared cores: the C1
# compiler alone and the serial collector (devtools.kafka's default is G1 with C2, for the
# demo's and a laptop's broker). Three brokers starting at once (test_kafka_cluster.py) start
# in two thirds of the time. A standalone cluster's master and workers (test_cluster.py), which
# mostly wait beside the jobs, take the same compiler and collector (their heap is Spark's
# SPARK_DAEMON_MEMORY).
SPARK_DAEMON_JAVA_OPTIONS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
BROKER_JAVA_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    *SPARK_DAEMON_JAVA_OPTIONS,
    "-XX:+ExitOnOutOfMemoryError",
)
warnings.filterwarnings("ignore", category=DeprecationWarning, module="kafka")
warnings.filterwarnings("ignore", category=FutureWarning, module="pyspark")

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The longest modules first (minutes each, measured): with `-n 2 --dist loadfile` (what
# `make test` runs) the two workers then end at about the same time instead of one of them
# starting a 12-minute module last. A stable sort: tests keep their order within a module.
LONGEST_FIRST = (
    "test_speed_crash.py",
    "test_batch_crash.py",
    "test_airflow.py",
    "test_speed_ops.py",
    # The object store's modules after 20 minutes of tests: CI builds MinIO beside the tests
    # (about 20 minutes on two busy cores), and a module that needs it earlier waits for it.
    "test_cluster.py",
    "test_speed_layer.py",
    "test_serving.py",
    "test_jdbc_source.py",
    "test_http_source.py",
    "test_landing_files.py",
    "test_object_store.py",
    "test_lambda_property.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """After each phase (setup, call, teardown) of each test, in the thread that ran it: the
    Spark session's connection back in step if a timeout cut a py4j call short."""
    spark_gateway.forget_interrupted_call()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def spark() -> Iterator:
    from sales_core.config import load_config
    from sales_core.session import get_spark

    config = load_config(
        environ={
            "LAMBDA_SALES__SPARK__MASTER": "local[2]",
            "LAMBDA_SALES__SPARK__SHUFFLE_PARTITIONS": "2",
            # Two test workers share two cores: no web UI to feed with every job's events.
            "LAMBDA_SALES__SPARK__CONF__spark.ui.enabled": "false",
            **TINY_INPUT_ENVIRON,
        }
    )
    # With S3A on the class path (tests/integration/test_object_store.py shares this session).
    submit_options = os.environ.pop("SPARK_SUBMIT_OPTS", None)  # not for this long-lived JVM
    try:
        session = get_spark(
            config.spark,
            app_name="lambda-sales-tests",
            s3=config.lakehouse.s3,
            java_options=SESSION_JAVA_OPTIONS,
        )
    finally:
        if submit_options is not None:
            os.environ["SPARK_SUBMIT_OPTS"] = submit_options
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of this test process's Kafka broker, for every test that just needs one.

    One broker per pytest-xdist worker: each has its own data directory (under the worker's
    own base temp dir) and its own free ports, so workers and other checkouts running tests
    at the same time never meet. Tests make topics of their own (unique names). A test that
    stops or restarts a broker starts its own with ``devtools.kafka.start_on_free_port``.
    """
    from devtools import kafka

    data_dir = tmp_path_factory.mktemp("kafka")
    status = kafka.start_on_free_port(data_dir, jvm_options=BROKER_JAVA_OPTIONS)
    assert status.bootstrap is not None
    try:
        yield status.bootstrap
    finally:
        kafka.stop(data_dir=data_dir)


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One MinIO server (devtools.object_store) for every test of the session that needs S3;
    each test uses a bucket of its own. Its random root credentials are this process's
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY while it runs (S3A and delta-rs read them
    there), and what the subprocesses of the tests inherit."""
    from devtools import object_store as minio

    store = minio.start(tmp_path_factory.mktemp("minio") / "data")
    saved = {name: os.environ.get(name) for name in store.env()}
    os.environ.update(store.env())
    try:
        yield store
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        minio.stop(store)


def s3_conf(store: Any) -> Any:
    """The ``[lakehouse.s3]`` settings of a test's MinIO server (the ``object_store`` fixture)."""
    from devtools.object_store import REGION
    from sales_core.config import S3Conf

    return S3Conf(endpoint=store.endpoint, region=REGION, path_style=True)


def new_bucket(store: Any) -> str:
    """A new bucket of its own on the test's MinIO server."""
    from devtools.object_store import create_bucket

    bucket = f"t-{uuid.uuid4().hex[:12]}"
    create_bucket(store, bucket)
    return bucket


@pytest.fixture
def s3_spark(spark, object_store: Any):  # type: ignore[no-untyped-def]
    """The shared session with this store's S3A settings (applied at run time). Its JVM may
    have started before the store did, without the store's credentials in its environment:
    this session (the test's own, never a job's) gets them as S3A settings."""
    from sales_core.config import load_config
    from sales_core.session import get_spark

    config = load_config(environ={"LAMBDA_SALES__SPARK__MASTER": "local[2]"})
    session = get_spark(config.spark, s3=s3_conf(object_store))
    session.conf.set("fs.s3a.access.key", object_store.access_key)
    session.conf.set("fs.s3a.secret.key", object_store.secret_key)
    return session


@contextlib.contextmanager
def postgres_data_dir() -> Iterator[Path]:
    """A data directory for a PostgreSQL server of the test's own, which the ``postgres`` OS
    user can reach (pytest's tmp dirs are 0700); the server is stopped and the directory
    removed at the end. Start it with ``devtools.postgres.start_on_free_port``."""
    from devtools import postgres

    parent = Path(tempfile.mkdtemp(prefix="lambda-sales-pg-test-", dir="/tmp"))
    parent.chmod(0o755)
    data_dir = parent / "data"
    try:
        yield data_dir
    finally:
        postgres.stop(data_dir=data_dir)
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def make_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Build a Config whose lakehouse and landing zone live in this test's tmp_path."""
    from sales_core.config import load_config

    def make(root: Path | None = None, **env: str):  # type: ignore[no-untyped-def]
        return load_config(environ=config_environ(root or tmp_path, **env))

    return make


def config_environ(base: Path, **env: str) -> dict[str, str]:
    """The LAMBDA_SALES__* variables of :func:`make_config`'s configuration (a CLI in its own
    process given these runs on the same tables)."""
    (base / "landing").mkdir(parents=True, exist_ok=True)
    return {
        "LAMBDA_SALES__LAKEHOUSE__ROOT": str(base / "lakehouse"),
        "LAMBDA_SALES__SOURCES__FILES__LANDING": str(base / "landing"),
        "LAMBDA_SALES__SPARK__MASTER": "local[2]",
        "LAMBDA_SALES__SPARK__SHUFFLE_PARTITIONS": "2",
        # Test inputs are deliberately dirty; the quality gate has tests of its own.
        "LAMBDA_SALES__QUALITY__MIN_SCORE": "0",
        **env,
    }


def environ_without_config(**extra: str) -> dict[str, str]:
    """This process's environment for a CLI that the test alone configures: every
    ``LAMBDA_SALES*`` variable dropped, and the shared session's py4j port, then the tests'
    driver settings (:data:`DRIVER_ENVIRON`: no secret, no path, nothing a test checks) and
    ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDA_SALES")}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return {**env, **DRIVER_ENVIRON, **extra}


def write_jsonl(path: Path, records: list) -> Path:  # type: ignore[type-arg]
    """Write records (dicts or raw strings) as a JSONL landing file."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def write_stream_conf(
    base: Path,
    *,
    bootstrap: str,
    topic: str,
    landing: Path,
    kafka_extra: str = "",
    dlq_topic: str | None = None,
) -> Path:
    """A ``--conf`` file for a job running in its own process (the CLI): lakehouse under
    ``base``, the given landing zone and topic, ``local[2]``, no quality gate."""
    path = base / "pipeline.toml"
    path.write_text(
        f'[lakehouse]\nroot = "{base / "lakehouse"}"\n[sources.files]\nlanding = "{landing}"\n'
        f'[sources.kafka]\nbootstrap_servers = "{bootstrap}"\ntopic = "{topic}"\ndlq_topic = "{dlq_topic or topic + "-dlq"}"\n'
        f"{kafka_extra}"
        '[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\n[quality]\nmin_score = 0.0\n'
    )
    return path


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[Any]:
    """Every message of ``topic`` (waits until ``expected`` arrived or the timeout)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        received: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(received) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                received.extend(batch)
        return received
    finally:
        consumer.close()
