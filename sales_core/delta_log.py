"""What one commit of a Delta table's log says, read from its JSON commit file.

Both the speed layer (which commit its appends made, and what they wrote) and the serving
layer (the newest micro-batch and its commit time) read commit files directly: a few
milliseconds and no Spark job. Each reads the file its own way (the local file system; a
reader's object store); the parsing is this one function.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sales_core.object_store import is_s3


@dataclass(frozen=True)
class Commit:
    """One commit of a Delta table, as far as the pipeline cares."""

    version: int
    timestamp_ms: int | None = None  # commitInfo's timestamp
    user_metadata: str | None = None  # the writer's userMetadata option
    txn: dict[str, int] = field(default_factory=dict)  # appId -> version of each txn action
    output_rows: int | None = None  # numOutputRows (appends) or numTargetRowsInserted (MERGE)
    adds: int = 0  # data files added (dataChange)


# The bin boundaries of the file size histogram Delta keeps in each version's checksum (its
# default bins, in KiB here): a checksum written by the driver has the same histogram.
FILE_SIZE_BINS_KIB = (
    0,
    8,
    16,
    32,
    64,
    128,
    256,
    512,
    1024,
    2048,
    4096,
    8192,
    12288,
    16384,
    20480,
    24576,
    28672,
    32768,
    36864,
    40960,
    49152,
    57344,
    65536,
    73728,
    81920,
    90112,
    98304,
    106496,
    114688,
    122880,
    126976,
    131072,
    135168,
    139264,
    143360,
    147456,
    163840,
    180224,
    196608,
    212992,
    229376,
    245760,
    262144,
    278528,
    294912,
    311296,
    327680,
    344064,
    360448,
    376832,
    393216,
    409600,
    425984,
    442368,
    458752,
    475136,
    491520,
    507904,
    524288,
    540672,
    557056,
    573440,
    589824,
    655360,
    720896,
    786432,
    851968,
    917504,
    983040,
    1048576,
    1114112,
    1179648,
    1245184,
    1310720,
    1376256,
    1441792,
    1572864,
    1703936,
    1835008,
    1966080,
    2097152,
    2359296,
    2621440,
    2883584,
    3145728,
    3407872,
    3670016,
    3932160,
    4194304,
    8388608,
    16777216,
    33554432,
    67108864,
    134217728,
    268435456,
)


def empty_histogram() -> dict[str, list[int]]:
    """The file size histogram of a table without files, in Delta's checksum form."""
    bins = [kib * 1024 for kib in FILE_SIZE_BINS_KIB]
    return {
        "sortedBinBoundaries": bins,
        "fileCounts": [0] * len(bins),
        "totalBytes": [0] * len(bins),
    }


def local_path(location: str) -> Path | None:
    """The local path of ``location`` (a plain path or ``file:`` URI), else None: the tables
    and checkpoints whose files can be read and written directly, without Spark."""
    if location.startswith("file://"):
        return Path(location[len("file://") :])
    if location.startswith("file:"):
        return Path(location[len("file:") :])
    if "://" in location or location.startswith("dbfs:"):
        return None
    return Path(location)


def readable(table_path: str, storage_options: dict[str, str] | None) -> bool:
    """Whether the driver reads and writes the table at ``table_path`` itself (delta-rs, or
    its files directly): a local table, or one on S3 when delta-rs's storage options are
    given."""
    if is_s3(table_path):
        return storage_options is not None
    return local_path(table_path) is not None


def commit_file(version: int) -> str:
    """The commit file of ``version``, relative to the table's root."""
    return f"_delta_log/{version:020d}.json"


def parse_commit(version: int, text: str) -> Commit:
    """The :class:`Commit` that the JSON lines ``text`` of commit file ``version`` describe."""
    txn: dict[str, int] = {}
    timestamp_ms: int | None = None
    user_metadata: str | None = None
    output_rows: int | None = None
    adds = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        if "txn" in action:
            txn[str(action["txn"]["appId"])] = int(action["txn"]["version"])
        elif "add" in action and action["add"].get("dataChange", True):
            adds += 1
        elif "commitInfo" in action:
            info = action["commitInfo"]
            user_metadata = info.get("userMetadata")
            timestamp_ms = int(info["timestamp"]) if "timestamp" in info else None
            metrics = info.get("operationMetrics") or {}
            rows = metrics.get("numOutputRows", metrics.get("numTargetRowsInserted"))
            output_rows = None if rows is None else int(rows)
    return Commit(version, timestamp_ms, user_metadata, txn, output_rows, adds)


def checksum_file(version: int) -> str:
    """The checksum file (table state summary) of ``version``, relative to the table's root."""
    return f"_delta_log/{version:020d}.crc"


def write_checksum(root: Path, version: int, state: dict[str, Any]) -> None:
    """Write ``state`` as the checksum of ``version`` of the local table at ``root``, whole or
    not at all (a staged file renamed over it), as Delta writes one after its commit."""
    target = root / checksum_file(version)
    staged = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    staged.write_text(json.dumps(state, separators=(",", ":")), encoding="utf-8")
    os.replace(staged, target)


def drop_stale_side_checksum(root: Path) -> None:
    """Remove Hadoop's side checksum of ``_last_checkpoint`` in the local table at ``root``.

    Spark writes a local table's log through Hadoop's checksummed file system, which keeps a
    ``.<name>.crc`` beside each file; delta-rs, writing its checkpoint, replaces
    ``_last_checkpoint`` alone. Checked against the old side file, the new one fails to read:
    a Spark reader without the project's local LogStore (``spark-submit``) then retries three
    times a second apart and lists the whole log for the newest checkpoint. Without a side
    file Hadoop reads the file unchecked, as delta-rs wrote it."""
    with contextlib.suppress(FileNotFoundError):
        (root / "_delta_log" / "._last_checkpoint.crc").unlink()


# Delta keeps the table's file list in a checksum only while the table is this small.
CHECKSUM_MAX_FILES = 50


def checksum_after_appends(
    previous: dict[str, Any], text: str, txn_id: str
) -> dict[str, Any] | None:
    """The checksum of the version whose commit file is ``text``, from the checksum of the
    version before it (``previous``): the same state summary Delta writes after each of its
    own commits (file count and bytes, the file size histogram, the file list of a small
    table, protocol, metadata, transactions). Only for a commit that adds files and nothing
    else (an append); None for any other commit, whose checksum is Delta's to compute.

    Readers take a table's protocol and schema from the newest checksum; without one, Spark
    rebuilds them from the log with a job each time it looks at a new version.
    """
    adds: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        (kind,) = action.keys()
        if kind == "add":
            adds.append(action["add"])
        elif kind != "commitInfo":
            return None
    if any(a.get("deletionVector") for a in adds):
        return None
    state = dict(previous)
    state["txnId"] = txn_id
    state["numFiles"] = int(previous["numFiles"]) + len(adds)
    state["tableSizeBytes"] = int(previous["tableSizeBytes"]) + sum(int(a["size"]) for a in adds)
    histogram = previous.get("fileSizeHistogram")
    if histogram is not None:
        bounds = histogram["sortedBinBoundaries"]
        counts = list(histogram["fileCounts"])
        totals = list(histogram["totalBytes"])
        for add in adds:
            size = int(add["size"])
            slot = bisect.bisect_right(bounds, size) - 1
            counts[slot] += 1
            totals[slot] += size
        state["fileSizeHistogram"] = {**histogram, "fileCounts": counts, "totalBytes": totals}
    if "allFiles" in previous:
        files = [*previous["allFiles"], *({**a, "dataChange": False} for a in adds)]
        if len(files) <= CHECKSUM_MAX_FILES:
            state["allFiles"] = files
        else:
            del state["allFiles"]
    return state


# A log entry's version: the 20 digits its name starts with (after the dot of Hadoop's hidden
# side checksum, ".<name>.crc").
_VERSIONED = re.compile(r"^\.?(\d{20})\.")
_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\.parquet$")


def expire_log(root: Path, retention_s: float, *, now: float | None = None) -> int:
    """Delete the log entries of the local table at ``root`` that no version younger than
    ``retention_s`` needs; returns how many files went.

    Delta keeps commit files for ``delta.logRetentionDuration`` (30 days by default) whatever
    VACUUM keeps; a version older than the VACUUM retention cannot be read anyway (its data
    files are gone). The log is cut at the newest classic checkpoint ``C`` whose commit, and
    every commit before it, is older than the retention (their file times, as Delta's own
    clean-up and time travel take them): a version inside the retention is ``C`` or newer and
    is rebuilt from ``C``'s checkpoint or a later one. Every entry of a version below ``C``
    goes: commits, checksums, checkpoints and Hadoop's side checksums. ``_last_checkpoint``
    names a checkpoint at ``C`` or later, so readers never look below it; writers only add
    versions above the newest. Without such a checkpoint nothing is deleted.
    """
    log_dir = root / "_delta_log"
    cutoff = (time.time() if now is None else now) - retention_s
    commits: dict[int, float] = {}
    checkpoints: set[int] = set()
    versioned: list[tuple[int, Path]] = []
    with os.scandir(log_dir) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            if match := _COMMIT.match(entry.name):
                commits[int(match[1])] = entry.stat().st_mtime
            elif match := _CHECKPOINT.match(entry.name):
                checkpoints.add(int(match[1]))
            if match := _VERSIONED.match(entry.name):
                versioned.append((int(match[1]), Path(entry.path)))
    cut = 0
    newest_time = float("-inf")
    for version in sorted(commits):
        newest_time = max(newest_time, commits[version])
        if newest_time > cutoff:
            break
        if version in checkpoints:
            cut = version
    deleted = 0
    for version, path in versioned:
        if version < cut:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted += 1
    return deleted
