"""The pure parts of the batch sources: ledger entries (old rows too), and the HTTP source's
pages, URLs, resume point and configuration checks. Expected values are written by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from batch_layer.ledger import entry_of
from batch_layer.sources.base import Entry
from batch_layer.sources.files import LandingFile, file_entry, missing_local_landing
from batch_layer.sources.http import HttpSource, Resume, parse_page, resume_point
from sales_core.config import ConfigError, HttpSourceConf, Secret, SparkConf

pytestmark = pytest.mark.unit

URL = "http://127.0.0.1:8080/sales"


def test_a_page_keeps_each_record_as_sent_numbers_digit_for_digit() -> None:
    body = (
        b'{"next": "c-2", "records": [{"amount": 12.344999999999999999999, "quantity": 3, '
        b'"big": 1e400, "name": "caf\\u00e9", "ok": true, "none": null}, 42, "text", null, '
        b'[1, 2.50], {"amount": NaN}], "extra": 1}'
    )
    records, following = parse_page(body, "records", "next")
    assert following == "c-2"
    assert records == (
        '{"amount": 12.344999999999999999999, "quantity": 3, "big": 1E+400, '
        '"name": "caf\\u00e9", "ok": true, "none": null}',
        "42",
        '"text"',
        "null",
        "[1, 2.50]",
        '{"amount": NaN}',
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"records": [], "next": null}', None),
        (b'{"records": []}', None),
        (b'{"records": [], "next": 1000}', "1000"),
        (b'{"records": [], "next": "opaque=="}', "opaque=="),
    ],
)
def test_the_next_cursor_is_text_and_absent_or_null_on_the_last_page(
    body: bytes, expected: str | None
) -> None:
    assert parse_page(body, "records", "next") == ((), expected)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b'\xff{"records": []}', "not JSON"),
        (b'[{"event_id": "e1"}]', "not a JSON object with a 'records' array"),
        (b'{"items": []}', "not a JSON object with a 'records' array"),
        (b'{"records": {"event_id": "e1"}}', "not a JSON object with a 'records' array"),
        (b'{"records": [], "next": {"page": 2}}', "'next' is neither a string, a number nor null"),
    ],
)
def test_a_body_that_is_not_a_page_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_page(body, "records", "next")


def conf(**changes: object) -> HttpSourceConf:
    base = HttpSourceConf(
        enabled=True,
        url=URL,
        cursor_param="cursor",
        page_size=100,
        records_field="records",
        next_cursor_field="next",
        token=Secret("s3cret-token"),
        timeout_seconds=5.0,
        retries=2,
        backoff_seconds=0.5,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_page_urls_carry_page_size_and_cursor_and_keep_other_parameters() -> None:
    source = HttpSource.from_conf(
        conf(url="https://api.example.com/v1/sales?region=north&cursor=stale&page_size=9"), "p"
    )
    assert source.page_url(None) == "https://api.example.com/v1/sales?region=north&page_size=100"
    assert (
        source.page_url("a b&c")
        == "https://api.example.com/v1/sales?region=north&page_size=100&cursor=a+b%26c"
    )


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"url": "ftp://127.0.0.1/sales"}, "sources.http.url"),
        ({"url": "127.0.0.1:8080/sales"}, "sources.http.url"),
        ({"page_size": 0}, "sources.http.page_size"),
        ({"retries": -1}, "sources.http.retries"),
        ({"timeout_seconds": 0.0}, "sources.http.timeout_seconds"),
        ({"cursor_param": ""}, "sources.http.cursor_param"),
        ({"cursor_param": "page_size"}, "sources.http.cursor_param"),
        ({"records_field": ""}, "sources.http.records_field"),
    ],
)
def test_an_unusable_setting_is_named(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        HttpSource.from_conf(conf(**changes), "p")


def test_a_token_that_cannot_be_a_header_is_refused_without_showing_it() -> None:
    token = "line-one\nAuthorization: other-secret"
    with pytest.raises(ConfigError) as caught:
        HttpSource.from_conf(conf(token=Secret(token)), "p")
    assert "sources.http.token" in str(caught.value)
    assert "line-one" not in str(caught.value) and "other-secret" not in str(caught.value)


def test_a_url_with_credentials_is_shown_without_them() -> None:
    with pytest.raises(ConfigError) as caught:
        HttpSource.from_conf(conf(url="ftp://user:pw@host/x"), "p")
    assert "pw" not in str(caught.value) and "//***@host/x" in str(caught.value)


def http_entry(url: str, cursor: str | None, taken: int) -> Entry:
    return Entry.of(
        "http",
        url,
        {
            "start": {"cursor": None, "skip": 0},
            "end": {"cursor": cursor, "taken": taken},
            "pages": 1,
            "records": 1,
        },
    )


def test_an_epoch_resumes_where_the_last_epoch_of_the_same_url_ended() -> None:
    other = "http://127.0.0.1:8080/other"
    assert resume_point((), URL) == Resume(None, 0)
    assert resume_point((http_entry(other, "x-9", 4),), URL) == Resume(None, 0)
    taken = (http_entry(URL, None, 4), http_entry(URL, "c-8", 2), http_entry(other, "x-9", 4))
    assert resume_point(taken, URL) == Resume("c-8", 2)


def test_new_ledger_rows_hold_the_entry_as_written() -> None:
    entry = http_entry(URL, "c-8", 2)
    row = {"source": "http", "name": URL, "position": entry.position, "size": None}
    assert entry_of(row) == entry
    assert entry.fields["end"] == {"cursor": "c-8", "taken": 2}


def test_old_ledger_rows_read_as_the_positions_the_sources_write_now() -> None:
    """Rows of the ledger schema before sources kept their own positions (typed columns)."""
    modified = datetime(2026, 1, 15, 12, 30, 5, 250000, tzinfo=timezone.utc)
    old_file = {
        "source": "file",
        "name": "file:/landing/a.jsonl",
        "size": 1234,
        "modified_at": modified,
        "watermark_low": None,
        "watermark_high": None,
    }
    assert entry_of(old_file) == file_entry(LandingFile("file:/landing/a.jsonl", 1234, modified))
    assert entry_of(old_file).fields == {
        "size": 1234,
        "modified_at": "2026-01-15T12:30:05.250000+00:00",
    }
    old_jdbc = {
        "source": "jdbc",
        "name": "sales_data",
        "size": None,
        "modified_at": None,
        "watermark_low": None,
        "watermark_high": "2026-01-15 12:00:00.123",
    }
    assert entry_of(old_jdbc) == Entry(
        "jdbc", "sales_data", '{"watermark_high":"2026-01-15 12:00:00.123"}'
    )
    assert entry_of({**old_jdbc, "watermark_low": "2026-01-14 00:00:00"}).fields == {
        "watermark_low": "2026-01-14 00:00:00",
        "watermark_high": "2026-01-15 12:00:00.123",
    }


@pytest.mark.parametrize(
    ("landing", "master", "conf", "missing"),
    [
        ("{tmp}/gone", "local[2]", {}, True),
        ("file://{tmp}/gone", "local[*]", {}, True),
        ("{tmp}", "local[2]", {}, False),
        ("file://{tmp}", "local[2]", {}, False),
        # Spark's to say: a cluster's default file system, another file system's URI
        ("{tmp}/gone", "", {}, False),
        ("{tmp}/gone", "spark://10.0.0.5:7077", {}, False),
        ("{tmp}/gone", "local[2]", {"spark.hadoop.fs.defaultFS": "hdfs://nn:8020"}, False),
        ("s3a://bucket/gone", "local[2]", {}, False),
    ],
)
def test_a_missing_landing_location_is_said_before_spark_only_for_this_machines_paths(
    tmp_path, landing: str, master: str, conf: dict[str, str], missing: bool
) -> None:  # type: ignore[no-untyped-def]
    spark = SparkConf(
        master=master, app_name="t", shuffle_partitions=2, driver_memory="", conf=conf
    )
    assert missing_local_landing(landing.format(tmp=tmp_path), spark) is missing
