"""The merged views in the Spark catalog (``sales_daily_merged``, ...), for SQL users.

Each view is plain Spark SQL over the Delta tables by path, so it works in ``spark-sql``, a
notebook or Databricks SQL alike, and it stays current: the hand-off is part of the view's
text, evaluated at every query (the newest generation's rows ⊕ the increments above that
generation's mark), not a copy made when the view was created. The text is rendered from
:mod:`serving_layer.merge_spec` (tables, the rows of each, the monoid per measure); the one
difference is the hand-off filter, whose mark is a column here (``try_element_at`` of the
generation's map, -1 for a stream it does not name) rather than a pinned value.

The generation and its hand-off mark come from the same row of one CTE over the generations
table, and the view rows of a published generation never change, so a query pairs a
generation with its own mark. Unlike the Python paths, which pin every table's version
explicitly, this relies on Spark/Delta resolving that CTE's table once per query (the reader
test races publishes against the fast path, not against these views).
"""

from __future__ import annotations

import os
from typing import Any

from pyspark.sql import SparkSession

from sales_core.lakehouse import Lakehouse, ensure_serving_tables, ensure_speed_increments
from sales_core.sql import string_literal
from sales_core.views import VIEWS, ViewDef
from serving_layer.merge_spec import (
    BATCH_ID,
    GENERATION,
    STREAM,
    RowFilter,
    merge_select,
    merge_spec,
)

SUFFIX = "_merged"


def merged_view_name(view_name: str, database: str | None = None) -> str:
    name = f"{view_name}{SUFFIX}"
    return f"{database}.{name}" if database else name


def _path_literal(path: str) -> str:
    """``delta.`path``` for a table path (local paths made absolute: a view outlives the cwd)."""
    if "://" not in path and not path.startswith("dbfs:"):
        path = os.path.abspath(path)
    return "delta.`" + path.replace("`", "``") + "`"


def _check_identifier(name: str, what: str) -> str:
    parts = name.split(".")
    if (
        not parts
        or not all(p.replace("_", "").isalnum() and not p[0].isdigit() for p in parts if p)
        or "" in parts
    ):
        raise ValueError(
            f"bad {what} name {name!r}: use letters, digits and _ (catalog.schema allowed)"
        )
    return name


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"no SQL literal for {value!r} in a view definition")
    return str(value) if isinstance(value, int) else string_literal(value)


def _conditions(rows: RowFilter, alias: str) -> list[str]:
    """The comparisons of a row filter that picks a view's rows, as SQL on ``alias``."""
    if rows.none_of:
        raise ValueError("a view's rows are picked by comparisons that all hold")
    return [f"{alias}.{column} {op} {_sql_literal(value)}" for column, op, value in rows.all_of]


def merged_view_select(view: ViewDef, lakehouse: Lakehouse) -> str:
    """The SELECT of one merged view (the merge of :mod:`serving_layer.merge_spec`), with the
    hand-off mark read from the generations table at query time.

    Column names come from the view definitions and paths are quoted identifiers: no text
    from a user ends up in the statement.
    """
    spec = merge_spec(lakehouse, view.name)
    gens = _path_literal(lakehouse.generations)
    gold = _path_literal(spec.batch_path)
    increments = _path_literal(spec.increments.path)
    above_mark = f"i.{BATCH_ID} > coalesce(try_element_at(c.handoff, i.{STREAM}), -1)"
    where = " AND ".join([*_conditions(spec.increments.rows, "i"), above_mark])
    merge = merge_select(view, "partials", sql_type=lambda t: t.simpleString())
    return f"""WITH current_generation AS (
  SELECT {GENERATION}, handoff FROM {gens} ORDER BY {GENERATION} DESC LIMIT 1
),
partials AS (
  SELECT {", ".join(f"g.{c}" for c in view.columns)}
  FROM {gold} AS g JOIN current_generation AS c ON g.{GENERATION} = c.{GENERATION}
  UNION ALL
  SELECT {", ".join(f"i.{c}" for c in view.columns)}
  FROM {increments} AS i LEFT JOIN current_generation AS c ON true
  WHERE {where}
)
{merge}"""


def merged_view_statements(
    lakehouse: Lakehouse, *, database: str | None = None, temporary: bool = False
) -> list[str]:
    """``CREATE OR REPLACE VIEW`` statements for the four merged views."""
    if database:
        _check_identifier(database, "database")
    kind = "TEMPORARY VIEW" if temporary else "VIEW"
    statements = []
    if database and not temporary:
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {database}")
    for name, view in VIEWS.items():
        target = merged_view_name(name, None if temporary else database)
        statements.append(
            f"CREATE OR REPLACE {kind} {target} AS\n{merged_view_select(view, lakehouse)}"
        )
    return statements


def ensure_view_sources(spark: SparkSession, lakehouse: Lakehouse) -> None:
    """Create the (empty) tables the views read, so a view can be created before any run."""
    ensure_serving_tables(spark, lakehouse)
    ensure_speed_increments(spark, lakehouse)


def register_merged_views(
    spark: SparkSession,
    lakehouse: Lakehouse,
    *,
    database: str | None = None,
    temporary: bool = False,
) -> list[str]:
    """Create or replace the four merged views; returns their names.

    ``database`` (``schema`` or ``catalog.schema``) is created if missing. Persistent views
    need a persistent catalog (a Hive metastore, Unity Catalog); ``temporary`` views live as
    long as the session.
    """
    ensure_view_sources(spark, lakehouse)
    for statement in merged_view_statements(lakehouse, database=database, temporary=temporary):
        spark.sql(statement)
    return [merged_view_name(name, None if temporary else database) for name in VIEWS]
