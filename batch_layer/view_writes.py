"""Writing one generation of a batch view: from the driver by delta-rs when the view is small
(views are aggregates), else by Spark.

Spark's Delta writer costs a small table about a second of fixed work on two cores whatever
its size (eight Spark jobs for a ``replaceWhere`` overwrite: the table's state, the files it
replaces, the write, statistics; measured): at 1M events the four view writes took 9.1 s, of
which the views' computation was under 4 (BENCHMARKS.md). Even at tens of millions of events
an aggregate is a few hundred thousand rows, which the driver collects as Arrow and delta-rs
writes and commits in milliseconds in the same Delta protocol: one commit that removes the
replaced generations' files and adds the new one's, created only if that version is absent
(on S3 by a conditional PUT), as Spark's would be.
"""

from __future__ import annotations

import logging

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaProtocolError
from pyspark.sql import DataFrame
from pyspark.sql.pandas.types import to_arrow_schema

from sales_core.delta_log import readable
from sales_core.lakehouse import view_table_schema
from sales_core.object_store import delta_rs_uri

log = logging.getLogger(__name__)

# Above this many rows, a view stays on the executors and Spark writes it (a driver holds
# about 100 bytes a row as Arrow: 1M rows ~ 100 MB).
DRIVER_WRITE_MAX_ROWS = 1_000_000


class DriverWriteUnusable(Exception):
    """delta-rs cannot write this table (a protocol feature it does not support): nothing
    was committed."""


def as_table_rows(rows: pa.Table, name: str) -> pa.Table:
    """A generation's rows of view ``name`` collected from Spark (Arrow: timestamps in the
    session's time zone, every field nullable) in its table's exact Arrow schema."""
    return rows.cast(to_arrow_schema(view_table_schema(name), timezone="UTC"))


def overwrite_on_driver(
    path: str, rows: pa.Table, *, predicate: str, storage_options: dict[str, str] | None
) -> None:
    """Replace the rows of the Delta table at ``path`` that match ``predicate`` (a condition
    on its partition column) with ``rows``, in one commit written by delta-rs.

    Raises :class:`DriverWriteUnusable` when delta-rs cannot write the table."""
    try:
        write_deltalake(
            DeltaTable(delta_rs_uri(path), storage_options=storage_options),
            rows,
            mode="overwrite",
            predicate=predicate,
        )
    except DeltaProtocolError as exc:
        raise DriverWriteUnusable(str(exc)) from exc


def driver_writable(paths: list[str], storage_options: dict[str, str] | None) -> bool:
    """Whether the driver can write every table of ``paths`` itself (local, or S3 with
    delta-rs's storage options)."""
    return all(readable(p, storage_options) for p in paths)


def overwrite_with_spark(rows: DataFrame, path: str, *, predicate: str) -> None:
    """The same overwrite, by Spark's Delta writer (``replaceWhere``)."""
    rows.write.format("delta").mode("overwrite").option("replaceWhere", predicate).save(path)
