"""Layered, typed configuration (CONTRACT §6).

- :mod:`~sales_core.config.schema`: the typed dataclasses (one per TOML table), ``Secret``
  and ``ConfigError``;
- :mod:`~sales_core.config.loader`: ``conf/`` layers → ``--conf`` file →
  ``LAMBDA_SALES__SECTION__KEY`` variables, validated into a :class:`Config`;
- :mod:`~sales_core.config.printer`: the configuration as TOML, secrets masked.

Everything is re-exported here: ``from sales_core.config import Config, load_config``.
"""

from __future__ import annotations

from sales_core.config.loader import (
    CONF_DIR,
    ENV_NAME_VAR,
    ENV_PREFIX,
    ENVIRONMENTS,
    load_config,
    resolve_location,
)
from sales_core.config.printer import dumps_toml, to_printable
from sales_core.config.schema import (
    PATH_KEYS,
    SECRET_KEYS,
    AirflowConf,
    AlertsConf,
    BatchConf,
    Config,
    ConfigError,
    FilesSourceConf,
    HttpSourceConf,
    JdbcSourceConf,
    KafkaSourceConf,
    LakehouseConf,
    LoggingConf,
    MaintenanceConf,
    QualityConf,
    S3Conf,
    Secret,
    ServingConf,
    SourcesConf,
    SparkConf,
    SpeedConf,
)

__all__ = [
    "CONF_DIR",
    "ENVIRONMENTS",
    "ENV_NAME_VAR",
    "ENV_PREFIX",
    "PATH_KEYS",
    "SECRET_KEYS",
    "AirflowConf",
    "AlertsConf",
    "BatchConf",
    "MaintenanceConf",
    "Config",
    "ConfigError",
    "FilesSourceConf",
    "HttpSourceConf",
    "JdbcSourceConf",
    "KafkaSourceConf",
    "LakehouseConf",
    "LoggingConf",
    "QualityConf",
    "S3Conf",
    "Secret",
    "ServingConf",
    "SourcesConf",
    "SparkConf",
    "SpeedConf",
    "dumps_toml",
    "load_config",
    "resolve_location",
    "to_printable",
]
