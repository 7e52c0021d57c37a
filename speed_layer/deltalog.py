"""Delta's transaction log on the driver: which commit a writer tagged and what it wrote, and
an append that conflicts with any concurrent one without reading the table.

The sink tags its master append with Delta's ``userMetadata`` option; Delta records it in the
commit's ``commitInfo``, next to the commit's own metrics. Reading the
newest JSON commit files of a local table costs a few milliseconds and no Spark job; for other
file systems the answer is None and the caller takes its slower, always-right path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from py4j.protocol import Py4JError, Py4JJavaError
from pyspark.sql import DataFrame, SparkSession

from sales_core.delta_log import Commit, commit_file, parse_commit
from speed_layer.checkpoint import local_path

log = logging.getLogger(__name__)


def _read_commit(table_path: str, version: int) -> Commit | None:
    path = local_path(table_path)
    assert path is not None
    try:
        text = (path / commit_file(version)).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return parse_commit(version, text)


def commits_from(table_path: str, version: int) -> list[Commit] | None:
    """The commits of the table from ``version`` on, in order (None: not a local table)."""
    if local_path(table_path) is None:
        return None
    commits = []
    while (commit := _read_commit(table_path, version)) is not None:
        commits.append(commit)
        version += 1
    return commits


# Whether Delta's transaction API can be reached through py4j in this process (see
# prepare_append); False after the first sign that it cannot.
DELTA_TXN_API = {"usable": True}


@dataclass(frozen=True)
class PreparedAppend:
    """An append whose files are written and whose commit is still to make (or to drop: the
    files of an append never committed are no part of the table, and ``VACUUM`` deletes them)."""

    _txn: Any
    _actions: Any
    _operation: Any

    def commit(self) -> None:
        """Commit the append (raises Delta's conflict error when it conflicts)."""
        self._txn.commit(self._actions, self._operation)


def prepare_append(
    spark: SparkSession,
    path: str,
    rows: DataFrame,
    *,
    user_metadata: str,
    expected_version: int | None = None,
    conflict_with_any_add: bool = False,
) -> PreparedAppend | None:
    """Write the files of an append of ``rows`` (in the table's exact column names and types)
    to the Delta table at ``path`` through Delta's transaction API: one Spark job, without the
    DataFrame writer's analysis and checks around it. The commit is the caller's
    (:meth:`PreparedAppend.commit`), so two appends can write side by side and commit in order.

    ``conflict_with_any_add``: the transaction reads nothing and yet conflicts with every
    commit that adds data after it started (Delta's ``readWholeTable``), where a read of the
    table inside the transaction costs a job to rebuild the table's file list at each new
    version. Otherwise the append is blind, as a DataFrame append is. ``expected_version``: the
    version the transaction must start from (the caller has seen every commit up to it).

    None, with nothing written, when the table has moved past ``expected_version`` or Delta's
    transaction API is not reachable (Spark Connect, another Delta build): the caller then
    takes its own path.
    """
    if not DELTA_TXN_API["usable"]:
        return None
    try:
        jvm = spark._jvm  # absent on Spark Connect
        assert jvm is not None
        delta = jvm.org.apache.spark.sql.delta
        txn = delta.DeltaLog.forTable(spark._jsparkSession, path).startTransaction()
        if expected_version is not None and int(txn.snapshot().version()) != expected_version:
            return None
        none = jvm.scala.Option.empty()
        operation = delta.DeltaOperations.Write(
            jvm.org.apache.spark.sql.SaveMode.Append,
            none,
            none,
            jvm.scala.Option.apply(user_metadata),
            none,
            none,
            none,
            none,
            none,
        )
    except (Py4JError, AssertionError, AttributeError) as exc:
        if isinstance(exc, Py4JJavaError):
            raise  # Delta itself failed: not a missing API
        log.info(
            "Delta's transaction API is not usable here (%s); appends go through the "
            "DataFrame writer instead",
            type(exc).__name__,
        )
        DELTA_TXN_API["usable"] = False
        return None
    if conflict_with_any_add:
        txn.readWholeTable()
    return PreparedAppend(txn, txn.writeFiles(rows._jdf), operation)
