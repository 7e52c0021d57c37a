"""Compaction of the stream's own small files, in a thread of the streaming job, off the hot
path.

A micro-batch adds a small file to the speed increments and one to the master dataset; at a
1-second trigger that is 86,400 files a day in each, and every cold reader lists and opens
them, and every append of the stream itself costs more as the table's file count grows.
Every ``speed.compact_interval_seconds`` the job runs Delta's ``OPTIMIZE`` (bin-packing) on
each table that has accumulated enough files; only files below
``spark.databricks.delta.optimize.minFileSize`` (32 MiB, ``sales_core.session``) are
rewritten, so the batch's large master files are left alone. A compaction commits with
``dataChange = false``: the sink's appends never conflict with it (they read nothing of the
table; a steady-state append that expected the version the compaction took goes through the
sink's reading path once), a batch insert that read files it removed runs again
(``with_conflict_retry``), readers pinned to an older version still read the files they pinned
(until a ``VACUUM`` past its retention), and the fast path re-merges once when the files it
held are gone (a tested case).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from delta.tables import DeltaTable
from pyspark import inheritable_thread_target
from pyspark.sql import SparkSession

from sales_core.master import is_conflict

log = logging.getLogger(__name__)

# Fewer files than this are left alone (a compaction per this many micro-batches at most).
MIN_FILES = 64


class StreamCompactor:
    """Compacts each table of ``paths`` every ``interval`` seconds, in a daemon thread."""

    def __init__(
        self,
        spark: SparkSession,
        paths: Sequence[str],
        interval: float,
        *,
        min_files: int = MIN_FILES,
    ) -> None:
        self.spark, self.paths, self.interval, self.min_files = spark, paths, interval, min_files
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        run: Callable[[], None] = inheritable_thread_target(self.spark)(self._run)
        self._thread = threading.Thread(target=run, name="stream-compaction", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.spark.sparkContext.setJobGroup("stream-compaction", "compact the stream's small files")
        while not self._stop.wait(self.interval):
            try:
                self.compact_once()
            except Exception as exc:  # noqa: BLE001 - the stream goes on; tried again later
                if is_conflict(exc):
                    log.info("compaction conflicted; next try in %.0fs", self.interval)
                else:
                    log.warning("compaction failed (tried again later): %s", exc)

    def compact_once(self) -> bool:
        """Compact now each table that has at least ``min_files`` data files; True if any."""
        compacted = [self._compact(path) for path in self.paths]
        return any(compacted)

    def _compact(self, path: str) -> bool:
        if not DeltaTable.isDeltaTable(self.spark, path):
            return False
        table = DeltaTable.forPath(self.spark, path)
        files = table.detail().select("numFiles").first()
        if files is None or int(files["numFiles"]) < self.min_files:
            return False
        metrics = table.optimize().executeCompaction().select("metrics").first()
        log.info("compacted %s: %s", path, None if metrics is None else metrics["metrics"].asDict())
        return True

    def close(self) -> None:
        """Stop the thread (a running compaction finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=600)
            self._thread = None
