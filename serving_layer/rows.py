"""Rows of a view as users see them: filters parsed against the view's types, and the
three output formats of ``lambda-sales query`` (the HTTP API answers the jsonl shape)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from pyspark.sql import types as T

from sales_core.views import ViewDef

FORMATS = ("table", "jsonl", "csv")


class FilterError(ValueError):
    """A filter that names an unknown column or carries a value of the wrong type."""


INTEGER_BOUNDS = {T.LongType: (-(2**63), 2**63 - 1), T.IntegerType: (-(2**31), 2**31 - 1)}


def decimal_pattern(whole: int, scale: int) -> str:
    """A decimal of at most ``whole`` digits before the point and ``scale`` after it."""
    fraction = rf"(\.[0-9]{{1,{scale}}})?" if scale else ""
    return rf"^-?[0-9]{{1,{whole}}}{fraction}$"


def parse_value(view: ViewDef, column: str, text: str) -> Any:
    """``text`` as a value of ``column``'s type in ``view``."""
    types = {f.name: f.dataType for f in view.schema.fields}
    if column not in types:
        raise FilterError(
            f"unknown column '{column}' for view {view.name}: choose one of {', '.join(view.columns)}"
        )
    dtype = types[column]
    try:
        if isinstance(dtype, T.DateType):
            return date.fromisoformat(text)
        if isinstance(dtype, T.TimestampType):
            # RFC 3339 lets 't' and 'z' be lower case; an instant without a zone is UTC
            value = datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
            value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
            return value.astimezone(timezone.utc)
        if isinstance(dtype, (T.LongType, T.IntegerType)):
            low, high = INTEGER_BOUNDS[type(dtype)]
            number = int(text)
            if not low <= number <= high:
                raise ValueError("out of range")
            return number
        if isinstance(dtype, T.DecimalType):
            if not re.fullmatch(decimal_pattern(dtype.precision - dtype.scale, dtype.scale), text):
                raise ValueError("not a decimal of the column's precision")
            return Decimal(text)
    except (ValueError, InvalidOperation, OverflowError):
        raise FilterError(
            f"bad value {text!r} for column '{column}' ({dtype.simpleString()})"
        ) from None
    return text


def parse_filters(view: ViewDef, expressions: Sequence[str]) -> dict[str, Any]:
    """``["COL=VALUE", ...]`` as ``{column: typed value}``."""
    filters: dict[str, Any] = {}
    for expression in expressions:
        column, sep, text = expression.partition("=")
        if not sep or not column.strip():
            raise FilterError(f"filter {expression!r} is not of the form COL=VALUE")
        filters[column.strip()] = parse_value(view, column.strip(), text)
    return filters


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def to_json_value(value: Any) -> Any:
    """JSON-ready value; decimals become exact JSON numbers (see :func:`dumps_row`)."""
    if isinstance(value, (datetime, date)):
        return to_text(value)
    return value


def dumps_row(row: Mapping[str, Any]) -> str:
    """One row as a JSON object; money keeps its two decimal places exactly."""
    parts = []
    for key, value in row.items():
        if isinstance(value, Decimal):
            encoded = str(value)
        else:
            encoded = json.dumps(to_json_value(value))
        parts.append(f"{json.dumps(key)}: {encoded}")
    return "{" + ", ".join(parts) + "}"


def render(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Rows rendered as an aligned ``table``, ``jsonl`` or ``csv``."""
    rows = list(rows)
    if fmt == "jsonl":
        return "".join(dumps_row({c: r[c] for c in columns}) + "\n" for r in rows)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([to_text(r[c]) for c in columns])
        return buffer.getvalue()
    if fmt != "table":
        raise FilterError(f"unknown format '{fmt}': choose one of {', '.join(FORMATS)}")
    cells = [[to_text(r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and isinstance(rows[0][c], (int, float, Decimal)) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w)
            for v, w, n in zip(values, widths, numeric, strict=False)
        ).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"
