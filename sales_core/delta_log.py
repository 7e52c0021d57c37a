"""What one commit of a Delta table's log says, read from its JSON commit file.

Both the speed layer (which commit its appends made, and what they wrote) and the serving
layer (the newest micro-batch and its commit time) read commit files directly: a few
milliseconds and no Spark job. Each reads the file its own way (the local file system; a
reader's object store); the parsing is this one function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Commit:
    """One commit of a Delta table, as far as the pipeline cares."""

    version: int
    timestamp_ms: int | None = None  # commitInfo's timestamp
    user_metadata: str | None = None  # the writer's userMetadata option
    txn: dict[str, int] = field(default_factory=dict)  # appId -> version of each txn action
    output_rows: int | None = None  # numOutputRows (appends) or numTargetRowsInserted (MERGE)
    adds: int = 0  # data files added (dataChange)


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
