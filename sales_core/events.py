"""The sales event (CONTRACT §1): its fields, the raw envelope every source is read into,
and the parsers that turn JSON, CSV and typed rows (Parquet, JDBC) into that envelope.

Every source becomes the same *envelope*: where the record came from, the record as
received, and each contract field as the raw text it carried (null when absent). Validation
(:mod:`sales_core.rules`) then runs on envelopes only, so batch and speed layers cannot
disagree about what a record means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

EVENT_FIELDS: tuple[str, ...] = (
    "event_id",
    "order_id",
    "product_id",
    "customer_id",
    "category",
    "region",
    "channel",
    "quantity",
    "amount",
    "event_time",
)

# Where a record came from. ``source_offset`` is the Kafka offset, the file line (1-based),
# the Parquet row index or the index in an API page; ``source_key`` is the Kafka key, the
# database row's key or the API page's cursor; ``source_partition`` the Kafka partition or the
# API page's number in the batch epoch's read.
POSITION_FIELDS: tuple[str, ...] = (
    "source",
    "source_name",
    "source_partition",
    "source_offset",
    "source_key",
)

# Where a record came from and its text as read: the envelope's first columns, and the
# quarantine's (a reject keeps them unchanged, CONTRACT §2).
LINEAGE_FIELDS: tuple[T.StructField, ...] = (
    T.StructField("source", T.StringType(), False),
    T.StructField("source_name", T.StringType(), True),
    T.StructField("source_partition", T.IntegerType(), True),
    T.StructField("source_offset", T.LongType(), True),
    T.StructField("source_key", T.StringType(), True),
    T.StructField("raw_record", T.StringType(), True),
)

ENVELOPE_SCHEMA = T.StructType(
    [
        *LINEAGE_FIELDS,
        T.StructField("malformed", T.BooleanType(), False),
        *[T.StructField(name, T.StringType(), True) for name in EVENT_FIELDS],
    ]
)
ENVELOPE_COLUMNS: tuple[str, ...] = tuple(ENVELOPE_SCHEMA.fieldNames())

_CORRUPT = "_corrupt_record"
# A plain from_json of every field as text: the least any JSON source does (bench/parse.py's
# baseline); the parser itself reads one VARIANT per record.
_JSON_FIELDS_SCHEMA = T.StructType(
    [T.StructField(name, T.StringType(), True) for name in EVENT_FIELDS]
    + [T.StructField(_CORRUPT, T.StringType(), True)]
)
_JSON_OPTIONS = {
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": _CORRUPT,
    "allowSingleQuotes": "false",
}
# What Java's regex `\s` matches: the whitespace around a JSON object.
WHITESPACE = " \t\n\x0b\f\r"
# With string literals blanked out, a `}` followed by anything but `,`, `}` or `]` means text
# after the object (two objects on a line): the variant parser reads only the first.
# Possessive: the alternatives never overlap, so no backtracking is needed (and none is done:
# the plain form was the costliest expression of the parser).
_JSON_STRING = r'"(?:[^"\\]++|\\.)*+"'
_TEXT_AFTER_OBJECT = r"\}\s*[^\s,}\]]"
# JSON number tokens that the variant holds as doubles, read again as exact decimals: money
# rounded half-up straight to cents, quantities kept whole.
_EXACT_NUMBERS_SCHEMA = T.StructType(
    [
        T.StructField("amount", T.DecimalType(38, 2), True),
        T.StructField("quantity", T.DecimalType(38, 18), True),
    ]
)


_MALFORMED = "_malformed"
_VARIANT = "_variant"
_EXACT = ("quantity", "amount")


def _envelope(
    df: DataFrame,
    fields: Column,
    malformed: Column,
    raw_record: Column,
    keep: Sequence[str] = (),
) -> DataFrame:
    """Project ``df`` (already carrying the position columns) onto the envelope schema.

    ``malformed`` is evaluated once, in a projection of its own: every field depends on it,
    and Spark keeps a projection apart when inlining would repeat a costly expression (here,
    a third JSON parse and two regular expressions over the whole record, once per field).
    """
    flagged = df.withColumn(_MALFORMED, malformed)
    is_malformed = F.col(_MALFORMED)
    return flagged.select(
        *[F.col(name) for name in POSITION_FIELDS],
        raw_record.alias("raw_record"),
        is_malformed.alias("malformed"),
        *[
            F.when(~is_malformed, fields.getField(name)).cast("string").alias(name)
            for name in EVENT_FIELDS
        ],
        *[F.col(name) for name in keep],
    )


def parse_json_records(
    value_col: str = "value", *, keep: Sequence[str] = ()
) -> Callable[[DataFrame], DataFrame]:
    """Parse one JSON object per row (a JSONL line or a Kafka value) into the envelope (plus
    the input columns named in ``keep``, unchanged).

    One JSON parse per record: the text becomes a VARIANT (``try_parse_json``: strict JSON,
    no single quotes, no duplicate keys, no NaN), and each field is read from it as text.
    A JSON number is kept in the variant as an exact decimal, so an amount such as
    ``1000.005`` reaches the decimal rounding without passing through a double. Only a number
    the variant holds as a double (exponent form, or more than 38 digits: rare) is read again
    from the text as an exact decimal. Unknown fields are ignored; a row that is not a JSON
    object, or has text after the object, is flagged ``malformed``.
    """

    def transform(df: DataFrame) -> DataFrame:
        value = F.col(value_col)
        parsed = df.withColumn(_VARIANT, F.try_parse_json(value))
        variant = F.col(_VARIANT)
        # A JSON object, possibly padded with whitespace: the variant parser accepts any JSON
        # value and stops after the first one, so the text's ends and what follows the object
        # are checked here. The costly check (string literals blanked out) runs only for the
        # rare records where a `}` is followed by something other than `,`, `}` or `]`.
        trimmed = F.trim(value, F.lit(WHITESPACE))
        is_object = trimmed.startswith("{") & trimmed.endswith("}")
        text_after_object = F.when(
            value.rlike(_TEXT_AFTER_OBJECT),
            F.regexp_replace(value, _JSON_STRING, '""').rlike(_TEXT_AFTER_OBJECT),
        ).otherwise(F.lit(False))
        malformed = value.isNull() | variant.isNull() | ~is_object | text_after_object
        # Each numeric field's value once, in a projection of its own (read twice below).
        numbers = parsed.withColumns(
            {f"_v_{name}": F.try_variant_get(variant, f"$.{name}", "variant") for name in _EXACT}
        )
        fields = F.struct(
            *[
                _exact_text(F.col(f"_v_{name}"), F.col(value_col), name).alias(name)
                if name in _EXACT
                else F.try_variant_get(variant, f"$.{name}", "string").alias(name)
                for name in EVENT_FIELDS
            ]
        )
        return _envelope(numbers, fields, F.coalesce(malformed, F.lit(True)), value, keep)

    return transform


def _exact_text(field: Column, value: Column, name: str) -> Column:
    """A numeric field's text: exact where the variant holds an exact number or a string.

    A JSON number the variant keeps as a double (``1.0049999999999999e0``, or more than 38
    digits) is read again from the record's text as an exact decimal; a number beyond any
    decimal's range stays the double's text (``Infinity``: a number, out of any range).
    """
    text = F.try_variant_get(field, "$", "string")
    exact = F.from_json(value, _EXACT_NUMBERS_SCHEMA, {"allowSingleQuotes": "false"}).getField(name)
    return F.when(
        F.schema_of_variant(field) == "DOUBLE", F.coalesce(exact.cast("string"), text)
    ).otherwise(text)


def csv_header_fields(header_line: str) -> list[str]:
    """The column names of a CSV header line, trimmed and lower-cased (quotes removed)."""
    import csv

    row = next(csv.reader([header_line.lstrip("\ufeff")]), [])
    return [name.strip().lower() for name in row]


def parse_csv_records(
    header: Sequence[str], value_col: str = "value", *, keep: Sequence[str] = ()
) -> Callable[[DataFrame], DataFrame]:
    """Parse CSV data lines that share ``header`` into the envelope (plus the input columns
    named in ``keep``, unchanged).

    A line whose token count differs from the header, or that Spark cannot read, is flagged
    ``malformed``. Columns that are not event fields are ignored (schema drift).
    """
    names = [name if name else f"_unnamed_{i}" for i, name in enumerate(header)]
    seen: set[str] = set()
    unique = []
    for i, name in enumerate(names):
        unique.append(name if name not in seen and name != _CORRUPT else f"_dup_{i}_{name}")
        seen.add(name)
    schema = T.StructType(
        [T.StructField(name, T.StringType(), True) for name in unique]
        + [T.StructField(_CORRUPT, T.StringType(), True)]
    )

    def transform(df: DataFrame) -> DataFrame:
        value = F.col(value_col)
        ddl = ", ".join(f"`{field.name}` STRING" for field in schema.fields)
        # RFC 4180 quoting: a quote inside a quoted field is written twice.
        parsed = F.from_csv(
            value, ddl, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT, "escape": '"'}
        )
        with_parsed = df.withColumn("_parsed", parsed)
        fields = F.struct(
            *[
                (
                    F.col(f"_parsed.`{name}`") if name in unique else F.lit(None).cast("string")
                ).alias(name)
                for name in EVENT_FIELDS
            ]
        )
        malformed = (
            value.isNull() | (F.trim(value) == "") | F.col(f"_parsed.{_CORRUPT}").isNotNull()
        )
        return _envelope(with_parsed, fields, F.coalesce(malformed, F.lit(True)), value, keep)

    return transform


def _field_as_text(df: DataFrame, name: str) -> Column:
    """A typed column rendered as the text a JSON producer would have sent."""
    if name not in df.columns:
        return F.lit(None).cast("string")
    dtype = df.schema[name].dataType
    column = F.col(f"`{name}`")
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        # An explicit offset makes the text mean the same instant whatever the session zone.
        pattern = (
            "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
            if isinstance(dtype, T.TimestampType)
            else "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"
        )
        return F.date_format(column, pattern)
    if isinstance(dtype, (T.StructType, T.ArrayType, T.MapType)):
        return F.to_json(column)
    return column.cast("string")


def parse_typed_records(df: DataFrame) -> DataFrame:
    """Turn typed rows (Parquet, JDBC) that carry the position columns into the envelope.

    Column names are matched case-insensitively; extra columns are ignored. The raw record
    is the whole row as JSON.
    """
    lowered = (
        df.toDF(*[c.lower() for c in df.columns])
        if len(set(c.lower() for c in df.columns)) == len(df.columns)
        else df
    )
    payload = [c for c in lowered.columns if c not in POSITION_FIELDS]
    fields = F.struct(*[_field_as_text(lowered, name).alias(name) for name in EVENT_FIELDS])
    raw = F.to_json(F.struct(*[F.col(f"`{c}`") for c in payload]))
    return _envelope(lowered, fields, F.lit(False), raw)
