"""Small DataFrames of rows the driver holds (a generation's publish row, ledger entries, a run
record, the micro-batches a reconciliation compares), built as literals in the query plan.

``spark.createDataFrame`` of a local list pickles the rows into an RDD that Python worker
processes read back: the first time in a session it starts PySpark's worker daemon (a Python
process compiling PySpark, then a forked worker per task), about 3 s and 2-3 CPU-s for a
one-row publish at the end of every batch run. As literals the rows never leave the JVM.
Above :data:`MAX_LITERAL_ROWS` rows (an HTTP source's pages) the plan would grow with the
data, and ``createDataFrame`` is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

MAX_LITERAL_ROWS = 256


def local_frame(
    spark: SparkSession, rows: Sequence[Mapping[str, Any] | Sequence[Any]], schema: T.StructType
) -> DataFrame:
    """``rows`` (mappings by field name, or sequences in the schema's order) as a DataFrame of
    ``schema``'s columns and types, as ``spark.createDataFrame(rows, schema)`` makes them."""
    if len(rows) > MAX_LITERAL_ROWS:
        return spark.createDataFrame(list(rows), schema)
    if not rows:
        return spark.range(0).select(
            *[F.lit(None).cast(field.dataType).alias(field.name) for field in schema.fields]
        )
    structs = [
        F.struct(
            *[
                _literal(value, field.dataType).alias(field.name)
                for value, field in zip(_values(row, schema), schema.fields, strict=True)
            ]
        )
        for row in rows
    ]
    return spark.range(1).select(F.inline(F.array(*structs)))


def _values(row: Mapping[str, Any] | Sequence[Any], schema: T.StructType) -> list[Any]:
    if isinstance(row, Mapping):
        return [row.get(field.name) for field in schema.fields]
    values = list(row)
    if len(values) != len(schema.fields):
        raise ValueError(f"a row of {len(values)} values for {len(schema.fields)} columns")
    return values


def _literal(value: Any, data_type: T.DataType) -> Column:
    """``value`` as a literal of ``data_type`` (maps, arrays and structs element by element)."""
    if value is None:
        return F.lit(None).cast(data_type)
    if isinstance(data_type, T.MapType):
        pairs = chain.from_iterable(
            (_literal(k, data_type.keyType), _literal(v, data_type.valueType))
            for k, v in value.items()
        )
        return F.create_map(*pairs).cast(data_type)
    if isinstance(data_type, T.ArrayType):
        return F.array(*[_literal(v, data_type.elementType) for v in value]).cast(data_type)
    if isinstance(data_type, T.StructType):
        return F.struct(
            *[
                _literal(v, field.dataType).alias(field.name)
                for v, field in zip(_values(value, data_type), data_type.fields, strict=True)
            ]
        )
    return F.lit(value).cast(data_type)
