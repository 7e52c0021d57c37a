"""Realistic synthetic sales, seeded: the same seed gives the same events.

A configurable share of records is bad (each kind of rejection of CONTRACT §1), duplicated
(the same event again, as at-least-once producers do) or late (an ``event_time`` days back).
Events are plain dicts of JSON-ready values, or a raw string for a malformed record;
:mod:`devtools.writers` puts them in landing files, PostgreSQL or Kafka.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sales_core.events import EVENT_FIELDS

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
# The contract's fields, in its order (CSV headers and database columns follow it).
FIELDS = EVENT_FIELDS

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
