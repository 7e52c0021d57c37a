"""The lakehouse on S3: URL mapping, delta-rs's storage options, Spark's S3A settings and the
``[lakehouse.s3]`` keys (pure functions; the server-side behaviour is in
tests/integration/test_object_store.py)."""

from __future__ import annotations

import pytest

from sales_core.config import ConfigError, S3Conf, load_config
from sales_core.object_store import (
    delta_rs_table,
    delta_rs_uri,
    is_s3,
    session_s3,
    spark_settings,
    spark_uri,
    storage_options,
)
from sales_core.packages import LOGSTORE_CLASS

pytestmark = pytest.mark.unit

MINIO = S3Conf(endpoint="http://127.0.0.1:9000", region="eu-west-1", path_style=True)
AWS = S3Conf(endpoint="", region="us-east-2", path_style=False)


@pytest.mark.parametrize(
    ("location", "spark", "delta_rs"),
    [
        ("s3a://bucket/lake/master", "s3a://bucket/lake/master", "s3://bucket/lake/master"),
        ("s3://bucket/lake", "s3a://bucket/lake", "s3://bucket/lake"),
        ("s3n://bucket/x", "s3a://bucket/x", "s3://bucket/x"),
        ("/data/lakehouse", "/data/lakehouse", "/data/lakehouse"),
        (
            "abfss://c@acct.dfs.core.windows.net/l",
            "abfss://c@acct.dfs.core.windows.net/l",
            "abfss://c@acct.dfs.core.windows.net/l",
        ),
        ("file:/tmp/l", "file:/tmp/l", "file:/tmp/l"),
    ],
)
def test_each_engine_names_a_location_its_way(location: str, spark: str, delta_rs: str) -> None:
    assert spark_uri(location) == spark
    assert delta_rs_uri(location) == delta_rs
    assert spark_uri(delta_rs_uri(location)) == spark


def test_only_s3_urls_are_s3() -> None:
    assert is_s3("s3a://b/k") and is_s3("s3://b/k")
    assert not is_s3("/tmp/s3a://x") and not is_s3("gs://b/k") and not is_s3("lakehouse")


def test_storage_options_for_a_self_hosted_store() -> None:
    assert storage_options(MINIO, "s3a://bucket/lake") == {
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
        "conditional_put": "etag",
    }


def test_storage_options_for_aws_carry_no_endpoint_and_no_credential() -> None:
    options = storage_options(AWS, "s3://bucket/lake")
    assert options == {"AWS_REGION": "us-east-2", "conditional_put": "etag"}


def test_no_storage_options_off_s3() -> None:
    assert storage_options(MINIO, "/tmp/lakehouse") is None
    assert delta_rs_table(MINIO, "/tmp/lakehouse") == ("/tmp/lakehouse", None)
    uri, options = delta_rs_table(MINIO, "s3a://b/lake")
    assert uri == "s3://b/lake" and options is not None and options["AWS_REGION"] == "eu-west-1"


def test_spark_settings_use_the_conditional_put_log_store() -> None:
    settings = spark_settings(MINIO)
    assert settings["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert settings["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert settings["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert settings["spark.delta.logStore.s3a.impl"] == LOGSTORE_CLASS
    assert settings["spark.delta.logStore.s3.impl"] == LOGSTORE_CLASS
    aws = spark_settings(AWS)
    assert "spark.hadoop.fs.s3a.endpoint" not in aws
    assert aws["spark.hadoop.fs.s3a.path.style.access"] == "false"
    assert not any("secret" in k.lower() or "access.key" in k.lower() for k in settings)


@pytest.mark.parametrize(
    ("s3", "message"),
    [
        (S3Conf("127.0.0.1:9000", "us-east-1", True), "'lakehouse.s3.endpoint' must be an http"),
        (S3Conf("", " ", False), "'lakehouse.s3.region' must not be empty"),
    ],
)
def test_unusable_settings_are_refused_naming_the_key(s3: S3Conf, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spark_settings(s3)
    with pytest.raises(ConfigError, match=message):
        storage_options(s3, "s3a://b/l")


def test_keys_and_environment_overrides() -> None:
    config = load_config(
        environ={
            "LAMBDA_SALES__LAKEHOUSE__ROOT": "s3a://bucket/lake",
            "LAMBDA_SALES__LAKEHOUSE__S3__ENDPOINT": "http://minio:9000",
            "LAMBDA_SALES__LAKEHOUSE__S3__PATH_STYLE": "true",
        }
    )
    assert config.lakehouse.root == "s3a://bucket/lake"
    assert config.lakehouse.s3 == S3Conf("http://minio:9000", "us-east-1", True)
    assert session_s3(config) == config.lakehouse.s3
    assert session_s3(load_config(environ={})) is None
    landing_only = load_config(environ={"LAMBDA_SALES__SOURCES__FILES__LANDING": "s3a://b/in"})
    assert session_s3(landing_only) == landing_only.lakehouse.s3


def test_a_credential_is_no_configuration_key() -> None:
    with pytest.raises(ConfigError, match="unknown configuration key 'lakehouse.s3.secret_key'"):
        load_config(environ={"LAMBDA_SALES__LAKEHOUSE__S3__SECRET_KEY": "x"})
    with pytest.raises(ConfigError, match="'lakehouse.s3.path_style' must be true or false"):
        load_config(environ={"LAMBDA_SALES__LAKEHOUSE__S3__PATH_STYLE": "maybe"})


def test_the_cluster_layer_commits_with_the_conditional_put_log_store() -> None:
    conf = load_config(env_name="cluster", environ={}).spark.conf
    assert conf["spark.delta.logStore.s3a.impl"] == LOGSTORE_CLASS
    assert conf["spark.delta.logStore.s3.impl"] == LOGSTORE_CLASS
    databricks = load_config(env_name="databricks", environ={}).spark.conf
    assert not any(k.startswith("spark.delta.logStore") for k in databricks)


def test_spark_submit_gets_the_s3_settings_only_for_a_lakehouse_on_s3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sales_core.object_store import main

    monkeypatch.setenv("LAMBDA_SALES__LAKEHOUSE__ROOT", "/data/lakehouse")
    assert main(["spark-conf"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("LAMBDA_SALES__LAKEHOUSE__ROOT", "s3a://bucket/lake")
    monkeypatch.setenv("LAMBDA_SALES__LAKEHOUSE__S3__ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-setting-s3cr3t")
    assert main(["spark-conf"]) == 0
    printed = capsys.readouterr().out
    assert f"spark.delta.logStore.s3a.impl={LOGSTORE_CLASS}\n" in printed
    assert "spark.hadoop.fs.s3a.endpoint=http://minio:9000\n" in printed
    assert "s3cr3t" not in printed
    monkeypatch.setenv("LAMBDA_SALES__LAKEHOUSE__S3__ENDPOINT", "minio:9000")
    assert main(["spark-conf"]) == 2
    assert "'lakehouse.s3.endpoint' must be an http" in capsys.readouterr().err
