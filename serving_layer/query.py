"""A query on a merged view, stated once for every engine (Spark, the fast path, HTTP).

A :class:`ViewQuery` holds typed values only: column names come from the view's definition
(the allow-list) and values are parsed to the column's type by :mod:`serving_layer.rows`.
Each engine turns :meth:`ViewQuery.predicates` into its own filter expressions with the
values as parameters, so no SQL text is ever built from user input.

``--from DATE --to DATE`` (``from``/``to`` over HTTP) select whole UTC days, both ends
included, on the view's time key:

=========================== ==========================================================
view                        rows kept
=========================== ==========================================================
``sales_daily``             ``from <= event_date <= to``
``sales_hourly``            ``from 00:00 <= event_hour < (to + 1 day) 00:00``
``revenue_category_monthly`` the months the range touches: ``month(from) <= month <= month(to)``
``customer_totals``         customers active in the range: ``last_event_time >= from 00:00``
                            and ``first_event_time < (to + 1 day) 00:00`` (their span of
                            activity overlaps the range); the totals stay all-time totals
=========================== ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal

from sales_core.errors import PipelineError
from sales_core.views import ViewDef, get_view
from serving_layer.rows import FilterError, parse_filters

Operator = Literal["=", ">=", "<=", "<"]
Predicate = tuple[str, Operator, Any]

# The largest page the HTTP API answers (the CLI answers every row unless told otherwise).
MAX_LIMIT = 100_000
# The largest offset the HTTP API takes (far past any view's rows; DuckDB's OFFSET is a BIGINT).
MAX_OFFSET = 1_000_000_000_000


class NoViewsError(PipelineError):
    """Neither layer has written any view yet."""


@dataclass(frozen=True)
class ViewQuery:
    """Rows of one merged view: equality filters, a UTC date range, a page.

    Rows are always ordered by the view's keys, so pages (``limit``/``offset``) are stable.
    """

    view: ViewDef
    filters: Mapping[str, Any] = field(default_factory=dict)
    date_from: date | None = None
    date_to: date | None = None
    limit: int | None = None
    offset: int = 0

    def predicates(self) -> list[Predicate]:
        """Every condition as ``(column, operator, typed value)``; all must hold."""
        out: list[Predicate] = [(column, "=", value) for column, value in self.filters.items()]
        return out + range_predicates(self.view, self.date_from, self.date_to)


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def _after(day: date) -> datetime | None:
    """The start of the day after ``day`` (None: no day after the last one Python has)."""
    return None if day == date.max else _start_of(day + timedelta(days=1))


def range_predicates(
    view: ViewDef, date_from: date | None, date_to: date | None
) -> list[Predicate]:
    """The conditions of a ``from``/``to`` range on ``view`` (see the module docstring)."""
    out: list[Predicate] = []
    end = _after(date_to) if date_to else None  # None too after the last day Python has
    if view.name == "sales_daily":
        if date_from:
            out.append(("event_date", ">=", date_from))
        if date_to:
            out.append(("event_date", "<=", date_to))
    elif view.name == "sales_hourly":
        if date_from:
            out.append(("event_hour", ">=", _start_of(date_from)))
        if end:
            out.append(("event_hour", "<", end))
    elif view.name == "revenue_category_monthly":
        if date_from:
            out.append(("month", ">=", date_from.strftime("%Y-%m")))
        if date_to:
            out.append(("month", "<=", date_to.strftime("%Y-%m")))
    elif view.name == "customer_totals":
        if date_from:
            out.append(("last_event_time", ">=", _start_of(date_from)))
        if end:
            out.append(("first_event_time", "<", end))
    elif date_from or date_to:
        raise FilterError(f"view {view.name} has no time key for --from/--to")
    return out


def parse_date(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise FilterError(f"bad date {text!r} for {what}: use YYYY-MM-DD") from None


def parse_count(
    text: str | int | None, what: str, *, default: int | None, maximum: int | None = None
) -> int | None:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise FilterError(f"bad {what} {text!r}: use a whole number") from None
    if value < 0 or (maximum is not None and value > maximum):
        raise FilterError(
            f"bad {what} {value}: use 0 to {maximum}"
            if maximum is not None
            else f"bad {what} {value}: use 0 or more"
        )
    return value


def build_query(
    view_name: str,
    where: Sequence[str] = (),
    *,
    date_from: str | None = None,
    date_to: str | None = None,
    limit: str | int | None = None,
    offset: str | int | None = None,
    default_limit: int | None = None,
    max_limit: int | None = None,
    max_offset: int | None = None,
    empty_range: bool = False,
) -> ViewQuery:
    """A :class:`ViewQuery` from user text; :class:`FilterError` (one line) when any part is bad.

    Raises:
        ValueError: ``view_name`` is not a view.
        FilterError: an unknown column, a value of the wrong type, a bad date or count, a
            range whose ``to`` is before its ``from`` (unless ``empty_range``: no rows then).
    """
    view = get_view(view_name)
    filters = parse_filters(view, where)
    start = parse_date(date_from, "from") if date_from is not None else None
    end = parse_date(date_to, "to") if date_to is not None else None
    if start and end and start > end and not empty_range:
        raise FilterError(f"the range is empty: from {start} is after to {end}")
    return ViewQuery(
        view,
        filters,
        start,
        end,
        parse_count(limit, "limit", default=default_limit, maximum=max_limit),
        parse_count(offset, "offset", default=0, maximum=max_offset) or 0,
    )


def normalise_value(value: Any) -> Any:
    """One representation per value across engines: timestamps aware in UTC (Spark returns
    them naive in the session's UTC zone, Arrow with a UTC zone object)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    return value


@dataclass(frozen=True)
class Answer:
    """Rows of a merged view (column → value, ordered by the keys) and what they come from.

    Attributes:
        generation: the batch generation merged (None before the first publish).
        handoff: that generation's hand-off mark (increments above it were added).
        versions: the pinned Delta version of every table read.
    """

    rows: list[dict[str, Any]]
    generation: int | None
    handoff: dict[str, int]
    versions: dict[str, int]
