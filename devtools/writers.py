"""Where generated sales go: landing files, a PostgreSQL table or a Kafka topic.

Each writer takes the records of :func:`devtools.generator.generate_records` (dicts, or a
raw string for a malformed record) and writes them the way a real producer would:
landing files appear whole (written under a temporary name, then renamed), database rows
are typed (a record a typed table cannot hold is skipped and counted), Kafka messages are
keyed by ``event_id`` and acknowledged by every replica.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from devtools.generator import FIELDS, to_json_line
from sales_core.config import KafkaSourceConf
from sales_core.errors import SourceError
from speed_layer.kafka_client import MAX_REQUEST_BYTES, client_options, ensure_topic, unreachable

PROGRESS_EVERY = 50_000


def write_landing_files(
    records: Iterator[dict[str, Any] | str],
    landing: str | Path,
    *,
    fmt: str = "jsonl",
    rows_per_file: int = 50_000,
    prefix: str = "sales",
) -> list[Path]:
    """Write records as landing files (``jsonl``, ``csv`` or ``parquet``); returns the paths.

    Files are written under a temporary name and renamed, so the batch job never picks up a
    half-written file.
    """
    if fmt not in ("jsonl", "csv", "parquet"):
        raise ValueError(f"unknown landing format '{fmt}': choose jsonl, csv or parquet")
    directory = Path(landing)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    written: list[Path] = []
    chunk: list[dict[str, Any] | str] = []

    def flush() -> None:
        if not chunk:
            return
        path = directory / f"{prefix}-{stamp}-{len(written):05d}.{fmt}"
        tmp = directory / f".{path.name}.tmp"
        if fmt == "jsonl":
            tmp.write_text("".join(to_json_line(r) + "\n" for r in chunk), encoding="utf-8")
        elif fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(FIELDS)
            for r in chunk:
                if isinstance(r, str):
                    buffer.write(r.replace("\n", " ") + "\n")
                else:
                    writer.writerow(["" if r.get(f) is None else r.get(f) for f in FIELDS])
            tmp.write_text(buffer.getvalue(), encoding="utf-8")
        else:
            _write_parquet(tmp, [r for r in chunk if isinstance(r, dict)])
        tmp.rename(path)
        written.append(path)
        chunk.clear()

    for record in records:
        chunk.append(record)
        if len(chunk) >= rows_per_file:
            flush()
    flush()
    return written


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {f: [None if r.get(f) is None else str(r.get(f)) for r in rows] for f in FIELDS}
    pq.write_table(pa.table(columns), path)


DB_COLUMNS_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    row_id       BIGSERIAL PRIMARY KEY,
    event_id     TEXT,
    order_id     TEXT,
    product_id   TEXT,
    customer_id  TEXT,
    category     TEXT,
    region       TEXT,
    channel      TEXT,
    quantity     INTEGER,
    amount       NUMERIC(14, 4),
    event_time   TIMESTAMPTZ,
    ingested_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
)
"""


def to_db_row(record: dict[str, Any] | str) -> tuple[Any, ...] | None:
    """The record as a typed ``sales_data`` row; None when it cannot be typed (skipped)."""
    if isinstance(record, str):
        return None
    values = []
    for f in FIELDS:
        value = record.get(f)
        if f == "quantity" and value is not None:
            if not isinstance(value, int):
                return None
        if f == "amount" and value is not None:
            try:
                value = Decimal(str(value)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
            except ArithmeticError:
                return None
        if f == "event_time" and value is not None:
            try:
                value = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                return None
        values.append(value)
    return tuple(values)


def jdbc_url_parts(url: str) -> tuple[str, int, str]:
    """Host, port and database of a ``jdbc:postgresql://host:port/db`` URL."""
    from urllib.parse import urlparse

    if not url.startswith("jdbc:postgresql://"):
        raise ValueError(f"not a PostgreSQL JDBC URL: {url.split('?')[0]}")
    parsed = urlparse(url[len("jdbc:") :])
    return (
        parsed.hostname or "127.0.0.1",
        parsed.port or 5432,
        parsed.path.lstrip("/") or "postgres",
    )


def write_database(
    records: Iterator[dict[str, Any] | str],
    *,
    url: str,
    user: str,
    password: str,
    table: str,
    batch_size: int = 5_000,
) -> tuple[int, int]:
    """Insert records into PostgreSQL ``table`` (created if missing).

    Returns:
        (rows inserted, records skipped because a typed table cannot hold them).
    """
    import psycopg

    host, port, dbname = jdbc_url_parts(url)
    inserted = skipped = 0
    with psycopg.connect(host=host, port=port, dbname=dbname, user=user, password=password) as conn:
        conn.execute(DB_COLUMNS_DDL.format(table=table))  # table name validated by the caller
        placeholders = ", ".join(["%s"] * len(FIELDS))
        sql = f"INSERT INTO {table} ({', '.join(FIELDS)}) VALUES ({placeholders})"
        batch: list[tuple[Any, ...]] = []
        with conn.cursor() as cur:
            for record in records:
                row = to_db_row(record)
                if row is None:
                    skipped += 1
                    continue
                batch.append(row)
                if len(batch) >= batch_size:
                    cur.executemany(sql, batch)
                    inserted += len(batch)
                    batch.clear()
            if batch:
                cur.executemany(sql, batch)
                inserted += len(batch)
        conn.commit()
    return inserted, skipped


def publish_records(
    records: Iterable[dict[str, Any] | str],
    conf: KafkaSourceConf,
    *,
    partitions: int,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Publish records to ``conf.topic`` (created if missing); returns how many were sent.

    One JSON object per message, key = ``event_id`` (none for a record without one);
    batched (``linger_ms``, large batches) with ``acks=all``. Returns only once every
    message is acknowledged.

    Raises:
        SourceError: the brokers cannot be reached or a message was not acknowledged.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    ensure_topic(conf, conf.topic, partitions=partitions)
    try:
        producer = KafkaProducer(
            client_id="lambda-sales-generate",
            acks="all",
            linger_ms=20,
            batch_size=512 * 1024,
            max_request_size=MAX_REQUEST_BYTES,
            **client_options(conf),
        )
    except KafkaError as exc:
        raise unreachable(conf, exc) from None
    failures: list[BaseException] = []
    sent = 0
    started = time.monotonic()
    try:
        for record in records:
            key = record.get("event_id") if isinstance(record, dict) else None
            value = to_json_line(record).encode("utf-8")
            future = producer.send(
                conf.topic, key=None if key is None else str(key).encode("utf-8"), value=value
            )
            future.add_errback(failures.append)
            sent += 1
            if progress and sent % PROGRESS_EVERY == 0:
                rate = sent / max(time.monotonic() - started, 1e-9)
                progress(f"published {sent} records ({rate:,.0f}/s)")
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise SourceError(
            f"{len(failures)} of {sent} messages were not acknowledged by Kafka: {failures[0]}"
        )
    if progress:
        elapsed = time.monotonic() - started
        progress(
            f"published {sent} records to {conf.topic} in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):,.0f}/s)"
        )
    return sent
