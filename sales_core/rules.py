"""Validation and normalisation of sales events (CONTRACT §1), as pure transformations.

:func:`validate` takes envelopes (see :mod:`sales_core.events`) and adds the typed,
normalised event plus ``reject_reason``: null for a valid event, else the first reason code
that applies, in the order of the contract's table. :func:`valid_events` and
:func:`quarantine_records` split the result. All of it works on batch and streaming
DataFrames alike and never runs an action.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sales_core.events import EVENT_FIELDS, LINEAGE_FIELDS, POSITION_FIELDS, WHITESPACE

MONEY = T.DecimalType(18, 2)
MAX_AMOUNT = "1000000.00"
MIN_EVENT_TIME = "2000-01-01 00:00:00"
FUTURE_TOLERANCE_MINUTES = 5
HIGH_REVENUE_ABOVE = 1000
MEDIUM_REVENUE_ABOVE = 100
INT_MAX = 2**31 - 1

REQUIRED_FIELDS = ("event_id", "order_id", "product_id")
MALFORMED = "malformed"
REASON_CODES: tuple[str, ...] = (
    MALFORMED,
    "missing_required:event_id",
    "missing_required:order_id",
    "missing_required:product_id",
    "missing_required:quantity",
    "invalid_type:quantity",
    "invalid_quantity",
    "missing_required:amount",
    "invalid_type:amount",
    "negative_amount",
    "amount_out_of_range",
    "missing_required:event_time",
    "invalid_type:event_time",
    "event_time_out_of_range",
    "future_event_time",
)

# A JSON number or a numeric string: optional sign, digits with an optional fraction, optional
# exponent. Anything else in `quantity`/`amount` is `invalid_type`.
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
# A number too large for a double reaches us as Infinity: a number, out of any range.
_NUMBER_OR_INFINITE = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|Infinity)$"
_WHOLE_NUMBER = r"^[+-]?\d+(\.0*)?$"
_EXPONENT_FORM = r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$"

EVENT_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("order_id", T.StringType(), False),
        T.StructField("product_id", T.StringType(), False),
        T.StructField("customer_id", T.StringType(), False),
        T.StructField("category", T.StringType(), False),
        T.StructField("region", T.StringType(), False),
        T.StructField("channel", T.StringType(), False),
        T.StructField("quantity", T.IntegerType(), False),
        T.StructField("amount", MONEY, False),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("event_hour", T.TimestampType(), False),
        T.StructField("month", T.StringType(), False),
        T.StructField("revenue_category", T.StringType(), False),
    ]
)
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA.fieldNames())

QUARANTINE_SCHEMA = T.StructType(
    [
        *LINEAGE_FIELDS,
        T.StructField("reason", T.StringType(), False),
        T.StructField("rejected_at", T.TimestampType(), False),
    ]
)


def _strip(c: Column) -> Column:
    """Trimmed of all whitespace (tabs and newlines too, not only spaces)."""
    return F.trim(c, F.lit(WHITESPACE))


def _blank_text(stripped: Column) -> Column:
    return stripped.isNull() | (stripped == "")


def _text_or_default(stripped: Column, default: str, *, lower: bool) -> Column:
    value = F.lower(stripped) if lower else stripped
    return F.when(_blank_text(stripped), F.lit(default)).otherwise(value)


def _is_integer(text: Column, number: Column) -> Column:
    """Whether a stripped quantity text (read as ``number``, a double) is a whole INT."""
    # Whole by its text (exact); the exponent form (2E3) is rare enough for a double check.
    whole = text.rlike(_WHOLE_NUMBER) | (text.rlike(_EXPONENT_FORM) & (number == F.floor(number)))
    return whole & number.isNotNull() & (F.abs(number) <= F.lit(INT_MAX))


def _amount_decimal(stripped: Column) -> Column:
    # A string to DECIMAL(38,2) cast rounds HALF_UP in one step: exact, no double involved.
    return stripped.try_cast(T.DecimalType(38, 2))


def _parse_event_time(stripped: Column) -> Column:
    # ISO-8601 with `Z` or an offset; without a zone the session zone applies, which the
    # session factory pins to UTC (CONTRACT: no zone means UTC). Minutes without seconds
    # (10:00Z) are ISO-8601 too: Spark's cast needs the seconds, so they are added.
    text = F.regexp_replace(
        stripped, r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2})(Z|[+-]\d{2}(:?\d{2})?)?$", "$1:00$2"
    )
    return text.try_cast("timestamp")


def _processing_time(now: datetime | Column) -> Column:
    if isinstance(now, Column):
        return now
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return F.lit(now).cast("timestamp")


@dataclass(frozen=True)
class _Parsed:
    """What the rules look at: each field's stripped text and the typed values read from it.

    :func:`validate` computes each of them once, in projections of their own, and passes
    column references; :func:`reject_reason` passes the expressions themselves.
    """

    text: Mapping[str, Column]
    quantity: Column  # the quantity as a double (null when not numeric)
    amount: Column  # the amount as DECIMAL(38,2), rounded half-up (null when not numeric)
    event_time: Column  # the event time as a timestamp (null when not a time)

    @classmethod
    def inline(cls) -> _Parsed:
        text = {name: _strip(F.col(name)) for name in EVENT_FIELDS}
        return cls(
            text=text,
            quantity=text["quantity"].try_cast("double"),
            amount=_amount_decimal(text["amount"]),
            event_time=_parse_event_time(text["event_time"]),
        )


def _reason(parsed: _Parsed, now: datetime | Column) -> Column:
    text = parsed.text
    quantity, amount, ts = parsed.quantity, parsed.amount, parsed.event_time
    limit = _processing_time(now) + F.expr(f"INTERVAL {FUTURE_TOLERANCE_MINUTES} MINUTES")
    checks: list[tuple[Column, str]] = [
        (F.col("malformed"), MALFORMED),
        *[(_blank_text(text[name]), f"missing_required:{name}") for name in REQUIRED_FIELDS],
        (_blank_text(text["quantity"]), "missing_required:quantity"),
        (~_is_integer(text["quantity"], quantity), "invalid_type:quantity"),
        (quantity < 1, "invalid_quantity"),
        (_blank_text(text["amount"]), "missing_required:amount"),
        (~text["amount"].rlike(_NUMBER_OR_INFINITE), "invalid_type:amount"),
        # Too large for DECIMAL(38,2): out of range (or negative, when it has a minus sign).
        (amount.isNull() & text["amount"].startswith("-"), "negative_amount"),
        (amount.isNull(), "amount_out_of_range"),
        (amount < 0, "negative_amount"),
        (amount > F.lit(MAX_AMOUNT).cast(MONEY), "amount_out_of_range"),
        (_blank_text(text["event_time"]), "missing_required:event_time"),
        (ts.isNull(), "invalid_type:event_time"),
        (ts < F.lit(MIN_EVENT_TIME).cast("timestamp"), "event_time_out_of_range"),
        (ts > limit, "future_event_time"),
    ]
    reason: Column = F.lit(None).cast("string")
    for condition, code in reversed(checks):
        reason = F.when(F.coalesce(condition, F.lit(False)), F.lit(code)).otherwise(reason)
    return reason


def reject_reason(now: datetime | Column) -> Column:
    """The first reason code that applies to an envelope row, or null when it is valid."""
    return _reason(_Parsed.inline(), now)


def revenue_category(amount: Column) -> Column:
    """``high`` above 1000, ``medium`` above 100, else ``low``."""
    return (
        F.when(amount > HIGH_REVENUE_ABOVE, F.lit("high"))
        .when(amount > MEDIUM_REVENUE_ABOVE, F.lit("medium"))
        .otherwise(F.lit("low"))
    )


def validate(
    *, now: datetime | Column, keep: Sequence[str] = ()
) -> Callable[[DataFrame], DataFrame]:
    """Validate and normalise envelopes.

    Args:
        now: the processing time that ``future_event_time`` is judged against.
        keep: input columns beyond the envelope to carry through unchanged.

    Returns:
        A transformation adding ``reject_reason``, ``defaulted`` (how many optional fields
        took their default) and the typed event columns (:data:`EVENT_COLUMNS`; meaningful
        only where ``reject_reason`` is null). Position columns and ``raw_record`` are kept.
    """

    def transform(df: DataFrame) -> DataFrame:
        # Each stripped text, then each typed value, in a projection of its own: the rules
        # read them many times, and Spark keeps a projection apart when inlining it would
        # repeat a costly expression (one regex or cast per use, per row, otherwise).
        texts = {name: f"_text_{name}" for name in EVENT_FIELDS}
        stripped = df.withColumns({alias: _strip(F.col(name)) for name, alias in texts.items()})
        text = {name: F.col(alias) for name, alias in texts.items()}
        typed = stripped.withColumns(
            {
                "_quantity": text["quantity"].try_cast("double"),
                "_amount": _amount_decimal(text["amount"]),
                "_event_time": _parse_event_time(text["event_time"]),
            }
        )
        parsed = _Parsed(
            text=text,
            quantity=F.col("_quantity"),
            amount=F.col("_amount"),
            event_time=F.col("_event_time"),
        )
        ts = parsed.event_time
        # try_cast: an amount too large for DECIMAL(18,2) is rejected, never an overflow error.
        amount = parsed.amount.try_cast(MONEY)
        event_date = F.to_date(ts)
        optional = {
            "customer_id": _text_or_default(text["customer_id"], "anonymous", lower=False),
            "category": _text_or_default(text["category"], "unknown", lower=True),
            "region": _text_or_default(text["region"], "unknown", lower=True),
            "channel": _text_or_default(text["channel"], "unknown", lower=True),
        }
        defaulted = sum(
            (F.when(_blank_text(text[name]), 1).otherwise(0) for name in optional), F.lit(0)
        )
        return typed.select(
            *[F.col(name) for name in POSITION_FIELDS],
            F.col("raw_record"),
            _reason(parsed, now).alias("reject_reason"),
            defaulted.alias("defaulted"),
            F.col("event_id"),
            F.col("order_id"),
            F.col("product_id"),
            *[column.alias(name) for name, column in optional.items()],
            F.when(_is_integer(text["quantity"], parsed.quantity), parsed.quantity)
            .cast("int")
            .alias("quantity"),
            amount.alias("amount"),
            ts.alias("event_time"),
            event_date.alias("event_date"),
            F.date_trunc("hour", ts).alias("event_hour"),
            F.date_format(event_date, "yyyy-MM").alias("month"),
            revenue_category(amount).alias("revenue_category"),
            *[F.col(name) for name in keep],
        )

    return transform


def valid_events(df: DataFrame) -> DataFrame:
    """The valid rows of :func:`validate`'s output: typed events with their positions."""
    return df.where(F.col("reject_reason").isNull()).select(*EVENT_COLUMNS, *POSITION_FIELDS)


def quarantine_records(rejected_at: datetime | Column) -> Callable[[DataFrame], DataFrame]:
    """The rejected rows of :func:`validate`'s output, shaped for the quarantine table."""

    def transform(df: DataFrame) -> DataFrame:
        return df.where(F.col("reject_reason").isNotNull()).select(
            *POSITION_FIELDS,
            F.col("raw_record"),
            F.col("reject_reason").alias("reason"),
            _processing_time(rejected_at).alias("rejected_at"),
        )

    return transform


def dedupe_events(
    order_by: tuple[str, ...] = ("source", "source_name", "source_partition", "source_offset"),
) -> Callable[[DataFrame], DataFrame]:
    """Keep one event per ``event_id``: the first by position (the first one ingested wins).

    An aggregation (``min_by``), so it also runs on streaming DataFrames. Adds ``copies``:
    how many rows carried that ``event_id`` (``copies - 1`` are duplicates).
    """

    def transform(df: DataFrame) -> DataFrame:
        payload = [c for c in df.columns if c != "event_id"]
        # Ties on position (rows without one, e.g. database rows) fall back to the content.
        first = F.min_by(
            F.struct(*[F.col(c) for c in payload]),
            F.struct(
                *[F.col(c) for c in order_by], *[F.col(c) for c in payload if c not in order_by]
            ),
        )
        return (
            df.groupBy("event_id")
            .agg(first.alias("_first"), F.count(F.lit(1)).alias("copies"))
            .select("event_id", *[F.col(f"_first.{c}").alias(c) for c in payload], "copies")
        )

    return transform


__all__ = [
    "EVENT_COLUMNS",
    "EVENT_FIELDS",
    "EVENT_SCHEMA",
    "QUARANTINE_SCHEMA",
    "REASON_CODES",
    "dedupe_events",
    "quarantine_records",
    "reject_reason",
    "revenue_category",
    "valid_events",
    "validate",
]
