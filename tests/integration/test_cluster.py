"""The jobs on a real Spark standalone cluster, submitted through ``spark-submit.sh``.

A master and two workers (1 core each) from the pip pyspark distribution on 127.0.0.1, a real
Kafka broker, a real S3-compatible store (MinIO), and the batch and speed jobs submitted the
way an operator would. The lakehouse and the landing zone are on the store: the driver, the
workers and the executors share nothing but the store and Kafka (no table, checkpoint, ledger
or run record holds a path of a local disk, and the driver's working directory stays empty).
The views the cluster produces, its master dataset and its quarantine must be the oracle's
(``tests/oracle.py``) over the same inputs. Every application must really have run on both
workers' executors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from devtools import object_store as minio
from devtools import spark_cluster
from devtools.generator import GeneratorSpec, generate_records
from devtools.spark_cluster import Cluster
from devtools.writers import to_json_line, write_landing_files
from sales_core.lakehouse import Lakehouse
from sales_core.object_store import storage_options
from tests.conftest import (
    DRIVER_JAVA_OPTIONS,
    SPARK_DAEMON_JAVA_OPTIONS,
    new_bucket,
    s3_conf,
)
from tests.oracle import Ledger, normalise_row, parse_json_text, read_landing_file

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SUBMIT = PROJECT_ROOT / "spark-submit.sh"
WORKERS = 2


@pytest.fixture(scope="module")
def standalone_cluster(
    tmp_path_factory: pytest.TempPathFactory, object_store: minio.ObjectStore
) -> Iterator[Cluster]:
    """One master and two 1-core workers whose machines carry the object store's credentials
    (as an instance profile would: the jobs never pass them); torn down whatever happens."""
    with spark_cluster.standalone_cluster(
        tmp_path_factory.mktemp("standalone"),
        workers=WORKERS,
        worker_memory="1g",
        environ=object_store.env(),
        daemon_java_options=SPARK_DAEMON_JAVA_OPTIONS,
    ) as cluster:
        yield cluster


def submit(
    cluster: Cluster, env: dict[str, str], *job: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [
        str(SUBMIT),
        "--master",
        cluster.url,
        "--env",
        "cluster",
        "--spark-conf",
        "spark.executor.memory=768m",
        "--spark-conf",
        "spark.executor.cores=1",
        "--spark-conf",
        f"spark.cores.max={WORKERS}",
        "--spark-conf",
        "spark.driver.memory=1g",
        "--spark-conf",
        "spark.ui.enabled=false",
        # Executors live for one job over tiny data: C1 alone (see tests/conftest.py).
        "--spark-conf",
        f"spark.executor.extraJavaOptions={DRIVER_JAVA_OPTIONS}",
        # Tiny tables: a handful of tasks per Delta log replay and shuffle, not 50 or 200.
        "--spark-conf",
        "spark.databricks.delta.snapshotPartitions=2",
        "--spark-conf",
        "spark.sql.adaptive.coalescePartitions.initialPartitionNum=4",
        *job,
    ]
    result = subprocess.run(
        command,
        env={**os.environ, "PYTHON": sys.executable, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"{' '.join(job)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-6000:]}"
    )
    return result


def test_dry_run_passes_the_pinned_jars_the_archive_and_the_job_arguments() -> None:
    from sales_core import jvm_archive
    from sales_core.packages import (
        LOCAL_LOGSTORE_CLASS,
        cached_jars,
        driver_class_path,
        local_logstore_jar,
    )

    result = subprocess.run(
        [
            str(SUBMIT),
            "--dry-run",
            "--master",
            "spark://10.0.0.5:7077",
            "speed",
            "--available-now",
            "--trigger",
            "5 seconds",
        ],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    import shlex

    argv = shlex.split(result.stdout)
    assert argv[argv.index("--master") + 1] == "spark://10.0.0.5:7077"
    assert argv[-5:] == [
        str(PROJECT_ROOT / "jobs" / "run.py"),
        "speed",
        "--available-now",
        "--trigger",
        "5 seconds",
    ]
    assert (
        "spark.executorEnv.LAMBDA_SALES_ENV=cluster" in argv
    )  # the environment follows the master
    jars = cached_jars()
    store = local_logstore_jar()
    assert jars is not None and store is not None
    # the pinned jars and the project's LogStores, Delta's local log listed through one of them
    assert argv[argv.index("--jars") + 1].split(",") == [*jars, store]
    assert f"spark.delta.logStore.file.impl={LOCAL_LOGSTORE_CLASS}" in argv
    # the driver runs here (client mode): a local driver's class path and its class-data
    # archive, as the CLI's sessions
    assert argv[argv.index("--driver-class-path") + 1].split(":") == driver_class_path(jars)
    options = next(a for a in argv if a.startswith("spark.driver.extraJavaOptions="))
    assert f"-XX:SharedArchiveFile={jvm_archive.archive_path(jars)}" in options.split()
    archive = Path(argv[argv.index("--py-files") + 1])
    names = set(zipfile.ZipFile(archive).namelist())
    assert {
        "sales_core/config/__init__.py",
        "batch_layer/job.py",
        "speed_layer/sink.py",
        "jobs/cli.py",
        "conf/base.toml",
        "conf/cluster.toml",
    } <= names
    assert not any("__pycache__" in n for n in names)


def test_a_local_master_gets_the_jars_on_the_driver_class_path() -> None:
    """As the CLI's own sessions: nothing in --jars (copied per run), the class path the
    class-data archive was recorded with."""
    from sales_core import jvm_archive
    from sales_core.packages import cached_jars, driver_class_path

    result = subprocess.run(
        [str(SUBMIT), "--dry-run", "--master", "local[2]", "batch"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    import shlex

    argv = shlex.split(result.stdout)
    assert "--jars" not in argv
    jars = cached_jars()
    assert jars is not None
    assert argv[argv.index("--driver-class-path") + 1].split(":") == driver_class_path(jars)
    # the archive the CLI's local sessions map (make test records it before the tests)
    options = next(a for a in argv if a.startswith("spark.driver.extraJavaOptions="))
    archive = jvm_archive.archive_path(jars)
    assert archive.is_file(), "make archive records the class-data archive"
    assert f"-XX:SharedArchiveFile={archive}" in options.split()


def test_a_local_master_on_the_store_gets_its_jars_after_sparks_own() -> None:
    """A local driver on s3a://: the class path the archive was recorded with, then S3A and
    the AWS SDK appended after Spark's own jars (SPARK_DIST_CLASSPATH), so the archive fits."""
    from sales_core.packages import appended_class_path, cached_jars, driver_class_path, s3_jars

    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "LAMBDA_SALES__LAKEHOUSE__ROOT": "s3a://a-bucket/lakehouse",
        "LAMBDA_SALES__LAKEHOUSE__S3__ENDPOINT": "http://127.0.0.1:9",
        "LAMBDA_SALES__LAKEHOUSE__S3__PATH_STYLE": "true",
    }
    env.pop("SPARK_DIST_CLASSPATH", None)
    result = subprocess.run(
        [str(SUBMIT), "--dry-run", "--master", "local[2]", "batch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    import shlex

    command, appended = result.stdout.splitlines()[:2]
    argv = shlex.split(command)
    jars, extra = cached_jars(), s3_jars()
    assert jars is not None and extra is not None
    assert argv[argv.index("--driver-class-path") + 1].split(":") == driver_class_path(jars)
    assert "spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9" in argv
    label = "appended to the driver's class path (SPARK_DIST_CLASSPATH): "
    assert appended.startswith(label), result.stdout
    assert appended.removeprefix(label).split(":") == appended_class_path(extra)


def test_configuration_loads_from_the_archive_alone(tmp_path: Path) -> None:
    """What a cluster-mode driver has: the zip, no checkout. conf/ layers come from inside it."""
    from jobs.bundle import build_archive

    archive = build_archive(tmp_path / "dist")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import sales_core.config as c\n"
        "assert c.__file__.startswith(sys.argv[1]), c.__file__\n"
        "conf = c.load_config(env_name='cluster', environ={})\n"
        "print(conf.spark.shuffle_partitions, conf.spark.master == '', conf.quality.min_score)\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, str(archive)],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["64", "True", "80.0"]  # conf/cluster.toml over conf/base.toml


def test_bad_job_arguments_fail_before_spark_starts() -> None:
    result = subprocess.run(
        [str(SUBMIT), "batch", "--no-such-flag"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr


def _inputs(landing: Path, kafka: Any) -> Ledger:
    """Landing files (jsonl and csv, dirty) and Kafka messages on 3 partitions: new events, bad
    records, and copies of events the landing files also bring (they must count once). Returns
    the oracle over them: the landing files first (the batch runs first), then the topic, each
    message as its JSON value reads."""
    from devtools.writers import publish_records

    now = datetime.now(timezone.utc)
    end = now - timedelta(minutes=1)
    write_landing_files(
        generate_records(GeneratorSpec(events=1200, seed=11, end=end)),
        str(landing),
        fmt="jsonl",
        rows_per_file=400,
    )
    write_landing_files(
        generate_records(GeneratorSpec(events=600, seed=12, end=end)),
        str(landing),
        fmt="csv",
        rows_per_file=300,
    )
    streamed = list(generate_records(GeneratorSpec(events=900, seed=13, end=end)))
    streamed += list(
        generate_records(GeneratorSpec(events=100, seed=11, end=end))
    )  # in the landing files too
    assert publish_records(streamed, kafka, partitions=3) == 1000
    oracle = Ledger(now=now)
    for path in sorted(landing.iterdir()):
        for record in read_landing_file(path):
            oracle.add(record)
    for record in streamed:
        oracle.add(parse_json_text(to_json_line(record)))
    assert oracle.duplicates >= 100 and len(oracle.rejected) > 20, "every outcome exercised"
    return oracle


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_batch_and_speed_on_the_cluster_and_the_object_store_equal_the_oracle(
    s3_spark,
    object_store: minio.ObjectStore,
    make_config,
    standalone_cluster: Cluster,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    from tests.integration.test_speed_layer import merged_views

    spark = s3_spark
    topic = f"cluster-{uuid.uuid4().hex[:8]}"
    bucket = new_bucket(object_store)
    common = {
        "LAMBDA_SALES__SOURCES__KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LAMBDA_SALES__SOURCES__KAFKA__TOPIC": topic,
        "LAMBDA_SALES__SOURCES__KAFKA__DLQ_TOPIC": f"{topic}-dlq",
        "LAMBDA_SALES__SOURCES__KAFKA__MAX_OFFSETS_PER_TRIGGER": "600",  # two micro-batches
        "LAMBDA_SALES__QUALITY__MIN_SCORE": "0",
        "LAMBDA_SALES__SPARK__SHUFFLE_PARTITIONS": "4",
    }

    inputs = make_config(root=tmp_path / "inputs", **common)
    oracle = _inputs(Path(inputs.sources.files.landing), inputs.sources.kafka)
    landed = minio.upload_tree(object_store, Path(inputs.sources.files.landing), bucket, "landing")
    assert len(landed) == 5

    # The cluster: both jobs through spark-submit.sh; tables, checkpoint and ledger on the
    # store. The submitting shell has no credential: the cluster's machines carry them.
    root = f"s3a://{bucket}/lakehouse"
    cluster_env = {
        **common,
        "LAMBDA_SALES__LAKEHOUSE__ROOT": root,
        "LAMBDA_SALES__SOURCES__FILES__LANDING": f"s3a://{bucket}/landing",
        "LAMBDA_SALES__LAKEHOUSE__S3__ENDPOINT": object_store.endpoint,
        "LAMBDA_SALES__LAKEHOUSE__S3__REGION": minio.REGION,
        "LAMBDA_SALES__LAKEHOUSE__S3__PATH_STYLE": "true",
        **object_store.env(),  # the driver's machine carries them too (client mode)
    }
    driver_dir = tmp_path / "driver"
    driver_dir.mkdir()
    batch = submit(standalone_cluster, cluster_env, "batch", "--quiet", cwd=driver_dir)
    assert "succeeded" in batch.stdout
    speed = submit(
        standalone_cluster, cluster_env, "speed", "--available-now", "--quiet", cwd=driver_dir
    )
    assert "succeeded" in speed.stdout

    # Each application ran on both workers: 2 cores, one executor on each.
    apps = {a["name"]: a for a in standalone_cluster.state()["completedapps"]}
    for name in ("lambda-sales-batch", "lambda-sales-speed"):
        assert name in apps, list(apps)
        assert apps[name]["cores"] == WORKERS, apps[name]
    executor_dirs = [standalone_cluster.base / f"work-{i}" for i in range(WORKERS)]
    for work_dir in executor_dirs:  # each worker launched executors for both applications
        assert len([p for p in work_dir.iterdir() if p.name.startswith("app-")]) == 2, work_dir

    # Nothing on the driver's disk: its working directory is as it was, and no object on the
    # store (Delta logs, the stream's checkpoint, the ledger, run records) names a local path.
    assert list(driver_dir.iterdir()) == []
    keys = minio.list_keys(object_store, bucket, "lakehouse/")
    kinds = {k.split("/")[1] for k in keys}
    assert {"bronze", "speed", "meta", "gold", "serving", "spark-warehouse"} <= kinds, kinds
    assert any("/_checkpoint/offsets/" in k for k in keys), "no stream checkpoint on the store"
    assert any(k.startswith("lakehouse/meta/ingest_ledger/") for k in keys), "no ledger"
    local_paths = (str(tmp_path), "file:", str(Path.home()), "/tmp/")
    read = 0
    for key in keys:
        if key.endswith((".parquet", ".crc", "/")):
            continue
        text = minio.get_object(object_store, bucket, key).decode("utf-8", errors="replace")
        assert not any(p in text for p in local_paths), (key, text[:500])
        read += 1
    assert read > 40, read  # commits of every table, checkpoint offsets and commits

    # What the serving layer answers (both engines, checked equal) is the oracle's views; the
    # master dataset holds each valid event once, as the oracle has it; the quarantine holds
    # every reject, with its reason.
    on_cluster = Lakehouse(root)
    options = storage_options(s3_conf(object_store), root)
    assert merged_views(spark, on_cluster, options) == oracle.views()
    master = spark.read.format("delta").load(on_cluster.master_dataset)
    events = master.select("event_id", "amount", "quantity", "event_time").collect()
    assert len(events) == len({r["event_id"] for r in events}), "an event counted twice"
    assert {
        r["event_id"]: (r["amount"], r["quantity"], normalise_row(r["event_time"])) for r in events
    } == {i: (e["amount"], e["quantity"], e["event_time"]) for i, e in oracle.events.items()}
    # Both layers ingested: the stream's new events are in the master dataset as the speed's.
    by_layer = {
        r["ingest_layer"]: r["n"]
        for r in master.groupBy("ingest_layer").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    assert by_layer["batch"] > 1500 and by_layer["speed"] > 700, by_layer
    reasons = {
        r["reason"]: r["count"]
        for r in spark.read.format("delta")
        .load(on_cluster.quarantine)
        .groupBy("reason")
        .count()
        .collect()
    }
    assert reasons == oracle.reasons()
