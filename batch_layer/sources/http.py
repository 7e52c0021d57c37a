"""The HTTP source: a paged JSON API (``[sources.http]``, CONTRACT §1), read incrementally.

A page is asked for with ``?page_size=<n>&<cursor_param>=<cursor>`` (no cursor: the feed's
first page) and answers a JSON object with the records (``records_field``, an array) and the
next page's cursor (``next_cursor_field``, absent or null on the last page). An epoch reads
from where the previous one stopped, its ledger position's ``end``: the last page it read and
how many of that page's records it took; records appended to that page or after it are new.

An API cannot be listed, and a page asked for twice may not answer the same (its cursor
expires, the last page grows), so an epoch's records are pinned before the plan names them:
every page fetched goes into ``bronze/pulled/http`` under the epoch's number, and the entry
says from where to where the epoch read and how many records it pinned. A rerun of a planned
epoch reads the pinned records, never the API; a run killed while fetching has planned
nothing, and the next run fetches the same pages again under the same epoch number,
replacing whatever the killed run had pinned.

Each request is tried ``1 + retries`` times, waiting ``backoff_seconds * 2^(n-1)`` before
retry n, on timeouts, connection errors, 429 and 5xx; any other failure, or the last retry
failing, stops the run with a one-line :class:`SourceError` (nothing is planned then). The
token (``LAMBDA_SALES__SOURCES__HTTP__TOKEN``) is sent as ``Authorization: Bearer`` to the
API's own origin and never written anywhere: not in a URL, a message, a log line or a table.

Records are kept as the JSON text of each array element, numbers digit for digit, and parsed
by the shared JSON parser (an element that is not an object is ``malformed``). Their position:
``source_name`` the URL, ``source_key`` the page's cursor (null for the feed's first page),
``source_offset`` the index in the page, ``source_partition`` the page's number in the
epoch's read (so the first of two copies of an event is the one kept).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch_layer.sources.base import Entry, SourcePlan
from sales_core.config import ConfigError, HttpSourceConf, Secret, SourcesConf
from sales_core.errors import SourceError
from sales_core.events import parse_json_records
from sales_core.lakehouse import Lakehouse, ensure_table
from sales_core.local_rows import local_frame

log = logging.getLogger(__name__)

_USER_AGENT = "lambda-sales-batch/1"
_CHUNK = 20_000  # pinned records per append: the driver holds at most this many

PULLED_SCHEMA = T.StructType(
    [
        T.StructField("epoch", T.LongType(), False),
        T.StructField("page", T.IntegerType(), False),  # the page's number in the epoch's read
        T.StructField("cursor", T.StringType(), True),  # what it was asked for with
        T.StructField("index", T.LongType(), False),  # the record's index in the page
        T.StructField("record", T.StringType(), False),  # the array element as JSON text
    ]
)


@dataclass(frozen=True)
class Page:
    cursor: str | None  # the cursor the page was asked for with (None: the feed's first page)
    records: tuple[str, ...]  # each element of the records array, as JSON text
    next_cursor: str | None


@dataclass(frozen=True)
class Resume:
    """Where an epoch starts: a page, and how many of its records earlier epochs took."""

    cursor: str | None
    skip: int


def resume_point(taken: Sequence[Entry], url: str) -> Resume:
    """The end of the last epoch that read ``url`` (the feed's start if none did)."""
    mine = [e for e in taken if e.name == url]
    if not mine:
        return Resume(None, 0)
    end = mine[-1].fields["end"]
    return Resume(end["cursor"], int(end["taken"]))


class _Constant(str):
    """``NaN``/``Infinity`` as written: kept, so the record is judged malformed downstream."""


def record_text(value: Any) -> str:
    """JSON text of a parsed element; numbers (parsed as ``Decimal``) keep every digit."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {record_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(record_text(v) for v in value) + "]"
    if isinstance(value, (Decimal, _Constant)):
        return str(value)
    return json.dumps(value)


def parse_page(
    body: bytes, records_field: str, next_field: str
) -> tuple[tuple[str, ...], str | None]:
    """The records (as JSON texts) and the next cursor of a page's body.

    Raises:
        ValueError: the body is not a JSON object with a ``records_field`` array, or its next
            cursor is neither a string, a number nor null.
    """
    try:
        document = json.loads(
            body.decode("utf-8"), parse_float=Decimal, parse_int=Decimal, parse_constant=_Constant
        )
    except (UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        raise ValueError(f"the page is not JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict) or not isinstance(document.get(records_field), list):
        raise ValueError(f"the page is not a JSON object with a '{records_field}' array")
    cursor = document.get(next_field)
    if isinstance(cursor, Decimal):
        cursor = str(cursor)
    if cursor is not None and not isinstance(cursor, str):
        raise ValueError(f"the page's '{next_field}' is neither a string, a number nor null")
    return tuple(record_text(r) for r in document[records_field]), cursor


class _SameOriginAuthorization(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but send the token only to the origin it was configured for."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl)[:2] != urlsplit(req.full_url)[:2]:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_SameOriginAuthorization)


def redact(url: str) -> str:
    """A URL without credentials embedded in it (``user:password@``)."""
    return re.sub(r"//[^/@]*@", "//***@", url)


def _describe(exc: BaseException) -> str:
    cause = getattr(exc, "reason", None) if isinstance(exc, urllib.error.URLError) else exc
    cause = cause if isinstance(cause, BaseException) else exc
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


@dataclass(frozen=True)
class HttpSource:
    url: str
    cursor_param: str
    page_size: int
    records_field: str
    next_cursor_field: str
    token: Secret
    timeout_seconds: float
    retries: int
    backoff_seconds: float
    pulled: str  # the Delta table the epochs' records are pinned in
    kind: ClassVar[str] = "http"

    @classmethod
    def from_conf(cls, conf: HttpSourceConf, pulled: str) -> HttpSource:
        """The source of ``[sources.http]``.

        Raises:
            ConfigError: a key of the section has a value the source cannot use.
        """
        parts = urlsplit(conf.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"configuration key 'sources.http.url' must be an http:// or https:// URL, got {redact(conf.url)!r}"
            )
        for key, ok in (
            ("page_size", conf.page_size >= 1),
            ("retries", conf.retries >= 0),
            ("timeout_seconds", conf.timeout_seconds > 0),
            ("backoff_seconds", conf.backoff_seconds >= 0),
            ("cursor_param", bool(conf.cursor_param) and conf.cursor_param != "page_size"),
            ("records_field", bool(conf.records_field)),
            ("next_cursor_field", bool(conf.next_cursor_field)),
        ):
            if not ok:
                raise ConfigError(
                    f"configuration key 'sources.http.{key}' has an unusable value: {getattr(conf, key)!r}"
                )
        if not re.fullmatch(r"[\x21-\x7e]*", conf.token.get()):
            raise ConfigError(
                "secret 'sources.http.token' must be a bearer token: visible ASCII, no spaces or line breaks"
            )
        return cls(
            conf.url,
            conf.cursor_param,
            conf.page_size,
            conf.records_field,
            conf.next_cursor_field,
            conf.token,
            conf.timeout_seconds,
            conf.retries,
            conf.backoff_seconds,
            pulled,
        )

    # ---- plan: fetch what is new and pin it under the epoch --------------------------------

    def plan(self, spark: SparkSession, taken: Sequence[Entry], *, epoch: int) -> SourcePlan:
        start = resume_point(taken, self.url)
        ensure_table(spark, self.pulled, PULLED_SCHEMA, partitioned_by=("epoch",))
        pins = _Pins(spark, self.pulled, epoch)
        pages = 0
        last = Page(start.cursor, (), None)
        for number, (page, skip) in enumerate(self.pages(start)):
            pins.add(number, page, skip)
            pages, last = number + 1, page
        pins.flush()
        where = f"API {redact(self.url)}"
        if not pins.written:
            return SourcePlan((), f"{where}: nothing new ({pages} page(s) read)")
        position = {
            "start": {"cursor": start.cursor, "skip": start.skip},
            "end": {"cursor": last.cursor, "taken": len(last.records)},
            "pages": pages,
            "records": pins.written,
        }
        log.info(
            "HTTP source: %d records in %d page(s) pinned for epoch %d", pins.written, pages, epoch
        )
        return SourcePlan(
            (Entry.of(self.kind, self.url, position),),
            f"{where}: {pins.written} new records in {pages} page(s)",
        )

    def pages(self, start: Resume) -> Iterator[tuple[Page, int]]:
        """Every page from ``start`` to the last, each with how many of its records to skip."""
        cursor, skip = start.cursor, start.skip
        asked: set[str | None] = set()
        while True:
            asked.add(cursor)
            page = self.fetch(cursor)
            if len(page.records) < skip:
                raise SourceError(
                    self._failure(
                        cursor,
                        f"{len(page.records)} records where an earlier run took {skip}: "
                        "the API must only append (and page_size must not shrink)",
                    )
                )
            yield page, skip
            if page.next_cursor is None:
                return
            if page.next_cursor in asked:
                raise SourceError(self._failure(cursor, f"next cursor {page.next_cursor!r} again"))
            cursor, skip = page.next_cursor, 0

    def fetch(self, cursor: str | None) -> Page:
        """One page, retried on timeouts, connection errors, 429 and 5xx.

        Raises:
            SourceError: the page could not be had (retries ran out, or an answer a retry
                would not change: another 4xx, a body that is not a page).
        """
        url = self.page_url(cursor)
        attempts = 1 + self.retries
        for attempt in range(1, attempts + 1):
            try:
                body = self._get(url)
            except urllib.error.HTTPError as exc:
                exc.close()
                reason = f"HTTP {exc.code} {exc.reason}".rstrip()
                if exc.code != 429 and exc.code < 500:
                    raise SourceError(self._failure(cursor, reason)) from None
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
                reason = _describe(exc)
            else:
                try:
                    records, next_cursor = parse_page(
                        body, self.records_field, self.next_cursor_field
                    )
                except ValueError as exc:
                    raise SourceError(self._failure(cursor, str(exc))) from None
                log.debug("HTTP source: %d records at cursor %r", len(records), cursor)
                return Page(cursor, records, next_cursor)
            if attempt < attempts:
                delay = self.backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    "HTTP source: attempt %d of %d at cursor %r failed (%s); retrying in %.2fs",
                    attempt,
                    attempts,
                    cursor,
                    reason,
                    delay,
                )
                time.sleep(delay)
        tries = f"{attempts} attempt" + ("s" if attempts > 1 else "")
        raise SourceError(self._failure(cursor, f"{reason} (after {tries})"))

    def page_url(self, cursor: str | None) -> str:
        parts = urlsplit(self.url)
        query = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in (self.cursor_param, "page_size")
        ]
        query.append(("page_size", str(self.page_size)))
        if cursor is not None:
            query.append((self.cursor_param, cursor))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _get(self, url: str) -> bytes:
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": _USER_AGENT}
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token.get()}")
        with _OPENER.open(request, timeout=self.timeout_seconds) as response:
            return bytes(response.read())

    def _failure(self, cursor: str | None, reason: str) -> str:
        where = "its first page" if cursor is None else f"cursor {cursor!r}"
        return f"cannot read HTTP source {redact(self.url)} at {where}: {reason}"

    # ---- read: the records an epoch pinned --------------------------------------------------

    def read(self, spark: SparkSession, entries: Sequence[Entry], *, epoch: int) -> DataFrame:
        if len(entries) != 1:
            raise ValueError(f"epoch {epoch} has {len(entries)} HTTP entries, expected one")
        (entry,) = entries
        expected = int(entry.fields["records"])
        pinned = (
            spark.read.format("delta").load(self.pulled).where(F.col("epoch") == epoch)
            if DeltaTable.isDeltaTable(spark, self.pulled)
            else None
        )
        found = 0 if pinned is None else pinned.count()
        if pinned is None or found != expected:
            raise SourceError(
                f"epoch {epoch} pinned {expected} records from {redact(entry.name)} in "
                f"{self.pulled}, {found} are there: the pinned records were removed"
            )
        return pinned.select(
            F.lit(self.kind).alias("source"),
            F.lit(entry.name).alias("source_name"),
            F.col("page").alias("source_partition"),
            F.col("index").alias("source_offset"),
            F.col("cursor").alias("source_key"),
            F.col("record").alias("value"),
        ).transform(parse_json_records("value"))


class _Pins:
    """Appends an epoch's records to the pulled table in chunks; the first chunk replaces
    whatever an interrupted fetch had pinned under the same epoch."""

    def __init__(self, spark: SparkSession, path: str, epoch: int) -> None:
        self.spark, self.path, self.epoch = spark, path, epoch
        self.rows: list[tuple[int, int, str | None, int, str]] = []
        self.written = 0

    def add(self, number: int, page: Page, skip: int) -> None:
        self.rows.extend(
            (self.epoch, number, page.cursor, index, page.records[index])
            for index in range(skip, len(page.records))
        )
        if len(self.rows) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        writer = local_frame(self.spark, self.rows, PULLED_SCHEMA).write.format("delta")
        if self.written:
            writer = writer.mode("append")
        else:
            writer = writer.mode("overwrite").option("replaceWhere", f"epoch = {self.epoch}")
        writer.save(self.path)
        self.written += len(self.rows)
        self.rows = []


def source(sources: SourcesConf, lakehouse: Lakehouse) -> HttpSource | None:
    """The registry's factory: the API, when ``sources.http.enabled``."""
    if not sources.http.enabled:
        return None
    return HttpSource.from_conf(sources.http, lakehouse.pulled(HttpSource.kind))
