"""Compaction of the speed increments, in a thread of the streaming job, off the hot path.

A micro-batch adds a small file to the increments table; at a 1-second trigger that is
86,400 files a day, and every cold reader lists and opens them. Every
``speed.compact_interval_seconds`` the job runs Delta's ``OPTIMIZE`` (bin-packing) on the
table when enough small files have accumulated. The compaction commits with
``dataChange = false``: the sink's appends never conflict with it (they read nothing of the
table), readers pinned to an older version still read the files they pinned (until a
``VACUUM`` past its retention), and the fast path re-merges once when the files it held are
gone (a tested case).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from delta.tables import DeltaTable
from pyspark import inheritable_thread_target
from pyspark.sql import SparkSession

from sales_core.master import is_conflict

log = logging.getLogger(__name__)

# Fewer files than this are left alone (a compaction per this many micro-batches at most).
MIN_FILES = 64


class IncrementsCompactor:
    """Compacts the table at ``path`` every ``interval`` seconds, in a daemon thread."""

    def __init__(
        self, spark: SparkSession, path: str, interval: float, *, min_files: int = MIN_FILES
    ) -> None:
        self.spark, self.path, self.interval, self.min_files = spark, path, interval, min_files
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        run: Callable[[], None] = inheritable_thread_target(self.spark)(self._run)
        self._thread = threading.Thread(target=run, name="increments-compaction", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.spark.sparkContext.setJobGroup("increments-compaction", "compact speed increments")
        while not self._stop.wait(self.interval):
            try:
                self.compact_once()
            except Exception as exc:  # noqa: BLE001 - the stream goes on; tried again later
                if is_conflict(exc):
                    log.info("increments compaction conflicted; next try in %.0fs", self.interval)
                else:
                    log.warning("increments compaction failed (tried again later): %s", exc)

    def compact_once(self) -> bool:
        """Compact now when at least ``min_files`` data files are there; True if it ran."""
        if not DeltaTable.isDeltaTable(self.spark, self.path):
            return False
        table = DeltaTable.forPath(self.spark, self.path)
        files = table.detail().select("numFiles").first()
        if files is None or int(files["numFiles"]) < self.min_files:
            return False
        metrics = table.optimize().executeCompaction().select("metrics").first()
        log.info(
            "compacted the speed increments: %s",
            None if metrics is None else metrics["metrics"].asDict(),
        )
        return True

    def close(self) -> None:
        """Stop the thread (a running compaction finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=600)
            self._thread = None
