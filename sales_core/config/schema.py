"""The configuration's schema: typed dataclasses, one per TOML table (CONTRACT §6).

A field's type is what the loader accepts for its key; ``Secret`` fields may only come from
the environment; ``choices`` in a field's metadata lists the values it accepts (matched
without regard to case, stored as written here). Adding a table is adding a dataclass here
and its defaults to ``conf/base.toml``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration problem, explained in one line."""


class Secret:
    """A secret value: usable by code, never shown by ``str``/``repr``."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def choice(*values: str) -> typing.Any:
    """A field that accepts only ``values``."""
    return field(metadata={"choices": values})


# [lakehouse.s3]: how Spark (S3A) and delta-rs reach a lakehouse or landing zone on s3a://.
# Credentials never come from here: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or any source
# of the AWS default provider chain) in the environment.
@dataclass(frozen=True)
class S3Conf:
    endpoint: str  # empty: AWS's own endpoint for the region; else http(s)://host:port
    region: str
    path_style: bool  # path-style requests (http://host/bucket/key): most self-hosted stores


@dataclass(frozen=True)
class LakehouseConf:
    root: str
    s3: S3Conf


# ------------------------------------------------------------------ [sources.*]


@dataclass(frozen=True)
class FilesSourceConf:
    landing: str


@dataclass(frozen=True)
class KafkaSourceConf:
    bootstrap_servers: str
    topic: str
    dlq_topic: str
    starting_offsets: str
    max_offsets_per_trigger: int
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: Secret


@dataclass(frozen=True)
class JdbcSourceConf:
    enabled: bool
    url: str
    table: str
    user: str
    password: Secret
    watermark_column: str
    key_column: str
    fetch_size: int


# [sources.http]: a paged JSON API read incrementally by its cursor (batch_layer.sources.http).
@dataclass(frozen=True)
class HttpSourceConf:
    enabled: bool
    url: str
    cursor_param: str
    page_size: int
    records_field: str
    next_cursor_field: str
    token: Secret  # sent as "Authorization: Bearer"; LAMBDA_SALES__SOURCES__HTTP__TOKEN only
    timeout_seconds: float
    retries: int
    backoff_seconds: float


@dataclass(frozen=True)
class SourcesConf:
    files: FilesSourceConf
    kafka: KafkaSourceConf
    jdbc: JdbcSourceConf
    http: HttpSourceConf


# ------------------------------------------------------------------ the other tables


@dataclass(frozen=True)
class SparkConf:
    master: str
    app_name: str
    shuffle_partitions: int
    driver_memory: str
    conf: dict[str, str]


@dataclass(frozen=True)
class QualityConf:
    min_score: float


@dataclass(frozen=True)
class BatchConf:
    keep_generations: int
    max_conflict_retries: int


@dataclass(frozen=True)
class MaintenanceConf:
    # VACUUM keeps every file a table version of the last this many hours needs: a reader or
    # job pinned to a version younger than that is never broken. At least 1.
    vacuum_retention_hours: float


@dataclass(frozen=True)
class SpeedConf:
    trigger_interval: str
    compact_interval_seconds: float  # the job's compaction of its small files; 0: never
    broker_outage_seconds: float  # how long the job waits out an unreachable Kafka; 0: fail at once


@dataclass(frozen=True)
class ServingConf:
    host: str
    port: int
    # The console's judgement of the stream from its last micro-batch's age: running up to
    # stalled_after (at least 3 trigger intervals), stalled up to stopped_after, then stopped.
    stream_stalled_after_seconds: float
    stream_stopped_after_seconds: float


@dataclass(frozen=True)
class AlertsConf:
    webhook_url: Secret
    timeout_seconds: float
    retries: int
    backoff_seconds: float
    max_lag: int
    max_freshness_seconds: float
    min_interval_seconds: float


@dataclass(frozen=True)
class AirflowConf:
    url: str
    username: str
    password: Secret
    dag_id: str
    timeout_seconds: float
    poll_seconds: float


@dataclass(frozen=True)
class LoggingConf:
    """How the command's own log lines look on stderr (see :mod:`sales_core.logs`)."""

    level: str = choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    format: str = choice("json", "text")


@dataclass(frozen=True)
class Config:
    """The whole validated configuration of one command."""

    lakehouse: LakehouseConf
    sources: SourcesConf
    spark: SparkConf
    quality: QualityConf
    batch: BatchConf
    maintenance: MaintenanceConf
    speed: SpeedConf
    serving: ServingConf
    alerts: AlertsConf
    airflow: AirflowConf
    logging: LoggingConf


def _secret_keys(cls: type, prefix: str = "") -> frozenset[str]:
    keys: set[str] = set()
    for name, hint in typing.get_type_hints(cls).items():
        if hint is Secret:
            keys.add(prefix + name)
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            keys |= _secret_keys(hint, f"{prefix}{name}.")
    return frozenset(keys)


#: Keys that may only come from the environment (or a secret scope mapped into it): every
#: ``Secret`` field, e.g. ``sources.jdbc.password``.
SECRET_KEYS = _secret_keys(Config)
#: Keys holding local paths or URIs, resolved against the working directory when relative.
PATH_KEYS = frozenset({"lakehouse.root", "sources.files.landing"})
