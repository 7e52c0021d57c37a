"""Realistic synthetic sales, seeded: the same seed gives the same events.

A configurable share of records is bad (each kind of rejection of CONTRACT §1), duplicated
(the same event again, as at-least-once producers do) or late (an ``event_time`` days back).
Events are plain dicts of JSON-ready values; writers for landing files and PostgreSQL live
beside the generator, the Kafka publisher in the speed layer.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

CATEGORIES = {  # category: (typical amount, spread)
    "electronics": (320.0, 1.1),
    "clothing": (45.0, 0.7),
    "home": (80.0, 0.9),
    "grocery": (25.0, 0.6),
    "toys": (30.0, 0.7),
    "books": (18.0, 0.5),
    "sports": (60.0, 0.9),
    "beauty": (28.0, 0.6),
}
REGIONS = ("north", "south", "east", "west", "central")
CHANNELS = ("web", "mobile", "store", "marketplace")
FIELDS = (
    "event_id",
    "order_id",
    "product_id",
    "customer_id",
    "category",
    "region",
    "channel",
    "quantity",
    "amount",
    "event_time",
)

BAD_KINDS = (
    "missing_event_id",
    "missing_order_id",
    "blank_product_id",
    "missing_quantity",
    "text_quantity",
    "zero_quantity",
    "missing_amount",
    "text_amount",
    "negative_amount",
    "huge_amount",
    "missing_event_time",
    "bad_event_time",
    "ancient_event_time",
    "future_event_time",
    "malformed",
)


@dataclass(frozen=True)
class GeneratorSpec:
    events: int = 10_000
    seed: int = 42
    bad_share: float = 0.02
    duplicate_share: float = 0.02
    late_share: float = 0.05
    days: int = 7
    customers: int = 5_000
    products: int = 1_000
    end: datetime | None = None  # newest event time (default: now, minus a minute)
    id_prefix: str = "ev"

    def __post_init__(self) -> None:
        for name in ("bad_share", "duplicate_share", "late_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.events < 0:
            raise ValueError(f"events must be >= 0, got {self.events}")


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def generate_records(spec: GeneratorSpec) -> Iterator[dict[str, Any] | str]:
    """Yield ``spec.events`` records: dicts, or a raw string for a malformed record."""
    rng = random.Random(spec.seed)
    end = spec.end or datetime.now(timezone.utc) - timedelta(minutes=1)
    window = timedelta(days=spec.days).total_seconds()
    recent: list[dict[str, Any]] = []
    for i in range(spec.events):
        roll = rng.random()
        if recent and roll < spec.duplicate_share:
            yield dict(rng.choice(recent))
            continue
        category = rng.choice(list(CATEGORIES))
        typical, spread = CATEGORIES[category]
        amount = Decimal(
            str(round(rng.lognormvariate(0, spread) * typical, rng.choice((2, 2, 2, 3))))
        )
        if rng.random() < spec.late_share:
            event_time = end - timedelta(days=spec.days + rng.uniform(1, 60))
        else:
            event_time = end - timedelta(seconds=rng.uniform(0, window))
        record: dict[str, Any] = {
            "event_id": f"{spec.id_prefix}-{spec.seed}-{i:09d}",
            "order_id": f"o-{spec.seed}-{i // 2:09d}",
            "product_id": f"p{rng.randrange(spec.products):05d}",
            "customer_id": f"c{rng.randrange(spec.customers):06d}" if rng.random() > 0.01 else None,
            "category": category if rng.random() > 0.05 else f"  {category.title()} ",
            "region": rng.choice(REGIONS),
            "channel": rng.choice(CHANNELS),
            "quantity": rng.choice((1, 1, 1, 2, 2, 3, 4, 5)),
            "amount": float(amount) if rng.random() < 0.7 else str(amount),
            "event_time": _iso(event_time),
        }
        if roll > 1.0 - spec.bad_share:
            bad = _make_bad(record, rng.choice(BAD_KINDS), end, rng)
            yield bad
            continue
        recent.append(record)
        if len(recent) > 1000:
            recent.pop(rng.randrange(len(recent)))
        yield record


def _make_bad(
    record: dict[str, Any], kind: str, end: datetime, rng: random.Random
) -> dict[str, Any] | str:
    bad = dict(record)
    if kind == "malformed":
        return rng.choice(('{"event_id": "broken', "not json at all", "[1, 2, 3]", "42"))
    field, value = {
        "missing_event_id": ("event_id", None),
        "missing_order_id": ("order_id", None),
        "blank_product_id": ("product_id", "   "),
        "missing_quantity": ("quantity", None),
        "text_quantity": ("quantity", "two"),
        "zero_quantity": ("quantity", 0),
        "missing_amount": ("amount", None),
        "text_amount": ("amount", "12,50 EUR"),
        "negative_amount": ("amount", -abs(float(record["amount"]))),
        "huge_amount": ("amount", 2_500_000.0),
        "missing_event_time": ("event_time", None),
        "bad_event_time": ("event_time", "yesterday at noon"),
        "ancient_event_time": ("event_time", "1999-06-30T12:00:00Z"),
        "future_event_time": ("event_time", _iso(end + timedelta(days=2))),
    }[kind]
    if value is None:
        bad.pop(field)
    else:
        bad[field] = value
    return bad


def to_json_line(record: dict[str, Any] | str) -> str:
    return record if isinstance(record, str) else json.dumps(record, separators=(",", ":"))


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
