"""``lambda-sales serve`` as a real process on a free port, and ``lambda-sales query`` as a
user runs it: every view, filters, paging, bad parameters, and nothing ever changes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from batch_layer.job import run_batch
from sales_core.views import VIEWS
from tests.conftest import write_jsonl
from tests.oracle import compute_views, event, rows_to_view
from tests.processes import free_port, wait_until_serving
from tests.serving_helpers import raw, speed_micro_batch

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("lambda-sales"))
BATCH = [
    event("h1", amount="10.00", event_time="2024-05-01T10:00:00Z", customer_id="c1"),
    event(
        "h2",
        amount="250.50",
        quantity=2,
        event_time="2024-05-01T11:30:00Z",
        category="toys",
        customer_id="c2",
    ),
    event(
        "h3",
        amount="1500.00",
        event_time="2024-05-03T09:00:00Z",
        region="south",
        channel="mobile",
        customer_id="c3",
    ),
    event("h4", amount="0.99", event_time="2024-06-02T00:00:00Z", region="east", customer_id="c4"),
]
SPEED = [
    event("h5", amount="5.00", event_time="2024-05-01T10:59:59Z", customer_id="c1"),
    event(
        "h6", amount="75.25", event_time="2019-01-01T00:00:00Z", region="west", customer_id="c5"
    ),  # late
]
EVENTS = BATCH + SPEED


def lakehouse_files(root: str) -> dict[str, int]:
    """Every file under the lakehouse with its size: any write would change this."""
    return {
        str(p.relative_to(root)): p.stat().st_size for p in Path(root).rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def server(spark, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    from tests.integration.test_serving import config_for

    base = tmp_path_factory.mktemp("http")
    config = config_for(base)
    write_jsonl(base / "landing" / "a.jsonl", raw(BATCH))
    run_batch(spark, config)
    speed_micro_batch(spark, config, 0, raw(SPEED), first_offset=0)
    env = {**os.environ, "LAMBDA_SALES__LAKEHOUSE__ROOT": config.lakehouse.root}
    port = free_port()
    process = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--quiet"],
        env=env,
        cwd=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_serving(process, url)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {process.communicate(timeout=5)}") from None
        yield {"url": url, "env": env, "root": config.lakehouse.root, "cwd": base}
    finally:
        process.terminate()
        process.wait(timeout=30)


def cli(server: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        env=server["env"],
        cwd=server["cwd"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def get(server: dict[str, Any], path: str, **params: Any) -> httpx.Response:
    return httpx.get(server["url"] + path, params=params, timeout=30)


def rows_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = json.loads(response.text, parse_float=Decimal)
    assert set(body) == {"rows", "generation"} and body["generation"] == 1
    return list(body["rows"])


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line, parse_float=Decimal) for line in text.splitlines() if line]


def test_every_view_answers_the_merged_rows_shaped_as_query_jsonl(server) -> None:  # type: ignore[no-untyped-def]
    for name in VIEWS:
        response = get(server, f"/views/{name}")
        printed = cli(server, "query", name, "--format", "jsonl")
        assert printed.returncode == 0, printed.stderr
        assert rows_of(response) == jsonl(printed.stdout), name
        # Byte for byte: the rows array holds the very lines `query --format jsonl` prints.
        assert response.text.startswith('{"rows": [' + ", ".join(printed.stdout.splitlines()) + "]")
        expected = compute_views(EVENTS)[name]
        got = rows_to_view([_typed(name, r) for r in rows_of(response)], name)
        assert got == expected, name


def _typed(name: str, row: dict[str, Any]) -> dict[str, Any]:
    """A JSON row back to the oracle's types (dates, UTC datetimes)."""
    from datetime import date, datetime

    out = dict(row)
    for column in ("event_date",):
        if column in out:
            out[column] = date.fromisoformat(out[column])
    for column in ("event_hour", "first_event_time", "last_event_time"):
        if column in out:
            out[column] = datetime.fromisoformat(out[column].replace("Z", "+00:00"))
    return out


def test_filters_ranges_and_paging(server) -> None:  # type: ignore[no-untyped-def]
    north = rows_of(get(server, "/views/sales_daily", region="north"))
    assert {(r["event_date"], r["category"]) for r in north} == {
        ("2024-05-01", "books"),
        ("2024-05-01", "toys"),
    }
    books = rows_of(get(server, "/views/sales_daily", region="north", category="books"))
    assert books == [
        {
            "event_date": "2024-05-01",
            "category": "books",
            "region": "north",
            "events": 2,
            "units": 2,
            "revenue": Decimal("15.00"),
        }
    ]
    may = rows_of(get(server, "/views/sales_hourly", **{"from": "2024-05-01", "to": "2024-05-01"}))
    assert [(r["event_hour"], r["events"]) for r in may] == [
        ("2024-05-01T10:00:00Z", 2),
        ("2024-05-01T11:00:00Z", 1),
    ]
    active = rows_of(
        get(server, "/views/customer_totals", **{"from": "2024-05-02", "to": "2024-06-30"})
    )
    assert [r["customer_id"] for r in active] == ["c3", "c4"]
    months = rows_of(get(server, "/views/revenue_category_monthly", **{"from": "2024-06-01"}))
    assert {r["month"] for r in months} == {"2024-06"}
    everything = rows_of(get(server, "/views/customer_totals"))
    assert [r["customer_id"] for r in everything] == ["c1", "c2", "c3", "c4", "c5"]
    pages = [
        rows_of(get(server, "/views/customer_totals", limit=2, offset=o)) for o in (0, 2, 4, 6)
    ]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert [r for p in pages for r in p] == everything
    assert rows_of(get(server, "/views/customer_totals", revenue="15.00")) == [everything[0]]
    # The same filters through the CLI.
    printed = cli(
        server,
        "query",
        "sales_daily",
        "--where",
        "region=north",
        "--where",
        "category=books",
        "--format",
        "jsonl",
    )
    assert jsonl(printed.stdout) == books


BAD_REQUESTS: list[tuple[str, dict[str, str], int, str]] = [
    ("/views/nope", {}, 404, "unknown view 'nope'"),
    ("/views/x; DROP TABLE sales_daily", {}, 404, "unknown view 'x; DROP TABLE sales_daily'"),
    ("/views/sales_daily", {"bogus": "1"}, 400, "unknown parameter 'bogus'"),
    ("/views/sales_daily", {"' OR 1=1 --": "1"}, 400, "unknown parameter '' OR 1=1 --'"),
    (
        "/views/sales_daily",
        {"region; DROP TABLE x": "north"},
        400,
        "unknown parameter 'region; DROP TABLE x'",
    ),
    ("/views/sales_daily", {"from": "2024-13-01"}, 400, "bad date '2024-13-01' for from"),
    ("/views/sales_daily", {"to": "yesterday"}, 400, "bad date 'yesterday' for to"),
    (
        "/views/sales_daily",
        {"event_date": "' OR 1=1 --"},
        400,
        "bad value \"' OR 1=1 --\" for column 'event_date' (date)",
    ),
    (
        "/views/sales_daily",
        {"events": "1; DROP TABLE sales_daily"},
        400,
        "for column 'events' (bigint)",
    ),
    (
        "/views/sales_hourly",
        {"event_hour": "x; DROP TABLE"},
        400,
        "for column 'event_hour' (timestamp)",
    ),
    (
        "/views/customer_totals",
        {"revenue": "1 OR 1=1"},
        400,
        "for column 'revenue' (decimal(18,2))",
    ),
    ("/views/customer_totals", {"limit": "' OR 1=1 --"}, 400, "bad limit"),
    ("/views/customer_totals", {"limit": "-1"}, 400, "bad limit -1"),
    ("/views/customer_totals", {"limit": "100001"}, 400, "bad limit 100001"),
    ("/views/customer_totals", {"offset": "x; DROP TABLE"}, 400, "bad offset"),
    # Bounds the OpenAPI document states, each enforced.
    ("/views/sales_daily", {"events": str(2**63)}, 400, "for column 'events' (bigint)"),
    ("/views/customer_totals", {"revenue": "1e5"}, 400, "for column 'revenue' (decimal(18,2))"),
    ("/views/customer_totals", {"revenue": "1.005"}, 400, "for column 'revenue' (decimal(18,2))"),
    ("/views/customer_totals", {"offset": str(10**13)}, 400, "bad offset 10000000000000"),
    (
        "/views/sales_hourly",
        {"event_hour": "9999-12-31T23:00:00-05:00"},
        400,
        "for column 'event_hour' (timestamp)",
    ),
]


def test_bad_requests_get_a_clear_4xx_and_change_nothing(server) -> None:  # type: ignore[no-untyped-def]
    before = lakehouse_files(server["root"])
    for path, params, status, message in BAD_REQUESTS:
        response = get(server, path, **params)
        assert response.status_code == status, (path, params, response.text)
        detail = response.json()["detail"]
        assert message in detail and "\n" not in detail, (path, params, detail)
    # A range whose end is before its start selects no day (the CLI calls it an error).
    assert (
        rows_of(get(server, "/views/sales_daily", **{"from": "2024-06-01", "to": "2024-05-01"}))
        == []
    )
    # The last day there is, as an end, is a range like any other.
    assert rows_of(get(server, "/views/sales_hourly", to="9999-12-31")) == rows_of(
        get(server, "/views/sales_hourly")
    )
    twice = httpx.get(server["url"] + "/views/sales_daily?region=north&region=south", timeout=30)
    assert twice.status_code == 400 and "more than once" in twice.json()["detail"]
    # As a string value an injection attempt is just a value that matches nothing.
    for value in ("' OR 1=1 --", "x; DROP TABLE sales_daily"):
        assert rows_of(get(server, "/views/sales_daily", region=value)) == []
    assert lakehouse_files(server["root"]) == before
    assert len(rows_of(get(server, "/views/sales_daily"))) == len(
        compute_views(EVENTS)["sales_daily"]
    )


def test_health_and_openapi(server) -> None:  # type: ignore[no-untyped-def]
    health = get(server, "/health").json()
    assert health["status"] == "ok"
    assert health["batch"]["generation"] == 1 and health["batch"]["handoff"] == {}
    assert 0 <= health["batch"]["seconds_since_publish"] < 3600
    assert health["speed"]["last_micro_batch"] == 0
    assert 0 <= health["speed"]["seconds_since_last_micro_batch"] < 3600
    assert health["speed"]["newest_event_at"] is not None
    spec = get(server, "/openapi.json").json()
    for name, view in VIEWS.items():
        params = {p["name"] for p in spec["paths"][f"/views/{name}"]["get"]["parameters"]}
        assert params == set(view.columns) | {"from", "to", "limit", "offset"}
    assert "/health" in spec["paths"]
    docs = get(server, "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_an_outside_fuzzer_finds_no_failure_against_the_openapi_document(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Schemathesis, with every check it has, against the document the server publishes:
    no server error, every status code and body as documented, every request the document
    allows answered, every request it forbids rejected; and nothing written."""
    before = lakehouse_files(server["root"])
    fuzzer = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(fuzzer),
            "--no-color",
            "run",
            server["url"] + "/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "60",
            "--seed",
            "20261201",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    counted = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert counted, result.stdout[-2000:]
    assert int(counted[1]) == int(counted[2]) >= 500, counted[0]
    assert lakehouse_files(server["root"]) == before
    spec = get(server, "/openapi.json").json()
    for name in VIEWS:
        responses = spec["paths"][f"/views/{name}"]["get"]["responses"]
        assert set(responses) == {"200", "400", "503"}


def test_cli_query_spark_engine_matches_the_fast_path_and_errors_are_one_line(server) -> None:  # type: ignore[no-untyped-def]
    fast = cli(
        server,
        "query",
        "customer_totals",
        "--format",
        "csv",
        "--from",
        "2024-05-01",
        "--to",
        "2024-05-31",
    )
    on_spark = cli(
        server,
        "query",
        "customer_totals",
        "--format",
        "csv",
        "--from",
        "2024-05-01",
        "--to",
        "2024-05-31",
        "--engine",
        "spark",
    )
    assert fast.returncode == 0 and on_spark.returncode == 0, on_spark.stderr
    assert fast.stdout == on_spark.stdout
    assert (
        fast.stdout.splitlines()[0] == "customer_id,events,revenue,first_event_time,last_event_time"
    )
    assert fast.stdout.splitlines()[1:] == [
        "c1,2,15.00,2024-05-01T10:00:00Z,2024-05-01T10:59:59Z",
        "c2,1,250.50,2024-05-01T11:30:00Z,2024-05-01T11:30:00Z",
        "c3,1,1500.00,2024-05-03T09:00:00Z,2024-05-03T09:00:00Z",
    ]
    for args, message in (
        (("query", "sales_daily", "--where", "bogus=1"), "unknown column 'bogus'"),
        (("query", "sales_daily", "--from", "2024-02-30"), "bad date '2024-02-30' for from"),
        (("query", "sales_daily", "--where", "units=many"), "bad value 'many' for column 'units'"),
        (("query", "nope"), "unknown view 'nope'"),
        (("query", "sales_daily", "--limit", "-3"), "bad limit -3"),
    ):
        done = cli(server, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert (
            done.stderr.count("\n") == 1
            and message in done.stderr
            and "Traceback" not in done.stderr
        ), done.stderr


# Text a user types that looks like SQL: as a value it is a value (it matches nothing); as a
# column or a schema name it is refused in one line. Nothing is written either way.
INJECTED_VALUES = ("' OR '1'='1", "x'; DROP TABLE sales_daily; --", 'north" OR "1"="1')


def test_sql_injection_through_the_cli_on_both_engines(server) -> None:  # type: ignore[no-untyped-def]
    before = lakehouse_files(server["root"])
    for engine in ("fast", "spark"):
        where = [a for value in INJECTED_VALUES[:1] for a in ("--where", f"region={value}")]
        done = cli(server, "query", "sales_daily", *where, "--format", "jsonl", "--engine", engine)
        assert done.returncode == 0 and done.stdout == "", (engine, done.stderr)
    for value in INJECTED_VALUES:  # every payload on the fast path (no JVM start each)
        done = cli(
            server, "query", "sales_daily", "--where", f"region={value}", "--format", "jsonl"
        )
        assert done.returncode == 0 and done.stdout == "", (value, done.stderr)
        done = cli(server, "query", "customer_totals", "--where", f"customer_id=c1{value}")
        assert done.returncode == 0 and "c1" not in done.stdout, (value, done.stdout)
    for engine in ("fast", "spark"):
        done = cli(
            server, "query", "sales_daily", "--where", "region; DROP TABLE x=1", "--engine", engine
        )
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "unknown column 'region; DROP TABLE x'" in done.stderr
    for database in ("x; DROP TABLE y", "a`b", "s.t' --"):
        done = cli(server, "sql-views", "--print", "--database", database)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"bad database name {database!r}" in done.stderr
    assert lakehouse_files(server["root"]) == before
