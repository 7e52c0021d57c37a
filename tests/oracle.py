"""An independent, pure-Python statement of CONTRACT §3, for checking the Spark code.

Written from the contract, not from the code under test: events are dicts with typed
values (Decimal amounts, aware UTC datetimes), and views are plain dicts keyed by the
view's keys.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
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


__all__ = ["VIEW_KEYS", "compute_views", "date", "event", "raw_json", "rows_to_view"]
