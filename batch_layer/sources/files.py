"""The landing-zone source: new ``*.jsonl``, ``*.csv`` and ``*.parquet`` files, read into envelopes.

A file is taken once: its ledger entry is its path with its size and modification time as
position, and a file whose path, size and time no epoch has taken (a new or rewritten
file) is new. Files are read through Spark on any Hadoop file system (local, ``s3a://``, ``abfss://``,
volumes); nothing here assumes the driver sees the files. Line numbers are exact: a text
file is read whole (one task a file) and split into lines, so producers should cut large
deliveries into several files.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from batch_layer.sources.base import Entry, SourcePlan, utc_text
from sales_core.config import SourcesConf, SparkConf
from sales_core.errors import SourceError
from sales_core.events import (
    ENVELOPE_SCHEMA,
    csv_header_fields,
    parse_csv_records,
    parse_json_records,
    parse_typed_records,
)
from sales_core.lakehouse import Lakehouse
from sales_core.local_rows import local_frame

log = logging.getLogger(__name__)

UNDECODABLE = "\ufffd"
FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}


@dataclass(frozen=True)
class LandingFile:
    path: str
    size: int
    modified_at: datetime

    @property
    def format(self) -> str | None:
        lowered = self.path.lower()
        for suffix, fmt in FORMATS.items():
            if lowered.endswith(suffix):
                return fmt
        return None


def list_landing_files(spark: SparkSession, landing: str) -> list[LandingFile]:
    """Every file under ``landing`` (recursively) with its size and modification time.

    Raises:
        SourceError: the landing location does not exist or cannot be listed.
    """
    try:
        listing = (
            spark.read.format("binaryFile")
            .option("recursiveFileLookup", "true")
            .load(landing)
            .select("path", "length", "modificationTime")  # content is never read
            .collect()
        )
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            raise SourceError(f"landing location does not exist: {landing}") from None
        raise SourceError(f"cannot list landing location {landing}: {first_line(exc)}") from None
    files = [LandingFile(r["path"], int(r["length"]), r["modificationTime"]) for r in listing]
    return sorted(files, key=lambda f: f.path)


def missing_local_landing(landing: str, spark: SparkConf) -> bool:
    """True when ``landing`` is a path of this machine's file system that does not exist.

    Only said for a local master whose default file system is this machine's: elsewhere a
    path without a scheme belongs to the cluster's default file system (HDFS, a volume), and
    any URI of another file system is for Spark to list.
    """
    if not spark.master.startswith("local") or "spark.hadoop.fs.defaultFS" in spark.conf:
        return False
    parsed = urlparse(landing)
    if parsed.scheme not in ("", "file"):
        return False
    return not Path(parsed.path if parsed.scheme else landing).exists()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _text_lines(spark: SparkSession, paths: list[str]) -> DataFrame:
    """(source_name, line number (1-based), line) for every non-blank line of the files."""
    whole = spark.read.text(paths, wholetext=True).select(
        F.col("_metadata.file_path").alias("source_name"), F.col("value")
    )
    lines = whole.select(
        "source_name", F.posexplode(F.split(F.col("value"), "\n")).alias("_pos", "line")
    )
    return lines.select(
        "source_name",
        (F.col("_pos") + 1).cast("long").alias("source_offset"),
        F.regexp_replace(F.col("line"), "\r$", "").alias("value"),
    ).where(F.col("value").rlike(r"\S"))


def _with_file_position(df: DataFrame) -> DataFrame:
    return df.select(
        F.lit("file").alias("source"),
        "source_name",
        F.lit(None).cast("int").alias("source_partition"),
        "source_offset",
        F.lit(None).cast("string").alias("source_key"),
        *[c for c in df.columns if c not in ("source_name", "source_offset")],
    )


def read_jsonl(spark: SparkSession, paths: list[str]) -> DataFrame:
    return (
        _with_file_position(_text_lines(spark, paths))
        .transform(parse_json_records("value"))
        .transform(flag_undecodable)
    )


def _header_lines(lines: DataFrame) -> list[Row]:
    """Each file's header: its first non-blank line (``header``) and that line's number (``at``)."""
    return (
        lines.groupBy("source_name")
        .agg(F.min_by("value", "source_offset").alias("header"), F.min("source_offset").alias("at"))
        .collect()
    )


def csv_headers(spark: SparkSession, paths: list[str]) -> dict[str, tuple[str, ...]]:
    """The header fields of each CSV file, by path as Spark names it.

    Raises:
        SourceError: a file cannot be read (gone, no permission).
    """
    try:
        rows = _header_lines(_text_lines(spark, paths))
    except Exception as exc:
        raise SourceError(f"cannot read CSV headers: {first_line(exc)}") from None
    return {r["source_name"]: tuple(csv_header_fields(r["header"])) for r in rows}


def flag_undecodable(envelopes: DataFrame) -> DataFrame:
    """A line that was not valid UTF-8 (decoded with U+FFFD in place of its bytes) cannot be
    read as sent: it is ``malformed``, never an event with mangled text."""
    return envelopes.withColumn(
        "malformed",
        F.col("malformed") | F.coalesce(F.col("raw_record").contains(UNDECODABLE), F.lit(False)),
    )


def read_csv(spark: SparkSession, paths: list[str]) -> DataFrame:
    """CSV files, each with a header row; files are grouped by header and parsed per group."""
    lines = _text_lines(spark, paths)
    first_lines = _header_lines(lines)
    by_header: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for row in first_lines:
        by_header[tuple(csv_header_fields(row["header"]))].append((row["source_name"], row["at"]))
    parts = []
    for header, files in by_header.items():
        names = [name for name, _ in files]
        header_at = F.create_map(*[x for name, at in files for x in (F.lit(name), F.lit(at))])
        body = lines.where(F.col("source_name").isin(names)).where(
            F.col("source_offset") != header_at[F.col("source_name")]
        )
        parts.append(
            _with_file_position(body)
            .transform(parse_csv_records(header, "value"))
            .transform(flag_undecodable)
        )
    return _union(spark, parts)


def read_parquet(spark: SparkSession, paths: list[str]) -> tuple[DataFrame, list[str]]:
    """Parquet files by row; returns the envelopes and the files whose footer is unreadable."""
    parts = []
    corrupt = []
    for path in paths:
        try:
            frame = spark.read.parquet(path)
            frame.schema  # noqa: B018 - reads the footer now, so a corrupt file is caught here
        except Exception as exc:  # a corrupt file is data, not a fatal error
            log.warning("corrupt parquet file %s: %s", path, first_line(exc))
            corrupt.append(path)
            continue
        positioned = frame.select(
            "*",
            F.col("_metadata.file_path").alias("source_name"),
            F.col("_metadata.row_index").cast("long").alias("source_offset"),
        )
        parts.append(parse_typed_records(_with_file_position(positioned)))
    return _union(spark, parts), corrupt


def corrupt_file_records(spark: SparkSession, paths: list[str]) -> DataFrame:
    """One malformed envelope per unreadable file: its first bytes as the raw record."""
    if not paths:
        return local_frame(spark, [], ENVELOPE_SCHEMA)
    raw = (
        spark.read.format("binaryFile")
        .load(paths)
        .select(
            F.lit("file").alias("source"),
            F.col("path").alias("source_name"),
            F.lit(None).cast("int").alias("source_partition"),
            F.lit(0).cast("long").alias("source_offset"),
            F.lit(None).cast("string").alias("source_key"),
            F.base64(F.substring(F.col("content"), 1, 1024)).alias("raw_record"),
            F.lit(True).alias("malformed"),
            *[F.lit(None).cast("string").alias(f) for f in ENVELOPE_SCHEMA.fieldNames()[7:]],
        )
    )
    return raw


def _union(spark: SparkSession, parts: list[DataFrame]) -> DataFrame:
    if not parts:
        return local_frame(spark, [], ENVELOPE_SCHEMA)
    return reduce(DataFrame.unionByName, parts)


def read_landing_files(spark: SparkSession, files: list[LandingFile]) -> DataFrame:
    """Envelopes for every record of ``files`` (jsonl, csv, parquet).

    Raises:
        SourceError: a file cannot be read at all (permissions, vanished, I/O error).
    """
    by_format: dict[str, list[str]] = defaultdict(list)
    for f in files:
        if f.format:
            by_format[f.format].append(f.path)
    parts = []
    try:
        if by_format["jsonl"]:
            parts.append(read_jsonl(spark, by_format["jsonl"]))
        if by_format["csv"]:
            parts.append(read_csv(spark, by_format["csv"]))
        if by_format["parquet"]:
            parquet, corrupt = read_parquet(spark, by_format["parquet"])
            parts.extend([parquet, corrupt_file_records(spark, corrupt)])
    except AnalysisException as exc:
        raise SourceError(f"cannot read landing files: {first_line(exc)}") from None
    return _union(spark, parts)


@dataclass(frozen=True)
class FilesSource:
    """The landing zone (``sources.files.landing``) as a batch source."""

    landing: str
    kind: ClassVar[str] = "file"

    def plan(self, spark: SparkSession, taken: Sequence[Entry], *, epoch: int) -> SourcePlan:
        listing = list_landing_files(spark, self.landing)
        seen = {(e.name, e.fields.get("size"), e.fields.get("modified_at")) for e in taken}
        new = [f for f in listing if f.format and _identity(f) not in seen]
        return SourcePlan(
            tuple(file_entry(f) for f in new), f"{len(listing)} files in landing, {len(new)} new"
        )

    def read(self, spark: SparkSession, entries: Sequence[Entry], *, epoch: int) -> DataFrame:
        files = [
            LandingFile(
                e.name, int(e.fields["size"]), datetime.fromisoformat(e.fields["modified_at"])
            )
            for e in entries
        ]
        return read_landing_files(spark, files)


def _identity(f: LandingFile) -> tuple[str, int, str]:
    return (f.path, f.size, utc_text(f.modified_at))


def file_entry(f: LandingFile) -> Entry:
    """The ledger entry of a landing file: its path, size and modification time."""
    return Entry.of("file", f.path, {"size": f.size, "modified_at": utc_text(f.modified_at)})


def source(sources: SourcesConf, lakehouse: Lakehouse) -> FilesSource:
    """The registry's factory: the landing zone is always a source."""
    return FilesSource(sources.files.landing)
