"""The database source: PostgreSQL ``sales_data`` over JDBC, read incrementally.

Rows are read when their watermark column (``sources.jdbc.watermark_column``, an ingestion
timestamp or sequence by default) lies in ``(low, high]``: ``low`` is the high-water mark of
the last epoch that took rows of the table, ``high`` the column's maximum when the epoch was
planned. Both are the entry's position in the ingest ledger (``watermark_low``,
``watermark_high``), so a rerun of a crashed epoch reads exactly the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import ClassVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch_layer.sources.base import Entry, SourcePlan
from sales_core.config import ConfigError, JdbcSourceConf, Secret, SourcesConf
from sales_core.errors import SourceError
from sales_core.events import parse_typed_records
from sales_core.lakehouse import Lakehouse
from sales_core.sql import string_literal

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


@dataclass(frozen=True)
class JdbcSource:
    url: str
    table: str
    user: str
    password: Secret
    watermark_column: str
    fetch_size: int
    key_column: str = "event_id"
    kind: ClassVar[str] = "jdbc"

    @classmethod
    def from_conf(cls, conf: JdbcSourceConf) -> JdbcSource:
        return cls(
            conf.url,
            conf.table,
            conf.user,
            conf.password,
            conf.watermark_column,
            conf.fetch_size,
            conf.key_column,
        )

    def __post_init__(self) -> None:
        for key, value in (
            ("table", self.table),
            ("watermark_column", self.watermark_column),
            ("key_column", self.key_column),
        ):
            if not _IDENTIFIER.match(value):
                raise ConfigError(
                    f"configuration key 'sources.jdbc.{key}' is not a plain SQL name: {value!r}"
                )
        if not self.url.startswith("jdbc:"):
            raise ConfigError(
                f"configuration key 'sources.jdbc.url' must start with 'jdbc:', got {redact(self.url)!r}"
            )

    def _reader(self, spark: SparkSession, query: str):  # type: ignore[no-untyped-def]
        return (
            spark.read.format("jdbc")
            .option("url", self.url)
            .option("query", query)
            .option("user", self.user)
            .option("password", self.password.get())
            .option("fetchsize", str(self.fetch_size))
            .option("driver", "org.postgresql.Driver")
        )

    def high_watermark(self, spark: SparkSession) -> str | None:
        """The watermark column's current maximum, as text (None for an empty table)."""
        query = f"SELECT CAST(MAX({self.watermark_column}) AS VARCHAR(64)) AS hwm FROM {self.table}"
        row = self._guard(lambda: self._reader(spark, query).load().first())
        return None if row is None else row["hwm"]

    def plan(self, spark: SparkSession, taken: Sequence[Entry], *, epoch: int) -> SourcePlan:
        """The rows above the last high-water mark of this table, up to its current maximum."""
        mine = [e for e in taken if e.name == self.table]
        low = mine[-1].fields["watermark_high"] if mine else None
        high = self.high_watermark(spark)
        if high is None or high == low:
            return SourcePlan((), f"database table {self.table}: nothing new")
        entry = Entry.of("jdbc", self.table, {"watermark_low": low, "watermark_high": high})
        return SourcePlan(
            (entry,), f"database rows with {self.watermark_column} in ({low}, {high}]"
        )

    def read(self, spark: SparkSession, entries: Sequence[Entry], *, epoch: int) -> DataFrame:
        return reduce(
            DataFrame.unionByName,
            [
                self.read_range(spark, e.fields.get("watermark_low"), e.fields["watermark_high"])
                for e in entries
            ],
        )

    def read_range(self, spark: SparkSession, low: str | None, high: str) -> DataFrame:
        """Envelopes of the rows whose watermark lies in ``(low, high]``."""
        condition = f"{self.watermark_column} <= {string_literal(high)}"
        if low is not None:
            condition = f"{self.watermark_column} > {string_literal(low)} AND {condition}"
        query = f"SELECT * FROM {self.table} WHERE {condition}"
        rows = self._guard(lambda: self._reader(spark, query).load())
        positioned = rows.select(
            "*",
            F.lit("jdbc").alias("source"),
            F.lit(self.table).alias("source_name"),
            F.lit(None).cast("int").alias("source_partition"),
            F.lit(None).cast("long").alias("source_offset"),
            _key(rows, self.key_column),
        )
        return parse_typed_records(positioned)

    def _guard(self, action):  # type: ignore[no-untyped-def]
        try:
            return action()
        except Exception as exc:  # Py4J/JDBC errors: reduce to the database's own message
            raise SourceError(
                f"cannot read database table {self.table} at {redact(self.url)}: {jdbc_reason(exc)}"
            ) from None


def source(sources: SourcesConf, lakehouse: Lakehouse) -> JdbcSource | None:
    """The registry's factory: the database, when ``sources.jdbc.enabled``."""
    return JdbcSource.from_conf(sources.jdbc) if sources.jdbc.enabled else None


def _key(rows: DataFrame, key_column: str):  # type: ignore[no-untyped-def]
    """The row's key (``sources.jdbc.key_column``) as text: its position in the table."""
    by_lower = {c.lower(): c for c in rows.columns}
    if key_column.lower() not in by_lower:
        raise SourceError(
            f"database table has no key column '{key_column}' (sources.jdbc.key_column)"
        )
    return F.col(by_lower[key_column.lower()]).cast("string").alias("source_key")


def redact(text: str) -> str:
    """Remove a password that may be embedded in a JDBC URL or message."""
    return re.sub(r"(?i)(password=)[^&;\s]*", r"\1***", text)


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain = [exc]
    while len(chain) < 20:
        nxt = getattr(chain[-1], "_cause", None) or chain[-1].__cause__
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    return chain


def jdbc_reason(exc: BaseException) -> str:
    """The most telling line of a JDBC failure: the driver's own message, not Spark's wrapper
    or the stack."""
    chain = _cause_chain(exc)
    if len(chain) > 1:
        innermost = [line.strip() for line in str(chain[-1]).splitlines() if line.strip()]
        if innermost:
            return redact(re.sub(r"^[\w.$]+(Exception|Error): ", "", innermost[0]))
    text = str(exc)
    for pattern in (
        r"PSQLException: ([^\n]+)",
        r"SQLException: ([^\n]+)",
        r"ConnectException: ([^\n]+)",
    ):
        match = re.search(pattern, text)
        if match:
            return redact(match.group(1).strip())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return redact(lines[0]) if lines else type(exc).__name__
