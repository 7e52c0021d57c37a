"""Delta's transaction log on the driver: which commit a writer tagged and what it wrote, and
appends that skip the DataFrame writer: the files of a Spark DataFrame through Delta's
transaction API, or a small Arrow table written and committed from the driver by delta-rs.

The sink tags its master append with Delta's ``userMetadata`` option; Delta records it in the
commit's ``commitInfo``, next to the commit's own metrics. Reading the
newest JSON commit files of a local table costs a few milliseconds and no Spark job; on S3
(given delta-rs's storage options, :mod:`sales_core.object_store`) one GET each; for other
file systems the answer is None and the caller takes its slower, always-right path.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaProtocolError
from deltalake.fs import DeltaStorageHandler
from py4j.protocol import Py4JError, Py4JJavaError
from pyspark.sql import DataFrame, SparkSession

from sales_core.delta_log import (
    Commit,
    checksum_after_appends,
    checksum_file,
    commit_file,
    drop_stale_side_checksum,
    local_path,
    parse_commit,
    readable,
    write_checksum,
)
from sales_core.object_store import delta_rs_uri, is_s3

log = logging.getLogger(__name__)


def _read_commit(
    table_path: str, version: int, storage: DeltaStorageHandler | None
) -> Commit | None:
    if storage is not None:
        try:
            with storage.open_input_file(commit_file(version)) as handle:
                text = handle.read().decode("utf-8")
        except FileNotFoundError:
            return None
        return parse_commit(version, text)
    path = local_path(table_path)
    assert path is not None
    try:
        text = (path / commit_file(version)).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return parse_commit(version, text)


def commits_from(
    table_path: str, version: int, storage_options: dict[str, str] | None = None
) -> list[Commit] | None:
    """The commits of the table from ``version`` on, in order (None: a table the driver
    does not read itself, see :func:`readable`)."""
    if not readable(table_path, storage_options):
        return None
    storage = (
        DeltaStorageHandler(delta_rs_uri(table_path), storage_options)
        if is_s3(table_path)
        else None
    )
    commits = []
    while (commit := _read_commit(table_path, version, storage)) is not None:
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
    spark: SparkSession, path: str, rows: DataFrame, *, user_metadata: str
) -> PreparedAppend | None:
    """Write the files of a blind append of ``rows`` (in the table's exact column names and
    types) to the Delta table at ``path`` through Delta's transaction API: one Spark job,
    without the DataFrame writer's analysis and checks around it. The commit is the caller's
    (:meth:`PreparedAppend.commit`).

    None, with nothing written, when Delta's transaction API is not reachable (Spark Connect,
    another Delta build): the caller then takes its own path.
    """
    if not DELTA_TXN_API["usable"]:
        return None
    try:
        jvm = spark._jvm  # absent on Spark Connect
        assert jvm is not None
        delta = jvm.org.apache.spark.sql.delta
        txn = delta.DeltaLog.forTable(spark._jsparkSession, path).startTransaction()
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
    return PreparedAppend(txn, txn.writeFiles(rows._jdf), operation)


# Commits a kept table state takes before it is loaded again from the newest checkpoint (Delta
# and delta-rs write one every 100 commits by default).
RELOAD_AFTER = 100


def _may_have_moved(path: str, version: int) -> bool:
    """Whether the table at ``path`` may have versions after ``version``. A local table's
    versions are consecutive files: it has none when the next one is absent, a single
    ``stat``, where delta-rs brings a state forward by listing the whole ``_delta_log`` (on a
    local disk every entry of it: 57 ms at 40,000 commits, measured). Other tables: maybe."""
    root = local_path(path)
    return root is None or (root / commit_file(version + 1)).exists()


class DriverAppends:
    """Appends of Arrow tables that are already on the driver (a small micro-batch), written
    and committed by delta-rs in the process: a Parquet file and a commit in milliseconds,
    where a Spark job that writes a few thousand rows costs half a second on two cores.

    Delta's log is one protocol: Spark reads these commits, their ``userMetadata`` and their
    file statistics as its own, and a Spark writer racing one conflicts as with any writer
    (the log's next version is created only if absent, by either: on S3 by a conditional
    PUT). Tables the driver reads itself only (:func:`readable`). The table's state is kept
    between appends and brought forward from the log's new commits.
    """

    def __init__(self, storage_options: dict[str, str] | None = None) -> None:
        """``storage_options``: delta-rs's, for tables on S3 (None: local tables only)."""
        self._tables: dict[str, tuple[DeltaTable, int]] = {}
        self.storage_options = storage_options
        self.usable = True

    def handles(self, path: str) -> bool:
        """Whether this can append to the table at ``path`` (see :func:`readable`)."""
        return self.usable and readable(path, self.storage_options)

    def _table(self, path: str) -> DeltaTable:
        """The table at ``path`` as of its newest version: the state kept between appends is
        brought forward by the log's new commits, and loaded again from the newest checkpoint
        once it has taken :data:`RELOAD_AFTER` commits (a state brought forward forever keeps
        every commit since it was loaded, and each append then costs more: 30 ms for the 500th
        append of a day's stream, 167 ms for the 2,000th, measured)."""
        kept = self._tables.get(path)
        if kept is not None and kept[0].version() - kept[1] < RELOAD_AFTER:
            if _may_have_moved(path, kept[0].version()):
                kept[0].update_incremental()
            return kept[0]
        if is_s3(path):
            table = DeltaTable(delta_rs_uri(path), storage_options=self.storage_options)
        else:
            table = DeltaTable(path)
        self._tables[path] = (table, table.version())
        return table

    def append(
        self,
        path: str,
        rows: pa.Table,
        *,
        user_metadata: str,
        expected_version: int | None = None,
    ) -> bool:
        """Append ``rows`` (in the table's Arrow schema) to the Delta table at ``path`` in
        one commit tagged ``user_metadata``. ``expected_version``: commit as the version right
        after it or not at all (False: another writer committed since; nothing of this
        append is part of the table). Otherwise a blind append, retried on concurrent commits.

        Raises :class:`DriverAppendUnusable` when delta-rs cannot write this table (a
        protocol feature it lacks): nothing was committed, and the caller writes with Spark.
        """
        try:
            table = self._table(path)
            before = table.version()
            if expected_version is not None and before != expected_version:
                return False
            write_deltalake(
                table,
                rows,
                mode="append",
                commit_properties=CommitProperties(
                    custom_metadata={"userMetadata": user_metadata},
                    max_commit_retries=0 if expected_version is not None else None,
                ),
                # delta-rs lists the whole log after every commit to delete expired entries
                # (35 ms at 3,000 commits); Delta does that when it writes a checkpoint, and so
                # do these appends: once per RELOAD_AFTER commits.
                post_commithook_properties=PostCommitHookProperties(
                    create_checkpoint=True,
                    cleanup_expired_logs=(before + 1) % RELOAD_AFTER == 0,
                ),
            )
        except CommitFailedError:
            if expected_version is None:
                raise
            self._tables.pop(path, None)
            return False
        except DeltaProtocolError as exc:
            self._tables.pop(path, None)
            self.usable = False
            raise DriverAppendUnusable(str(exc)) from exc
        if is_s3(path):
            return True  # checksums: local tables only (Spark rebuilds the state instead)
        root = local_path(path)
        assert root is not None
        drop_stale_side_checksum(root)  # when delta-rs wrote a checkpoint: one unlink
        if expected_version is not None:
            _write_checksum(root, expected_version + 1)
            return True
        for commit in commits_from(path, before + 1) or []:  # a blind append: find its version
            if commit.user_metadata == user_metadata:
                _write_checksum(root, commit.version)
                break
        return True


def _write_checksum(root: Path, version: int) -> None:
    """Write the checksum of an append's ``version`` of the local table at ``root``, as Delta
    would after its own commit, when the version before it has one (else readers rebuild the
    state)."""
    try:
        previous = json.loads((root / checksum_file(version - 1)).read_text(encoding="utf-8"))
        text = (root / commit_file(version)).read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    state = checksum_after_appends(previous, text, str(uuid.uuid4()))
    if state is None:
        return
    write_checksum(root, version, state)


class DriverAppendUnusable(Exception):
    """delta-rs cannot write this table (a protocol feature it does not support)."""
