"""The database source against a real PostgreSQL (CONTRACT §1, §2, §6): typed rows validated
like every other source, rejected rows quarantined with their table and raw row, incremental
reads by high-water mark, de-duplication across sources, and the password never shown.

Expected events, reasons and counts are worked out by hand from the rows inserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import environ_without_config, postgres_data_dir

pytestmark = [pytest.mark.integration]

PASSWORD = "test-secret-pw"
TABLE = "sales_data"
CLI = str(Path(sys.executable).with_name("lambda-sales"))
NOW = datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------
# The rows
# --------------------------------------------------------------------------------------


def row(event_id: str | None, **overrides: Any) -> dict[str, Any]:
    key = event_id or "none"
    record: dict[str, Any] = {
        "event_id": event_id,
        "order_id": f"o-{key}",
        "product_id": f"p-{key}",
        "customer_id": f"c-{key}",
        "category": "home",
        "region": "east",
        "channel": "web",
        "quantity": 1,
        "amount": Decimal("10.0000"),
        "event_time": "2024-07-01T10:00:00+00:00",
    }
    record.update(overrides)
    return record


FIRST_DB_ROWS = [
    row(
        "db-001",
        amount=Decimal("12.3450"),
        quantity=2,
        category="  Electronics ",
        region="North",
        channel="Store",
    ),
    row("db-002", amount=Decimal("0.0050"), event_time="2024-07-01T23:30:00-02:00"),
    row("db-003", amount=Decimal("1000.0050"), event_time="2024-08-15T00:00:00+00:00"),
    row(
        "db-004",
        customer_id=None,
        category=None,
        region="   ",
        channel=None,
        amount=Decimal("100.0049"),
    ),
    row("db-r01", amount=None),  # missing_required:amount
    row("db-r02", amount=Decimal("-5.0000")),  # negative_amount
    row("db-r03", quantity=0),  # invalid_quantity
    row(None),  # missing_required:event_id
    row(
        "db-r05", event_time=(NOW + timedelta(days=2)).replace(microsecond=0).isoformat()
    ),  # future_event_time
    row("db-r06", event_time="1999-12-31T23:59:59+00:00"),  # event_time_out_of_range
    row("db-r07", amount=Decimal("1000000.0100")),  # amount_out_of_range
    row("db-r08", quantity=-3),  # invalid_quantity
    row(
        "db-001",
        amount=Decimal("12.3450"),
        quantity=2,
        category="  Electronics ",
        region="North",
        channel="Store",
    ),
    row("shared-001", amount=Decimal("33.3300")),  # also in a landing file
]
FIRST_REJECTED = {  # order_id (identifies the row) -> reason
    "o-db-r01": "missing_required:amount",
    "o-db-r02": "negative_amount",
    "o-db-r03": "invalid_quantity",
    "o-none": "missing_required:event_id",
    "o-db-r05": "future_event_time",
    "o-db-r06": "event_time_out_of_range",
    "o-db-r07": "amount_out_of_range",
    "o-db-r08": "invalid_quantity",
}
LANDING_RECORDS = [
    {
        **{
            k: (str(v) if isinstance(v, Decimal) else v)
            for k, v in row("shared-001", amount=Decimal("33.3300")).items()
        }
    },
    {
        **{
            k: (str(v) if isinstance(v, Decimal) else v)
            for k, v in row("file-001", amount=Decimal("5.5")).items()
        }
    },
]
SECOND_DB_ROWS = [
    row(
        "db-101", amount=Decimal("7.5000"), channel="Mobile", event_time="2024-07-03T05:06:07+00:00"
    ),
    row("db-102", quantity=0),  # invalid_quantity
    row("db-001", amount=Decimal("99.9900")),  # already ingested: duplicate
]


@dataclass(frozen=True)
class Event:
    event_id: str
    order_id: str
    product_id: str
    customer_id: str
    category: str
    region: str
    channel: str
    quantity: int
    amount: Decimal
    event_time: str
    event_date: date
    event_hour: str
    month: str
    revenue_category: str


def event(
    event_id: str,
    customer: str,
    category: str,
    region: str,
    channel: str,
    quantity: int,
    amount: str,
    utc_time: str,
    revenue_category: str,
) -> Event:
    ts = datetime.fromisoformat(utc_time)
    return Event(
        event_id,
        f"o-{event_id}",
        f"p-{event_id}",
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


# By hand: NUMERIC rounded HALF_UP to 2 places, trim + lower-case, defaults, UTC.
FIRST_EVENTS = {
    e.event_id: e
    for e in [
        event(
            "db-001",
            "c-db-001",
            "electronics",
            "north",
            "store",
            2,
            "12.35",
            "2024-07-01T10:00:00",
            "low",
        ),
        event("db-002", "c-db-002", "home", "east", "web", 1, "0.01", "2024-07-02T01:30:00", "low"),
        event(
            "db-003", "c-db-003", "home", "east", "web", 1, "1000.01", "2024-08-15T00:00:00", "high"
        ),
        event(
            "db-004",
            "anonymous",
            "unknown",
            "unknown",
            "unknown",
            1,
            "100.00",
            "2024-07-01T10:00:00",
            "low",
        ),
        event(
            "shared-001",
            "c-shared-001",
            "home",
            "east",
            "web",
            1,
            "33.33",
            "2024-07-01T10:00:00",
            "low",
        ),
        event(
            "file-001", "c-file-001", "home", "east", "web", 1, "5.50", "2024-07-01T10:00:00", "low"
        ),
    ]
}
FIRST_COUNTS = {
    "records_read": 16,
    "valid": 6,
    "duplicates": 2,
    "quarantined": 8,
}  # 14 db rows + 2 file lines
SECOND_EVENTS = {
    **FIRST_EVENTS,
    "db-101": event(
        "db-101", "c-db-101", "home", "east", "mobile", 1, "7.50", "2024-07-03T05:06:07", "low"
    ),
}
SECOND_COUNTS = {"records_read": 3, "valid": 1, "duplicates": 1, "quarantined": 1}


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jdbc_url() -> Iterator[str]:
    """The JDBC URL of a PostgreSQL server of this module's own, on a free port."""
    from devtools import postgres

    with postgres_data_dir() as data_dir:
        server = postgres.start_on_free_port(data_dir, password=PASSWORD)
        yield f"jdbc:postgresql://{server.address}/sales"


def insert(url: str, rows: list[dict[str, Any]]) -> None:
    from devtools.writers import write_database

    inserted, skipped = write_database(
        iter(rows), url=url, user="sales", password=PASSWORD, table=TABLE
    )
    assert (inserted, skipped) == (len(rows), 0)


def write_conf(base: Path, url: str, *, table: str = TABLE, extra: str = "") -> Path:
    (base / "landing").mkdir(parents=True, exist_ok=True)
    path = base / "conf.toml"
    path.write_text(
        f'[lakehouse]\nroot = "{base / "lakehouse"}"\n\n'
        f'[sources.files]\nlanding = "{base / "landing"}"\n\n'
        f'[sources.jdbc]\nenabled = true\nurl = "{url}"\ntable = "{table}"\nuser = "sales"\nkey_column = "row_id"\n\n'
        "[quality]\nmin_score = 0.0\n\n" + extra,
        encoding="utf-8",
    )
    return path


def load(path: Path, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    from sales_core.config import load_config

    return load_config(path, environ={"LAMBDA_SALES__SOURCES__JDBC__PASSWORD": password})


@dataclass
class Snapshot:
    record: Any
    stored: dict[str, Any]
    master: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    views: dict[str, list[dict[str, Any]]]


def snapshot(spark, config, record) -> Snapshot:  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from sales_core.handoff import current_generation, read_batch_view
    from sales_core.lakehouse import Lakehouse
    from sales_core.views import VIEWS

    def readable(df):  # type: ignore[no-untyped-def]
        for field in df.schema.fields:
            if isinstance(field.dataType, T.TimestampType):
                df = df.withColumn(
                    field.name, F.date_format(field.name, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")
                )
        return df

    lakehouse = Lakehouse(config.lakehouse.root)
    master = readable(spark.read.format("delta").load(lakehouse.master_dataset)).collect()
    quarantine = readable(spark.read.format("delta").load(lakehouse.quarantine)).collect()
    stored = (
        spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .where(F.col("run_id") == record.run_id)
        .collect()
    )
    assert len(stored) == 1
    generation = current_generation(spark, lakehouse)
    assert generation is not None
    views = {
        name: sorted(
            (
                r.asDict()
                for r in readable(
                    read_batch_view(spark, lakehouse, name, generation.generation)
                ).collect()
            ),
            key=lambda r: json.dumps(r, default=str, sort_keys=True),
        )
        for name in VIEWS
    }
    return Snapshot(
        record,
        stored[0].asDict(),
        sorted((r.asDict() for r in master), key=lambda r: r["event_id"]),
        sorted(
            (r.asDict() for r in quarantine),
            key=lambda r: json.dumps(r, default=str, sort_keys=True),
        ),
        views,
    )


@pytest.fixture(scope="module")
def jdbc_runs(spark, jdbc_url, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Run 1: the first rows plus a landing file; run 2: after more rows; run 3: nothing new."""
    from batch_layer.job import run_batch

    base = tmp_path_factory.mktemp("jdbc-source")
    config = load(write_conf(base, jdbc_url))
    insert(jdbc_url, FIRST_DB_ROWS)
    (base / "landing" / "run1.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in LANDING_RECORDS), encoding="utf-8"
    )
    first = snapshot(spark, config, run_batch(spark, config))
    insert(jdbc_url, SECOND_DB_ROWS)
    second = snapshot(spark, config, run_batch(spark, config))
    third = snapshot(spark, config, run_batch(spark, config))
    return {"base": base, "config": config, "runs": (first, second, third)}


def as_event(r: dict[str, Any]) -> Event:
    return Event(*(r[f] for f in Event.__dataclass_fields__))


def counts(s: Snapshot) -> list[dict[str, int]]:
    return [
        {k: getattr(s.record, k) for k in FIRST_COUNTS},
        {k: s.stored[k] for k in FIRST_COUNTS},
    ]


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


def test_first_run_master_dataset_holds_the_valid_rows_normalised(jdbc_runs) -> None:  # type: ignore[no-untyped-def]
    first = jdbc_runs["runs"][0]
    assert first.record.status == "succeeded"
    got = {r["event_id"]: as_event(r) for r in first.master}
    assert sorted(got) == sorted(FIRST_EVENTS)
    for event_id, expected in FIRST_EVENTS.items():
        assert got[event_id] == expected, event_id
    by_id = {r["event_id"]: r for r in first.master}
    for event_id in ("db-001", "db-002", "db-003", "db-004"):
        assert (by_id[event_id]["source"], by_id[event_id]["source_name"]) == ("jdbc", TABLE)
    assert by_id["file-001"]["source"] == "file"


def test_first_run_quarantine_has_reason_source_table_and_raw_row(jdbc_runs) -> None:  # type: ignore[no-untyped-def]
    first = jdbc_runs["runs"][0]
    assert len(first.quarantine) == len(FIRST_REJECTED)
    inserted = {r["order_id"]: r for r in FIRST_DB_ROWS}
    seen = set()
    for q in first.quarantine:
        assert (q["source"], q["source_name"]) == ("jdbc", TABLE)
        assert q["rejected_at"] is not None
        raw = json.loads(q["raw_record"], parse_float=Decimal)
        order_id = raw["order_id"]
        seen.add(order_id)
        assert q["reason"] == FIRST_REJECTED[order_id], order_id
        # The raw record is the row as read: every value inserted is in it.
        source = inserted[order_id]
        for name, value in source.items():
            if value is None:
                assert raw.get(name) is None, (order_id, name)
            elif name == "amount":
                assert Decimal(str(raw[name])) == value, (order_id, raw[name])
            elif name == "event_time":
                assert datetime.fromisoformat(raw[name]) == datetime.fromisoformat(value), (
                    order_id,
                    raw[name],
                )
            else:
                assert raw[name] == value, (order_id, name, raw.get(name))
    assert seen == set(FIRST_REJECTED)


def test_quarantined_db_rows_keep_their_position_in_the_table(jdbc_runs) -> None:  # type: ignore[no-untyped-def]
    """CONTRACT §2: the quarantine keeps the source and position: for a database, table and key."""
    first = jdbc_runs["runs"][0]
    keyless = [json.loads(q["raw_record"]) for q in first.quarantine if q["source_key"] is None]
    assert not keyless, f"quarantined database rows without a key (position lost): {keyless!r}"


def test_first_run_counts_balance(jdbc_runs) -> None:  # type: ignore[no-untyped-def]
    first = jdbc_runs["runs"][0]
    for c in counts(first):
        assert c["records_read"] == c["valid"] + c["duplicates"] + c["quarantined"], c
        assert c == FIRST_COUNTS
    details = json.loads(first.stored["details"])
    assert details["records_by_source"] == {"file": 2, "jdbc": 14}


def test_event_in_landing_file_and_database_counts_once(jdbc_runs) -> None:  # type: ignore[no-untyped-def]
    first = jdbc_runs["runs"][0]
    assert [r["event_id"] for r in first.master].count("shared-001") == 1
    daily = first.views["sales_daily"]
    total_events = sum(r["events"] for r in daily)
    assert total_events == len(FIRST_EVENTS)
    # sales_daily worked out independently from the expected events.
    expected: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, Decimal("0")])
    for e in FIRST_EVENTS.values():
        acc = expected[(e.event_date, e.category, e.region)]
        acc[0] += 1
        acc[1] += e.quantity
        acc[2] += e.amount
    got = {
        (r["event_date"], r["category"], r["region"]): [r["events"], r["units"], r["revenue"]]
        for r in daily
    }
    assert got == dict(expected)


def test_second_run_reads_only_the_new_rows(jdbc_runs) -> None:  # type: ignore[no-untyped-def]
    first, second, _ = jdbc_runs["runs"]
    assert second.record.status == "succeeded"
    for c in counts(second):
        assert c == SECOND_COUNTS
    assert json.loads(second.stored["details"])["records_by_source"] == {"jdbc": 3}
    got = {r["event_id"]: as_event(r) for r in second.master}
    assert got == SECOND_EVENTS
    # Nothing ingested twice: the old rows are untouched, db-001 keeps its first amount.
    assert [r for r in second.master if r["event_id"] != "db-101"] == first.master
    new_quarantine = [q for q in second.quarantine if q not in first.quarantine]
    assert len(second.quarantine) == len(first.quarantine) + 1
    assert [(q["reason"], json.loads(q["raw_record"])["event_id"]) for q in new_quarantine] == [
        ("invalid_quantity", "db-102")
    ]


def test_third_run_with_nothing_new_changes_nothing(jdbc_runs) -> None:  # type: ignore[no-untyped-def]
    _, second, third = jdbc_runs["runs"]
    assert third.record.status == "succeeded"
    for c in counts(third):
        assert c == {"records_read": 0, "valid": 0, "duplicates": 0, "quarantined": 0}
    assert third.master == second.master
    assert third.quarantine == second.quarantine
    assert third.views == second.views
    assert sum(r["events"] for r in third.views["sales_daily"]) == len(SECOND_EVENTS)


def test_password_is_not_in_the_run_records_or_the_lakehouse(jdbc_runs, spark) -> None:  # type: ignore[no-untyped-def]
    from sales_core.lakehouse import Lakehouse

    config = jdbc_runs["config"]
    runs = spark.read.format("delta").load(Lakehouse(config.lakehouse.root).pipeline_runs)
    rows = [json.dumps(r.asDict(recursive=True), default=str) for r in runs.collect()]
    assert len(rows) == 3
    assert all(PASSWORD not in r for r in rows)
    for path in Path(config.lakehouse.root).rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_password_is_not_in_error_messages_or_failed_run_records(jdbc_url, spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from batch_layer.job import run_batch
    from sales_core.errors import PipelineError
    from sales_core.lakehouse import Lakehouse

    insert(jdbc_url, [])  # the table exists
    wrong = "wrong-" + PASSWORD + "-x"
    cases = [
        (
            load(write_conf(tmp_path / "missing-table", jdbc_url, table="no_such_table")),
            PASSWORD,
            "no_such_table",
        ),
        (load(write_conf(tmp_path / "bad-password", jdbc_url), password=wrong), wrong, "sales"),
    ]
    for config, secret, mention in cases:
        with pytest.raises(PipelineError) as caught:
            run_batch(spark, config)
        message = str(caught.value)
        assert mention in message
        assert PASSWORD not in message and secret not in message
        assert len(message.strip().splitlines()) == 1, message
        stored = (
            spark.read.format("delta")
            .load(Lakehouse(config.lakehouse.root).pipeline_runs)
            .collect()
        )
        assert [r["status"] for r in stored] == ["failed"]
        text = json.dumps([r.asDict(recursive=True) for r in stored], default=str)
        assert PASSWORD not in text and secret not in text


def db_records(url: str) -> list[dict[str, Any]]:
    """Every row of the module's table as the contract's fields, in key order."""
    import psycopg
    from psycopg.rows import dict_row

    from devtools.writers import FIELDS, jdbc_url_parts

    host, port, dbname = jdbc_url_parts(url)
    with psycopg.connect(
        host=host, port=port, dbname=dbname, user="sales", password=PASSWORD, row_factory=dict_row
    ) as conn:
        rows = conn.execute(f"SELECT * FROM {TABLE} ORDER BY row_id").fetchall()
    return [{f: r[f] for f in FIELDS} for r in rows]


def test_cli_batch_killed_while_reading_the_database_then_rerun(jdbc_url, spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL as the run starts reading its epoch (the database read follows that line);
    the next run ingests every row once, as the oracle judges the table's rows. Neither run
    shows the password."""
    from collections import Counter

    from sales_core.lakehouse import Lakehouse
    from tests.oracle import Ledger
    from tests.processes import kill_on_line

    conf = write_conf(
        tmp_path,
        jdbc_url,
        extra='[spark]\nmaster = "local[1]"\nshuffle_partitions = 2\ndriver_memory = "1g"\n',
    )
    env = environ_without_config(LAMBDA_SALES__SOURCES__JDBC__PASSWORD=PASSWORD)
    status, lines = kill_on_line(
        [CLI, "batch", "--conf", str(conf)], r"ingest epoch \d+:", env=env, cwd=tmp_path
    )
    assert status == -9, f"the run ended before it read the database: {lines}"
    assert all(PASSWORD not in line for line in lines)
    result = subprocess.run(
        [CLI, "batch", "--conf", str(conf)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "records read" in result.stdout
    assert PASSWORD not in result.stdout and PASSWORD not in result.stderr
    assert "Traceback" not in result.stdout + result.stderr

    oracle = Ledger(now=datetime.now(timezone.utc))
    for record in db_records(jdbc_url):
        oracle.add(record)
    config = load(conf)
    master = spark.read.format("delta").load(Lakehouse(config.lakehouse.root).master_dataset)
    got = {r["event_id"]: r["amount"] for r in master.select("event_id", "amount").collect()}
    assert master.count() == len(got), "an event is in the master dataset twice"
    assert got == {i: e["amount"] for i, e in oracle.events.items()}
    quarantine = spark.read.format("delta").load(Lakehouse(config.lakehouse.root).quarantine)
    assert Counter(r["reason"] for r in quarantine.collect()) == Counter(oracle.rejected)


def test_schema_drift_between_runs(jdbc_url, spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The table's columns change between runs, as production tables do: a column added and a
    column's type changed (the new rows are read like any others, the extra column kept in a
    rejected row's raw record), then a required column renamed (every new row quarantined
    with its reason: nothing silently dropped), then the watermark column renamed (a one-line
    error, the run recorded as failed, nothing changed). Each run is judged by the oracle over
    the rows as the table then holds them."""
    from collections import Counter

    import psycopg
    from pyspark.sql import functions as F

    from batch_layer.job import run_batch
    from devtools.writers import jdbc_url_parts, write_database
    from sales_core.errors import PipelineError
    from sales_core.lakehouse import Lakehouse
    from tests.oracle import Ledger

    table = "sales_drift"
    config = load(write_conf(tmp_path, jdbc_url, table=table))
    lakehouse = Lakehouse(config.lakehouse.root)
    host, port, dbname = jdbc_url_parts(jdbc_url)

    def sql(*statements: str, rows: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
        with psycopg.connect(
            host=host, port=port, dbname=dbname, user="sales", password=PASSWORD
        ) as conn:
            for statement in statements:
                conn.execute(statement)
            for r in rows:
                names = ", ".join(r)
                conn.execute(
                    f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(r))})",
                    list(r.values()),
                )

    oracle = Ledger(now=datetime.now(timezone.utc))

    def ingested(rows: list[dict[str, Any]]) -> dict[str, int]:
        """Feed the oracle the rows as the contract reads them; the run counts they make."""
        before = (len(oracle.events), oracle.duplicates, len(oracle.rejected))
        for r in rows:
            oracle.add({k: v for k, v in r.items() if k != "discount"})
        after = (len(oracle.events), oracle.duplicates, len(oracle.rejected))
        valid, duplicates, quarantined = (a - b for a, b in zip(after, before, strict=True))
        return {
            "records_read": len(rows),
            "valid": valid,
            "duplicates": duplicates,
            "quarantined": quarantined,
        }

    def check(record: Any, expected_counts: dict[str, int]) -> None:
        assert record.status == "succeeded"
        assert {k: getattr(record, k) for k in expected_counts} == expected_counts
        master = spark.read.format("delta").load(lakehouse.master_dataset)
        got = {r["event_id"]: r["amount"] for r in master.select("event_id", "amount").collect()}
        assert master.count() == len(got), "an event is in the master dataset twice"
        assert got == {i: e["amount"] for i, e in oracle.events.items()}
        reasons = spark.read.format("delta").load(lakehouse.quarantine).collect()
        assert Counter(r["reason"] for r in reasons) == Counter(oracle.rejected)

    first = [row(f"dr-{n}") for n in range(3)] + [row("dr-bad", quantity=0)]
    write_database(iter(first), url=jdbc_url, user="sales", password=PASSWORD, table=table)
    check(run_batch(spark, config), ingested(first))

    # A column added, a column's type changed (INTEGER -> TEXT).
    second = [
        {**row("dr-10", quantity="3"), "discount": Decimal("1.50")},
        {**row("dr-11", quantity="two"), "discount": Decimal("0.25")},  # invalid_type:quantity
        {**row("dr-0", amount=Decimal("99.0000"), quantity="1"), "discount": None},  # duplicate
    ]
    sql(
        f"ALTER TABLE {table} ADD COLUMN discount NUMERIC(10, 2)",
        f"ALTER TABLE {table} ALTER COLUMN quantity TYPE TEXT USING quantity::text",
        rows=second,
    )
    check(run_batch(spark, config), ingested(second))
    rejected = spark.read.format("delta").load(lakehouse.quarantine).collect()
    raw = {q["reason"]: json.loads(q["raw_record"], parse_float=Decimal) for q in rejected}
    assert raw["invalid_type:quantity"]["event_id"] == "dr-11"
    assert raw["invalid_type:quantity"]["discount"] == Decimal("0.25"), "the row as read"
    assert "discount" not in raw["invalid_quantity"], "a row read before the column was added"

    # A required column renamed: the new rows have no amount, each is quarantined.
    third = [{k: v for k, v in row(f"dr-{n}").items() if k != "amount"} for n in (20, 21)]
    sql(
        f"ALTER TABLE {table} RENAME COLUMN amount TO sale_amount",
        rows=[{**r, "sale_amount": Decimal("5.0000")} for r in third],
    )
    check(run_batch(spark, config), ingested(third))
    assert oracle.rejected[-2:] == ["missing_required:amount"] * 2

    # The watermark column renamed: the run cannot plan; one line, nothing written.
    master_version = spark.sql(f"DESCRIBE HISTORY delta.`{lakehouse.master_dataset}`").first()
    sql(f"ALTER TABLE {table} RENAME COLUMN ingested_at TO loaded_at")
    with pytest.raises(PipelineError) as failure:
        run_batch(spark, config)
    message = str(failure.value)
    assert "\n" not in message and "ingested_at" in message and PASSWORD not in message
    assert spark.sql(f"DESCRIBE HISTORY delta.`{lakehouse.master_dataset}`").first() == (
        master_version
    )
    failed = (
        spark.read.format("delta")
        .load(lakehouse.pipeline_runs)
        .orderBy(F.col("started_at").desc())
        .first()
    )
    assert failed["status"] == "failed" and "ingested_at" in failed["error"]
