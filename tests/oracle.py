"""An independent, pure-Python statement of CONTRACT §3, for checking the Spark code.

Written from the contract, not from the code under test: events are dicts with typed
values (Decimal amounts, aware UTC datetimes), and views are plain dicts keyed by the
view's keys.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

VIEW_KEYS = {
    "sales_daily": ("event_date", "category", "region"),
    "sales_hourly": ("event_hour", "channel"),
    "customer_totals": ("customer_id",),
    "revenue_category_monthly": ("month", "revenue_category"),
}


def event(
    event_id: str,
    *,
    amount: str,
    quantity: int = 1,
    event_time: str = "2024-05-01T10:15:00Z",
    category: str = "books",
    region: str = "north",
    channel: str = "web",
    customer_id: str = "c1",
) -> dict[str, Any]:
    """A valid, normalised event with its derived fields, as the contract defines them."""
    ts = datetime.fromisoformat(event_time.replace("Z", "+00:00")).astimezone(timezone.utc)
    money = Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return {
        "event_id": event_id,
        "order_id": f"o-{event_id}",
        "product_id": "p1",
        "customer_id": customer_id,
        "category": category,
        "region": region,
        "channel": channel,
        "quantity": quantity,
        "amount": money,
        "event_time": ts,
        "event_date": ts.date(),
        "event_hour": ts.replace(minute=0, second=0, microsecond=0),
        "month": ts.strftime("%Y-%m"),
        "revenue_category": "high" if money > 1000 else "medium" if money > 100 else "low",
    }


def raw_json(e: dict[str, Any]) -> dict[str, Any]:
    """The event as a producer would send it (JSON-ready)."""
    return {
        "event_id": e["event_id"],
        "order_id": e["order_id"],
        "product_id": e["product_id"],
        "customer_id": e["customer_id"],
        "category": e["category"],
        "region": e["region"],
        "channel": e["channel"],
        "quantity": e["quantity"],
        "amount": str(e["amount"]),
        "event_time": e["event_time"].isoformat().replace("+00:00", "Z"),
    }


def compute_views(
    events: Iterable[dict[str, Any]],
) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """The four views over de-duplicated events (first occurrence of an event_id wins)."""
    seen: set[str] = set()
    unique = []
    for e in events:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            unique.append(e)
    views: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    for name, keys in VIEW_KEYS.items():
        groups: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(dict)
        for e in unique:
            g = groups[tuple(e[k] for k in keys)]
            g["events"] = g.get("events", 0) + 1
            g["revenue"] = g.get("revenue", Decimal("0.00")) + e["amount"]
            if name == "sales_daily":
                g["units"] = g.get("units", 0) + e["quantity"]
            if name == "customer_totals":
                g["first_event_time"] = min(
                    g.get("first_event_time", e["event_time"]), e["event_time"]
                )
                g["last_event_time"] = max(
                    g.get("last_event_time", e["event_time"]), e["event_time"]
                )
        views[name] = dict(groups)
    return views


def normalise_row(value: Any) -> Any:
    """Spark returns naive datetimes in the session zone (UTC): make them aware."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def rows_to_view(
    rows: Iterable[dict[str, Any]], name: str
) -> dict[tuple[Any, ...], dict[str, Any]]:
    keys = VIEW_KEYS[name]
    out = {}
    for row in rows:
        row = {k: normalise_row(v) for k, v in row.items()}
        out[tuple(row[k] for k in keys)] = {
            k: v for k, v in row.items() if k not in keys and k != "generation"
        }
    return out


# CONTRACT §1: the identity fields, then the rejecting rules in the table's order.
_REQUIRED_TEXT = ("event_id", "order_id", "product_id")
_DEFAULTED = ("customer_id", "category", "region", "channel")
_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Any) -> Decimal | None:
    """A JSON number or a numeric string as an exact decimal (None: not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int | float):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def judge(record: Any, now: datetime) -> dict[str, Any] | str:
    """CONTRACT §1 for one record as parsed from its source (a dict, or anything else for a
    record that is not a JSON object): the normalised event, or the reason it is rejected."""
    if not isinstance(record, dict):
        return "malformed"
    for name in _REQUIRED_TEXT:
        if _blank(record.get(name)):
            return f"missing_required:{name}"
    quantity = record.get("quantity")
    if _blank(quantity):
        return "missing_required:quantity"
    whole = _number(quantity)
    if whole is None or whole != whole.to_integral_value() or abs(whole) > 2**31 - 1:
        return "invalid_type:quantity"  # an integer of the master's schema (32 bits)
    if whole < 1:
        return "invalid_quantity"
    raw_amount = record.get("amount")
    if _blank(raw_amount):
        return "missing_required:amount"
    exact = _number(raw_amount)
    if exact is None:
        return "invalid_type:amount"
    with localcontext() as exactly:
        exactly.prec = 1000
        amount = exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if amount < 0:
        return "negative_amount"
    if amount > Decimal("1000000.00"):
        return "amount_out_of_range"
    raw_time = record.get("event_time")
    if _blank(raw_time):
        return "missing_required:event_time"
    try:
        parsed = datetime.fromisoformat(str(raw_time).strip().replace("Z", "+00:00"))
    except ValueError:
        return "invalid_type:event_time"
    when = (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(
        timezone.utc
    )
    if when < _EARLIEST:
        return "event_time_out_of_range"
    if when > now + timedelta(minutes=5):
        return "future_event_time"
    texts = {n: str(record[n]).strip() for n in _REQUIRED_TEXT}
    defaulted = {
        n: ("anonymous" if n == "customer_id" else "unknown")
        if _blank(record.get(n))
        else str(record[n]).strip()
        if n == "customer_id"
        else str(record[n]).strip().lower()
        for n in _DEFAULTED
    }
    made = event(
        texts["event_id"],
        amount=str(amount),
        quantity=int(whole),
        event_time=when.isoformat(),
        category=defaulted["category"],
        region=defaulted["region"],
        channel=defaulted["channel"],
        customer_id=defaulted["customer_id"],
    )
    made.update(order_id=texts["order_id"], product_id=texts["product_id"])
    return made


def parse_json_text(text: str) -> Any:
    """A Kafka value or a JSON Lines line as a record (a non-object for a malformed one)."""
    try:  # numbers exactly as written (1e400 is not infinity, 1000.005 not a binary float)
        return json.loads(text, parse_float=Decimal)
    except ValueError:
        return None


def read_landing_file(path: Path) -> list[Any]:
    """The records of a ``.jsonl`` or ``.csv`` landing file, in line order (an empty CSV cell
    is a missing value; a CSV line of more or fewer fields than the header cannot be read as
    a row of it: the line's text, a malformed record)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        lines = text.splitlines()
        header = next(csv.reader(lines[:1]), [])
        records: list[Any] = []
        for line in lines[1:]:
            row = next(csv.reader([line]), [])
            if len(row) != len(header):
                records.append(line)
            else:
                records.append(
                    {k: (v if v != "" else None) for k, v in zip(header, row, strict=True)}
                )
        return records
    return [parse_json_text(line) for line in text.splitlines() if line.strip()]


class Ledger:
    """Where each record must end (CONTRACT §2), fed in ingestion order: the first valid copy
    of an ``event_id`` is the event, later valid copies are duplicates, the others are
    quarantined with their reason."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.events: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.rejected: list[str] = []

    def add(self, record: Any) -> None:
        judged = judge(record, self.now)
        if isinstance(judged, str):
            self.rejected.append(judged)
        elif judged["event_id"] in self.events:
            self.duplicates += 1
        else:
            self.events[judged["event_id"]] = judged

    def views(self) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
        return compute_views(self.events.values())

    def reasons(self) -> dict[str, int]:
        return dict(Counter(self.rejected))


__all__ = [
    "VIEW_KEYS",
    "Ledger",
    "compute_views",
    "date",
    "event",
    "judge",
    "parse_json_text",
    "raw_json",
    "read_landing_file",
    "rows_to_view",
]
