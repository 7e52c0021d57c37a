"""Landing files end to end, in-process (CONTRACT §1, §2): jsonl, csv and parquet read together,
bad records quarantined with their file and line, nothing lost, each file ingested once.

Every expectation below is worked out by hand from the records this module writes, following
the contract's table, not from the code under test.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

pytestmark = [pytest.mark.integration]


# --------------------------------------------------------------------------------------
# What we write
# --------------------------------------------------------------------------------------


def _json(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


def _event(event_id: str, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": event_id,
        "order_id": f"o-{event_id}",
        "product_id": f"p-{event_id}",
        "customer_id": f"c-{event_id}",
        "category": "books",
        "region": "north",
        "channel": "web",
        "quantity": 1,
        "amount": 10.0,
        "event_time": "2024-03-10T10:00:00Z",
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not _DROP}


_DROP = object()

# ---- a.jsonl (line numbers matter) ----
L001 = _event(
    "L-001", amount=1000.005, quantity=2, category="Electronics", event_time="2024-03-10T10:15:30Z"
)
L002 = _event(
    "L-002",
    customer_id="  c-2  ",
    category="  Books ",
    region=" SOUTH",
    channel="Mobile",
    amount="100.004",
    quantity="3",
    coupon="SPRING",
    nested={"a": 1},
)
L008 = _event("L-008", order_id=_DROP)  # missing_required:order_id
L009 = _event(
    "L-009", amount=0.005, event_time="2024-03-10T23:30:00-02:00"
)  # crosses midnight in UTC
L010 = _event("L-010", amount="250", event_time="2024-03-10T10:15:00")  # no zone: UTC
# A Latin-1 producer: the bytes of this line are not UTF-8 ("Müller" encoded as latin-1).
LATIN1_LINE = json.dumps(
    _event("E-003", customer_id="M\u00fcller"), separators=(",", ":"), ensure_ascii=False
).encode("latin-1")
assert b"\xfc" in LATIN1_LINE
JSONL_LINES: list[bytes] = [
    _json(L001).encode(),  # 1 valid
    _json(L002).encode(),  # 2 valid (extra fields ignored, trimming, lower-casing)
    b"",  # 3 blank: not a record
    b"    ",  # 4 blank: not a record
    b"not json",  # 5 malformed
    b'{"event_id": "L-006"',  # 6 truncated JSON: malformed
    b"[1, 2, 3]",  # 7 JSON but not an object: malformed
    _json(L008).encode(),  # 8 missing_required:order_id
    _json(L009).encode() + b"\r",  # 9 valid (CRLF line ending)
    _json(L010).encode(),  # 10 valid
]
# ---- edge.jsonl: the harder cases of "not a record" and "malformed" ----
E001 = _event("E-001", amount=1.0)
EDGE_LINES: list[bytes] = [
    _json(E001).encode(),  # 1 valid
    b" \t  ",  # 2 blank (spaces and a tab): not a record
    LATIN1_LINE,  # 3 not UTF-8: malformed
    b"not json",  # 4 malformed
]

# ---- b.csv: a different column order and an extra column ----
CSV_HEADER = [
    "amount",
    "event_time",
    "event_id",
    "extra_col",
    "order_id",
    "product_id",
    "quantity",
    "customer_id",
    "category",
    "region",
    "channel",
]


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def _csv_row(record: dict[str, Any], extra: str = "x") -> str:
    return _csv_line([extra if c == "extra_col" else record.get(c) for c in CSV_HEADER])


C001 = _event(
    "C-001",
    amount="45.5",
    quantity=4,
    region="West",
    channel="store",
    event_time="2024-03-11T08:05:00Z",
)
C003 = _event("C-003", quantity="two")  # invalid_type:quantity
C004 = _event(
    "C-004",
    category="Home, Garden",
    customer_id="",
    amount="1500.00",
    event_time="2024-04-02T12:00:00+00:00",
)  # a quoted comma; blank customer -> anonymous
CSV_LINES: list[str] = [
    ",".join(CSV_HEADER),  # 1 header
    _csv_row(C001),  # 2 valid
    _csv_row(L001),  # 3 duplicate of a.jsonl line 1 (same event)
    _csv_row(C003),  # 4 invalid_type:quantity
    _csv_row(C004),  # 5 valid
    "garbage",  # 6 a row that cannot be read (one token for 11 columns): malformed
]

# ---- c.parquet: typed columns (decimal amount, timestamp with zone), an extra column ----
P_ROWS = [
    # event_id, customer_id, quantity, amount, event_time (UTC), category
    (
        "P-001",
        "c-p1",
        3,
        Decimal("10.005"),
        datetime(2024, 5, 1, 12, 34, 56, 789000, tzinfo=timezone.utc),
        "Toys",
    ),
    (
        "P-002",
        "c-p2",
        1,
        Decimal("-1.000"),
        datetime(2024, 5, 1, 13, 0, tzinfo=timezone.utc),
        "toys",
    ),  # negative_amount
    (
        "P-003",
        "c-p3",
        0,
        Decimal("5.000"),
        datetime(2024, 5, 1, 14, 0, tzinfo=timezone.utc),
        "toys",
    ),  # invalid_quantity
    (
        "P-004",
        None,
        1,
        Decimal("150.000"),
        datetime(2024, 5, 2, 0, 0, 1, tzinfo=timezone.utc),
        "toys",
    ),  # anonymous
]
# ---- d.parquet: a timestamp without zone (means UTC) ----
D_ROW = ("P-101", "c-p101", 2, Decimal("7.125"), datetime(2024, 6, 1, 8, 0), "sports")

# ---- e.parquet: random bytes ----
CORRUPT_BYTES = random.Random(7).randbytes(3000)

# ---- files that are not landing files: never read ----
IGNORED = {
    "notes.txt": _json(_event("X-001")) + "\n",
    "README.md": _json(_event("X-002")) + "\n",
    "f.jsonl.tmp": _json(_event("X-003")) + "\n",
}

# ---- h.jsonl, delivered after the first two runs ----
H001 = _event("H-001", amount=3.333, event_time="2024-03-12T00:00:00Z")
L002_AGAIN = _event("L-002", amount=999.99)  # an event already ingested, arriving again


@dataclass(frozen=True)
class Expected:
    event_id: str
    order_id: str
    product_id: str
    customer_id: str
    category: str
    region: str
    channel: str
    quantity: int
    amount: Decimal
    event_time: str  # UTC, microseconds
    event_date: date
    event_hour: str
    month: str
    revenue_category: str


def _expected(
    record_id: str,
    customer: str,
    category: str,
    region: str,
    channel: str,
    quantity: int,
    amount: str,
    event_time: str,
    revenue_category: str,
) -> Expected:
    ts = datetime.fromisoformat(event_time)
    return Expected(
        record_id,
        f"o-{record_id}",
        f"p-{record_id}",
        customer,
        category,
        region,
        channel,
        quantity,
        Decimal(amount),
        ts.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        ts.date(),
        ts.replace(minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%S.%f"),
        ts.strftime("%Y-%m"),
        revenue_category,
    )


# Worked out by hand from the contract: trimming, lower-casing, defaults, HALF_UP rounding,
# UTC conversion, revenue_category thresholds (> 1000 high, > 100 medium).
EXPECTED_FIRST = {
    e.event_id: e
    for e in [
        _expected(
            "L-001",
            "c-L-001",
            "electronics",
            "north",
            "web",
            2,
            "1000.01",
            "2024-03-10T10:15:30",
            "high",
        ),
        _expected(
            "L-002", "c-2", "books", "south", "mobile", 3, "100.00", "2024-03-10T10:00:00", "low"
        ),
        _expected(
            "L-009", "c-L-009", "books", "north", "web", 1, "0.01", "2024-03-11T01:30:00", "low"
        ),
        _expected(
            "L-010",
            "c-L-010",
            "books",
            "north",
            "web",
            1,
            "250.00",
            "2024-03-10T10:15:00",
            "medium",
        ),
        _expected(
            "C-001", "c-C-001", "books", "west", "store", 4, "45.50", "2024-03-11T08:05:00", "low"
        ),
        _expected(
            "C-004",
            "anonymous",
            "home, garden",
            "north",
            "web",
            1,
            "1500.00",
            "2024-04-02T12:00:00",
            "high",
        ),
        Expected(
            "P-001",
            "o-P-001",
            "p-P-001",
            "c-p1",
            "toys",
            "east",
            "store",
            3,
            Decimal("10.01"),
            "2024-05-01T12:34:56.789000",
            date(2024, 5, 1),
            "2024-05-01T12:00:00.000000",
            "2024-05",
            "low",
        ),
        Expected(
            "P-004",
            "o-P-004",
            "p-P-004",
            "anonymous",
            "toys",
            "east",
            "store",
            1,
            Decimal("150.00"),
            "2024-05-02T00:00:01.000000",
            date(2024, 5, 2),
            "2024-05-02T00:00:00.000000",
            "2024-05",
            "medium",
        ),
        Expected(
            "P-101",
            "o-P-101",
            "p-P-101",
            "c-p101",
            "sports",
            "east",
            "store",
            2,
            Decimal("7.13"),
            "2024-06-01T08:00:00.000000",
            date(2024, 6, 1),
            "2024-06-01T08:00:00.000000",
            "2024-06",
            "low",
        ),
        _expected(
            "E-001", "c-E-001", "books", "north", "web", 1, "1.00", "2024-03-10T10:00:00", "low"
        ),
    ]
}
EXPECTED_H001 = _expected(
    "H-001", "c-H-001", "books", "north", "web", 1, "3.33", "2024-03-12T00:00:00", "low"
)

# (file name, source_offset or None, reason, event_id or None): every rejected record.
# source_offset is the 1-based line for text files; for parquet rows it is not asserted.
EXPECTED_QUARANTINE = [
    ("a.jsonl", 5, "malformed", None),
    ("a.jsonl", 6, "malformed", None),
    ("a.jsonl", 7, "malformed", None),
    ("a.jsonl", 8, "missing_required:order_id", "L-008"),
    ("b.csv", 4, "invalid_type:quantity", "C-003"),
    ("b.csv", 6, "malformed", None),
    ("c.parquet", None, "negative_amount", "P-002"),
    ("c.parquet", None, "invalid_quantity", "P-003"),
    ("e.parquet", None, "malformed", None),
    ("edge.jsonl", 3, "malformed", None),
    ("edge.jsonl", 4, "malformed", None),
]
# a.jsonl: 8 non-blank lines; edge.jsonl: 3; b.csv: 5 data rows; c.parquet: 4 rows; d.parquet: 1 row;
# e.parquet: 1 record (the unreadable file)
FIRST_READ = 8 + 3 + 5 + 4 + 1 + 1
FIRST_DUPLICATES = 1  # L-001 again in b.csv
assert FIRST_READ == len(EXPECTED_FIRST) + FIRST_DUPLICATES + len(EXPECTED_QUARANTINE)


def _write_parquet(path: Path, rows: list[tuple[Any, ...]], *, with_zone: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts_type = pa.timestamp("us", tz="UTC") if with_zone else pa.timestamp("us")
    table = pa.table(
        {
            # typed columns, deliberately in another order than the contract's
            "amount": pa.array([r[3] for r in rows], pa.decimal128(12, 3)),
            "event_time": pa.array([r[4] for r in rows], ts_type),
            "quantity": pa.array([r[2] for r in rows], pa.int32()),
            "event_id": pa.array([r[0] for r in rows], pa.string()),
            "order_id": pa.array([f"o-{r[0]}" for r in rows], pa.string()),
            "product_id": pa.array([f"p-{r[0]}" for r in rows], pa.string()),
            "customer_id": pa.array([r[1] for r in rows], pa.string()),
            "category": pa.array([r[5] for r in rows], pa.string()),
            "region": pa.array(["EAST"] * len(rows), pa.string()),
            "channel": pa.array([" store "] * len(rows), pa.string()),
            "store_no": pa.array(list(range(len(rows))), pa.int64()),
        }
    )
    pq.write_table(table, path)


def write_first_delivery(landing: Path) -> None:
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "a.jsonl").write_bytes(b"\n".join(JSONL_LINES) + b"\n")
    (landing / "edge.jsonl").write_bytes(b"\n".join(EDGE_LINES) + b"\n")
    (landing / "b.csv").write_text("\n".join(CSV_LINES) + "\n", encoding="utf-8")
    _write_parquet(landing / "c.parquet", P_ROWS, with_zone=True)
    _write_parquet(landing / "d.parquet", [D_ROW], with_zone=False)
    (landing / "e.parquet").write_bytes(CORRUPT_BYTES)
    for name, text in IGNORED.items():
        (landing / name).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------
# Running the batch and taking snapshots
# --------------------------------------------------------------------------------------


def _local_path(name: str | None) -> str:
    """A Spark file URI (``file:/x``, ``file:///x``) or a path, as a local path."""
    assert name is not None
    parsed = urlparse(name)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else name


@dataclass
class Snapshot:
    record: Any
    stored_run: dict[str, Any]
    master: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    ledger_files: list[str]


def _snapshot(spark, config, record) -> Snapshot:  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    from sales_core.lakehouse import Lakehouse

    lakehouse = Lakehouse(config.lakehouse.root)
    master = (
        spark.read.format("delta")
        .load(lakehouse.master_dataset)
        .withColumn("event_time", F.date_format("event_time", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"))
        .withColumn("event_hour", F.date_format("event_hour", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"))
        .withColumn("ingested_at", F.unix_micros("ingested_at"))
    )
    quarantine = (
        spark.read.format("delta")
        .load(lakehouse.quarantine)
        .withColumn("rejected_at", F.unix_micros("rejected_at"))
    )
    runs = (
        spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .where(F.col("run_id") == record.run_id)
    )
    ledger = (
        spark.read.format("delta")
        .load(lakehouse.ingest_ledger)
        .where((F.col("state") == "ingested") & (F.col("source") == "file"))
    )
    stored = runs.collect()
    assert len(stored) == 1, f"run {record.run_id} recorded {len(stored)} times"
    return Snapshot(
        record,
        stored[0].asDict(),
        sorted((r.asDict() for r in master.collect()), key=lambda r: r["event_id"]),
        sorted(
            (r.asDict() for r in quarantine.collect()),
            key=lambda r: (r["source_name"] or "", r["source_offset"] or -1, r["raw_record"] or ""),
        ),
        sorted(_local_path(r["name"]) for r in ledger.collect()),
    )


@pytest.fixture(scope="module")
def landing_runs(spark, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Three batch runs: first delivery; again with nothing new; after a new file arrived."""
    from batch_layer.job import run_batch
    from sales_core.config import load_config

    base = tmp_path_factory.mktemp("landing-files")
    landing = base / "landing"
    write_first_delivery(landing)
    conf = base / "conf.toml"
    conf.write_text(
        f'[lakehouse]\nroot = "{base / "lakehouse"}"\n\n'
        f'[sources.files]\nlanding = "{landing}"\n\n'
        "[quality]\nmin_score = 0.0\n",
        encoding="utf-8",
    )
    config = load_config(conf, environ={})
    first = _snapshot(spark, config, run_batch(spark, config))
    second = _snapshot(spark, config, run_batch(spark, config))
    (landing / "h.jsonl").write_text(
        _json(H001) + "\n\n" + _json(L002_AGAIN) + "\n", encoding="utf-8"
    )
    third = _snapshot(spark, config, run_batch(spark, config))
    return {"landing": landing, "runs": (first, second, third)}


def _master_as_expected(row: dict[str, Any]) -> Expected:
    return Expected(*(row[f] for f in Expected.__dataclass_fields__))


def _quarantine_key(row: dict[str, Any]) -> tuple[str, int | None, str]:
    return Path(_local_path(row["source_name"])).name, row["source_offset"], row["reason"]


# --------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------


def _file(row: dict[str, Any]) -> str:
    return Path(_local_path(row["source_name"])).name


def _not_edge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if _file(r) != "edge.jsonl"]


def test_first_run_counts_balance_and_match_what_was_written(landing_runs) -> None:  # type: ignore[no-untyped-def]
    first = landing_runs["runs"][0]
    record, stored = first.record, first.stored_run
    assert record.status == stored["status"] == "succeeded"
    for counts in (
        (record.records_read, record.valid, record.duplicates, record.quarantined),
        (stored["records_read"], stored["valid"], stored["duplicates"], stored["quarantined"]),
    ):
        read, valid, duplicates, quarantined = counts
        assert read == valid + duplicates + quarantined, counts
        assert valid == len(first.master) and quarantined == len(first.quarantine), counts
        assert counts == (
            FIRST_READ,
            len(EXPECTED_FIRST),
            FIRST_DUPLICATES,
            len(EXPECTED_QUARANTINE),
        )


def test_valid_events_from_all_three_formats_are_normalised(landing_runs) -> None:  # type: ignore[no-untyped-def]
    first = landing_runs["runs"][0]
    got = {r["event_id"]: _master_as_expected(r) for r in first.master}
    for event_id, expected in EXPECTED_FIRST.items():
        assert got.get(event_id) == expected, event_id
    main = {r["event_id"] for r in _not_edge(first.master)}
    assert sorted(main) == sorted(e for e in EXPECTED_FIRST if not e.startswith("E-"))
    by_id = {r["event_id"]: r for r in first.master}
    # Every valid event keeps its file (and line, for text files) as its position.
    assert (_file(by_id["L-001"]), by_id["L-001"]["source_offset"]) in {
        ("a.jsonl", 1),
        ("b.csv", 3),
    }
    assert _file(by_id["L-009"]) == "a.jsonl" and by_id["L-009"]["source_offset"] == 9
    assert by_id["L-010"]["source_offset"] == 10
    assert _file(by_id["C-004"]) == "b.csv" and by_id["C-004"]["source_offset"] == 5
    assert {_file(by_id[i]) for i in ("P-001", "P-004")} == {"c.parquet"}
    assert _file(by_id["P-101"]) == "d.parquet"
    assert {r["source"] for r in first.master} == {"file"}


def test_rejected_records_are_quarantined_with_file_line_and_reason(landing_runs) -> None:  # type: ignore[no-untyped-def]
    landing = landing_runs["landing"]
    first = landing_runs["runs"][0]
    rows = _not_edge(first.quarantine)
    got = sorted(
        (name, offset if not name.endswith(".parquet") else None, reason)
        for name, offset, reason in map(_quarantine_key, rows)
    )
    assert got == sorted((n, o, r) for n, o, r, _ in EXPECTED_QUARANTINE if n != "edge.jsonl")
    for row in first.quarantine:
        assert row["source"] == "file"
        assert row["rejected_at"] is not None
        assert Path(_local_path(row["source_name"])).parent == landing
    by_position = {(_file(r), r["source_offset"]): r for r in rows}
    # The raw record as received.
    assert by_position[("a.jsonl", 5)]["raw_record"] == "not json"
    assert by_position[("a.jsonl", 6)]["raw_record"] == '{"event_id": "L-006"'
    assert by_position[("a.jsonl", 7)]["raw_record"] == "[1, 2, 3]"
    assert by_position[("a.jsonl", 8)]["raw_record"] == _json(L008)
    assert by_position[("b.csv", 4)]["raw_record"] == _csv_row(C003)
    assert by_position[("b.csv", 6)]["raw_record"] == "garbage"
    parquet = {json.loads(r["raw_record"])["event_id"]: r for r in rows if _file(r) == "c.parquet"}
    assert sorted(parquet) == ["P-002", "P-003"]
    raw_p002 = json.loads(parquet["P-002"]["raw_record"], parse_float=Decimal)
    assert Decimal(str(raw_p002["amount"])) == Decimal("-1.000") and raw_p002["store_no"] == 1


def test_corrupt_parquet_file_is_one_malformed_record_and_does_not_fail_the_batch(
    landing_runs,
) -> None:  # type: ignore[no-untyped-def]
    landing = landing_runs["landing"]
    first = landing_runs["runs"][0]
    assert first.record.status == "succeeded"
    corrupt = [
        r for r in first.quarantine if _local_path(r["source_name"]) == str(landing / "e.parquet")
    ]
    assert len(corrupt) == 1
    assert corrupt[0]["reason"] == "malformed"
    assert corrupt[0]["raw_record"], "the quarantined record keeps (a prefix of) the file's bytes"
    assert CORRUPT_BYTES.startswith(base64.b64decode(corrupt[0]["raw_record"]))


def _edge_positions(first: Snapshot) -> tuple[dict[int, str], dict[int, str]]:
    master = {r["source_offset"]: r["event_id"] for r in first.master if _file(r) == "edge.jsonl"}
    quarantine = {
        r["source_offset"]: r["reason"] for r in first.quarantine if _file(r) == "edge.jsonl"
    }
    return master, quarantine


def test_edge_jsonl_not_json_and_non_utf8_lines_are_malformed_at_their_lines(landing_runs) -> None:  # type: ignore[no-untyped-def]
    first = landing_runs["runs"][0]
    master, quarantine = _edge_positions(first)
    assert master.get(1) == "E-001"
    assert quarantine.get(4) == "malformed"
    assert [
        r["raw_record"]
        for r in first.quarantine
        if (_file(r), r["source_offset"]) == ("edge.jsonl", 4)
    ] == ["not json"]
    accepted = [
        (r["event_id"], r["customer_id"])
        for r in first.master
        if (_file(r), r["source_offset"]) == ("edge.jsonl", 3)
    ]
    assert not accepted, (
        f"edge.jsonl line 3 is not UTF-8 (latin-1 byte 0xFC) but was accepted as a valid event: {accepted!r}"
    )
    assert quarantine.get(3) == "malformed"


def test_edge_jsonl_whitespace_only_line_is_not_a_record(landing_runs) -> None:  # type: ignore[no-untyped-def]
    first = landing_runs["runs"][0]
    master, quarantine = _edge_positions(first)
    assert 2 not in master
    assert 2 not in quarantine, (
        f"edge.jsonl line 2 holds only spaces and a tab (a blank line), yet it was read as a record "
        f"and quarantined as {quarantine.get(2)!r}"
    )


def test_blank_lines_and_other_extensions_are_not_records(landing_runs) -> None:  # type: ignore[no-untyped-def]
    first = landing_runs["runs"][0]
    offsets = {(_file(r), r["source_offset"]) for r in first.master + first.quarantine}
    assert ("a.jsonl", 3) not in offsets and ("a.jsonl", 4) not in offsets
    names = {_file(r) for r in first.master + first.quarantine}
    assert names == {"a.jsonl", "edge.jsonl", "b.csv", "c.parquet", "d.parquet", "e.parquet"}
    ids = {r["event_id"] for r in first.master}
    assert not ids & {"X-001", "X-002", "X-003"}
    assert all("X-00" not in (r["raw_record"] or "") for r in first.quarantine)
    assert sorted(Path(p).name for p in first.ledger_files) == sorted(
        ["a.jsonl", "edge.jsonl", "b.csv", "c.parquet", "d.parquet", "e.parquet"]
    )


def test_every_written_event_id_is_in_master_or_quarantine_or_counted_as_duplicate(
    landing_runs,
) -> None:  # type: ignore[no-untyped-def]
    first = landing_runs["runs"][0]
    written_ids = (
        [r["event_id"] for r in (L001, L002, L008, L009, L010, E001)]
        + ["E-003"]
        + [r["event_id"] for r in (C001, L001, C003, C004)]
        + [r[0] for r in P_ROWS]
        + [D_ROW[0]]
    )
    master_ids = [r["event_id"] for r in first.master]
    quarantined_ids = []
    for row in first.quarantine:
        name = _file(row)
        raw = row["raw_record"] or ""
        if name == "b.csv":
            values = next(csv.reader([raw]))
            if len(values) == len(CSV_HEADER):
                quarantined_ids.append(values[CSV_HEADER.index("event_id")])
        elif (name, row["source_offset"]) == ("edge.jsonl", 3):
            quarantined_ids.append(
                "E-003"
            )  # not UTF-8: found by its position, not by parsing it back
        elif name != "e.parquet":
            try:
                parsed = json.loads(raw)
            except ValueError:
                continue
            if isinstance(parsed, dict) and parsed.get("event_id"):
                quarantined_ids.append(parsed["event_id"])
    assert len(master_ids) == len(set(master_ids)), "an event is in the master dataset twice"
    assert not set(master_ids) & set(quarantined_ids), "a record is both valid and quarantined"
    accounted = sorted(master_ids + quarantined_ids)
    assert sorted(set(written_ids)) == sorted(set(accounted))
    duplicates = len(written_ids) - len(accounted)
    assert duplicates == first.record.duplicates == FIRST_DUPLICATES


def test_second_run_with_nothing_new_reads_nothing_and_changes_nothing(landing_runs) -> None:  # type: ignore[no-untyped-def]
    first, second, _ = landing_runs["runs"]
    assert second.record.status == "succeeded"
    assert (
        second.record.records_read,
        second.record.valid,
        second.record.duplicates,
        second.record.quarantined,
    ) == (0, 0, 0, 0)
    assert second.master == first.master
    assert second.quarantine == first.quarantine
    assert second.ledger_files == first.ledger_files


def test_new_file_is_ingested_once_and_an_old_event_again_is_a_duplicate(landing_runs) -> None:  # type: ignore[no-untyped-def]
    first, _, third = landing_runs["runs"]
    record = third.record
    assert record.status == "succeeded"
    assert (record.records_read, record.valid, record.duplicates, record.quarantined) == (
        2,
        1,
        1,
        0,
    )
    assert (
        third.stored_run["records_read"],
        third.stored_run["valid"],
        third.stored_run["duplicates"],
        third.stored_run["quarantined"],
    ) == (2, 1, 1, 0)
    got = {r["event_id"]: r for r in third.master}
    assert sorted(got) == sorted([*(r["event_id"] for r in first.master), "H-001"])
    assert set(EXPECTED_FIRST) <= set(got)
    assert _master_as_expected(got["H-001"]) == EXPECTED_H001
    # The first one ingested wins: L-002 keeps its first amount and ingest.
    old = {r["event_id"]: r for r in first.master}
    assert got["L-002"] == old["L-002"]
    assert [r for r in third.master if r["event_id"] != "H-001"] == first.master
    assert third.quarantine == first.quarantine
    assert sorted(Path(p).name for p in third.ledger_files) == sorted(
        ["a.jsonl", "edge.jsonl", "b.csv", "c.parquet", "d.parquet", "e.parquet", "h.jsonl"]
    )
    assert len(third.ledger_files) == len(set(third.ledger_files)), "a file was ingested twice"
