"""CONTRACT §6: layered configuration, validation messages, secrets. No Spark needed.

The layering tests rely on the shipped defaults: conf/base.toml (shuffle_partitions = 8,
app_name = "lambda-sales", serving.port = 8000, logging.format = "json"), conf/local.toml
(shuffle_partitions = 4, logging.format = "text") and conf/cluster.toml (shuffle_partitions = 64).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sales_core.config import ConfigError, Secret, dumps_toml, load_config, to_printable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.unit


def write_conf(tmp_path: Path, text: str, name: str = "override.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- layering: base < environment file < --conf file < LAMBDA_SALES__ variables ---------------


def test_base_then_local_environment_file() -> None:
    config = load_config(environ={})
    assert config.spark.shuffle_partitions == 4  # local.toml over base.toml's 8
    assert config.logging.format == "text"  # local.toml over base.toml's "json"
    assert config.spark.app_name == "lambda-sales"  # only in base.toml
    assert config.serving.port == 8000  # only in base.toml
    assert config.sources.kafka.topic == "sales-events"


@pytest.mark.parametrize(
    "how",
    [
        pytest.param({"env_name": "cluster", "environ": {}}, id="argument"),
        pytest.param({"environ": {"LAMBDA_SALES_ENV": "cluster"}}, id="LAMBDA_SALES_ENV"),
    ],
)
def test_cluster_environment_file(how: dict) -> None:
    config = load_config(**how)
    assert config.spark.shuffle_partitions == 64
    assert config.spark.master == ""
    assert config.logging.format == "json"
    assert config.serving.port == 8000


def test_conf_file_over_environment_file(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[spark]\nshuffle_partitions = 7\n\n[serving]\nport = 9001\n")
    config = load_config(conf, environ={})
    assert config.spark.shuffle_partitions == 7
    assert config.serving.port == 9001
    assert config.logging.format == "text"  # untouched keys keep the lower layers' values
    assert config.spark.app_name == "lambda-sales"


def test_environment_variables_over_conf_file(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[spark]\nshuffle_partitions = 7\n\n[serving]\nport = 9001\n")
    config = load_config(
        conf,
        environ={
            "LAMBDA_SALES__SPARK__SHUFFLE_PARTITIONS": "11",
            "LAMBDA_SALES__SOURCES__KAFKA__TOPIC": "orders",
            "UNRELATED_VARIABLE": "ignored",
        },
    )
    assert config.spark.shuffle_partitions == 11
    assert config.serving.port == 9001
    assert config.sources.kafka.topic == "orders"
    assert config.sources.kafka.dlq_topic == "sales-events-dlq"


def test_relative_paths_resolve_against_working_directory_and_uris_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={"LAMBDA_SALES__SOURCES__FILES__LANDING": "s3a://bucket/landing"})
    assert config.lakehouse.root == str(tmp_path.resolve() / "lakehouse")
    assert config.sources.files.landing == "s3a://bucket/landing"


def test_spark_conf_keys_from_environment_keep_their_case() -> None:
    """Spark setting names are case-sensitive; [spark.conf] passes them through as given."""
    config = load_config(
        environ={
            "LAMBDA_SALES__SPARK__CONF__spark.sql.adaptive.coalescePartitions.enabled": "false"
        }
    )
    assert config.spark.conf["spark.sql.adaptive.coalescePartitions.enabled"] == "false"
    assert "spark.sql.adaptive.coalescepartitions.enabled" not in config.spark.conf


# --- errors ------------------------------------------------------------------------------------


def test_unknown_key_in_conf_file_is_named(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[spark]\nshuffle_partition = 3\n")
    with pytest.raises(ConfigError, match=r"unknown configuration key 'spark\.shuffle_partition'"):
        load_config(conf, environ={})


def test_unknown_section_in_conf_file_is_named(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[sparks]\nmaster = 'local[1]'\n")
    with pytest.raises(ConfigError, match=r"unknown configuration key 'sparks'"):
        load_config(conf, environ={})


def test_unknown_key_from_environment_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"LAMBDA_SALES__SERVING__PROT": "8001"})
    message = str(caught.value)
    assert "'serving.prot'" in message
    assert "LAMBDA_SALES__SERVING__PROT" in message


def test_wrong_type_from_environment_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"LAMBDA_SALES__SERVING__PORT": "eighty"})
    message = str(caught.value)
    assert "'serving.port'" in message
    assert "LAMBDA_SALES__SERVING__PORT" in message
    assert "\n" not in message


def test_wrong_type_in_conf_file_names_key_and_file(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, '[serving]\nport = "eighty"\n', name="my-site.toml")
    with pytest.raises(ConfigError) as caught:
        load_config(conf, environ={})
    message = str(caught.value)
    assert "'serving.port'" in message
    assert "my-site.toml" in message


def test_wrong_toml_type_names_key(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[serving]\nhost = 5\n")
    with pytest.raises(ConfigError, match=r"'serving\.host' must be of type str"):
        load_config(conf, environ={})


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[serving]\nport = true\n")
    with pytest.raises(ConfigError, match=r"'serving\.port' must be of type int"):
        load_config(conf, environ={})


def test_unknown_environment_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown environment 'prod'"):
        load_config(env_name="prod", environ={})


def test_missing_conf_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"configuration file not found"):
        load_config(tmp_path / "absent.toml", environ={})


def test_invalid_toml(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[spark\nmaster = \n")
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        load_config(conf, environ={})


def test_environment_variable_with_empty_level() -> None:
    with pytest.raises(ConfigError, match=r"LAMBDA_SALES__SPARK____MASTER"):
        load_config(environ={"LAMBDA_SALES__SPARK____MASTER": "local[1]"})


# --- parsing of environment values ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
    ],
)
def test_bool_from_environment(text: str, expected: bool) -> None:
    config = load_config(environ={"LAMBDA_SALES__SOURCES__JDBC__ENABLED": text})
    assert config.sources.jdbc.enabled is expected


def test_bad_bool_from_environment() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"LAMBDA_SALES__SOURCES__JDBC__ENABLED": "maybe"})
    message = str(caught.value)
    assert "'sources.jdbc.enabled'" in message
    assert "LAMBDA_SALES__SOURCES__JDBC__ENABLED" in message


def test_int_and_float_from_environment() -> None:
    config = load_config(
        environ={
            "LAMBDA_SALES__SERVING__PORT": "8080",
            "LAMBDA_SALES__SOURCES__JDBC__FETCH_SIZE": "250",
            "LAMBDA_SALES__QUALITY__MIN_SCORE": "90",
            "LAMBDA_SALES__ALERTS__TIMEOUT_SECONDS": "2.5",
        }
    )
    assert config.serving.port == 8080 and type(config.serving.port) is int
    assert config.sources.jdbc.fetch_size == 250
    assert config.quality.min_score == 90.0 and type(config.quality.min_score) is float
    assert config.alerts.timeout_seconds == 2.5


@pytest.mark.parametrize(
    ("variable", "text", "key"),
    [
        ("LAMBDA_SALES__SERVING__PORT", "80.5", "serving.port"),
        ("LAMBDA_SALES__BATCH__KEEP_GENERATIONS", "three", "batch.keep_generations"),
        ("LAMBDA_SALES__QUALITY__MIN_SCORE", "high", "quality.min_score"),
    ],
)
def test_bad_number_from_environment(variable: str, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={variable: text})
    message = str(caught.value)
    assert f"'{key}'" in message
    assert variable in message


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key", "variable"),
    [
        (
            '[sources.jdbc]\npassword = "hunter2-in-file"\n',
            "sources.jdbc.password",
            "LAMBDA_SALES__SOURCES__JDBC__PASSWORD",
        ),
        (
            '[sources.kafka]\nsasl_password = "hunter2-in-file"\n',
            "sources.kafka.sasl_password",
            "LAMBDA_SALES__SOURCES__KAFKA__SASL_PASSWORD",
        ),
        (
            '[alerts]\nwebhook_url = "https://hooks.example/hunter2-in-file"\n',
            "alerts.webhook_url",
            "LAMBDA_SALES__ALERTS__WEBHOOK_URL",
        ),
    ],
)
def test_secret_in_conf_file_is_rejected_without_echoing_it(
    tmp_path: Path, toml: str, key: str, variable: str
) -> None:
    conf = write_conf(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        load_config(conf, environ={})
    message = str(caught.value)
    assert f"'{key}'" in message
    assert variable in message
    assert "hunter2-in-file" not in message


SECRET_ENV = {
    "LAMBDA_SALES__SOURCES__JDBC__PASSWORD": "pw-Zq9-jdbc-secret",
    "LAMBDA_SALES__SOURCES__KAFKA__SASL_PASSWORD": "pw-Zq9-sasl-secret",
    "LAMBDA_SALES__ALERTS__WEBHOOK_URL": "https://hooks.example/T000/pw-Zq9-hook-secret",
}


def test_secrets_from_environment_are_usable() -> None:
    config = load_config(environ=SECRET_ENV)
    assert isinstance(config.sources.jdbc.password, Secret)
    assert config.sources.jdbc.password.get() == "pw-Zq9-jdbc-secret"
    assert config.sources.kafka.sasl_password.get() == "pw-Zq9-sasl-secret"
    assert config.alerts.webhook_url.get() == "https://hooks.example/T000/pw-Zq9-hook-secret"


def test_secrets_are_masked_everywhere_they_could_be_shown() -> None:
    config = load_config(environ=SECRET_ENV)
    printable = to_printable(config)
    assert printable["sources"]["jdbc"]["password"] == "***"
    assert printable["sources"]["kafka"]["sasl_password"] == "***"
    assert printable["alerts"]["webhook_url"] == "***"
    for shown in (
        str(config),
        repr(config),
        str(printable),
        dumps_toml(printable),
        str(config.sources.jdbc),
        repr(config.sources.jdbc.password),
    ):
        assert "pw-Zq9" not in shown


def test_unset_secret_prints_empty() -> None:
    config = load_config(environ={})
    assert not config.sources.jdbc.password
    assert to_printable(config)["sources"]["jdbc"]["password"] == ""


def test_printed_configuration_is_valid_toml_of_the_same_values() -> None:
    printable = to_printable(
        load_config(environ={"LAMBDA_SALES__SPARK__CONF__SPARK.UI.PORT": "4050"})
    )
    assert tomllib.loads(dumps_toml(printable)) == printable


# --- keys with a fixed set of values ----------------------------------------------------------


def test_logging_choices_are_matched_without_regard_to_case() -> None:
    config = load_config(
        environ={"LAMBDA_SALES__LOGGING__LEVEL": "debug", "LAMBDA_SALES__LOGGING__FORMAT": "JSON"}
    )
    assert (config.logging.level, config.logging.format) == ("DEBUG", "json")


@pytest.mark.parametrize(
    ("variable", "text", "key"),
    [
        ("LAMBDA_SALES__LOGGING__LEVEL", "verbose", "logging.level"),
        ("LAMBDA_SALES__LOGGING__FORMAT", "xml", "logging.format"),
    ],
)
def test_value_outside_the_choices_names_key_and_variable(
    variable: str, text: str, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={variable: text})
    message = str(caught.value)
    assert f"'{key}' must be one of" in message
    assert variable in message and repr(text) in message
    assert "\n" not in message


def test_value_outside_the_choices_in_conf_file_names_the_file(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, '[logging]\nformat = "yaml"\n', name="site.toml")
    with pytest.raises(
        ConfigError, match=r"'logging\.format' must be one of json, text.*site\.toml"
    ):
        load_config(conf, environ={})


def test_secret_keys_are_the_secret_fields_of_the_schema() -> None:
    from sales_core.config import SECRET_KEYS

    assert {
        "sources.jdbc.password",
        "sources.kafka.sasl_password",
        "alerts.webhook_url",
        "airflow.password",
    } <= SECRET_KEYS
    config = load_config(environ={})
    for key in SECRET_KEYS:
        value: object = config
        for part in key.split("."):
            value = getattr(value, part)
        assert isinstance(value, Secret), key
    assert "sources.jdbc.user" not in SECRET_KEYS
