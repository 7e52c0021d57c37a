"""Reading a Delta table's transaction log on the driver: which commit a writer tagged, and
what it wrote.

The sink tags its master append with Delta's ``userMetadata`` option; Delta records it in the
commit's ``commitInfo``, next to the commit's own metrics. Reading the
newest JSON commit files of a local table costs a few milliseconds and no Spark job; for other
file systems the answer is None and the caller takes its slower, always-right path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from speed_layer.checkpoint import local_path


@dataclass(frozen=True)
class Commit:
    """One commit of a Delta table, as far as the sink cares."""

    version: int
    user_metadata: str | None  # the writer's userMetadata option
    txn: dict[str, int]  # appId -> version of every txn action in the commit
    output_rows: int | None  # the commit's numOutputRows metric (appends and MERGE inserts)
    adds: int  # data files added


def _read_commit(table_path: str, version: int) -> Commit | None:
    path = local_path(table_path)
    assert path is not None
    file = path / "_delta_log" / f"{version:020d}.json"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    txn: dict[str, int] = {}
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
            user_metadata = action["commitInfo"].get("userMetadata")
            metrics = action["commitInfo"].get("operationMetrics") or {}
            rows = metrics.get("numOutputRows", metrics.get("numTargetRowsInserted"))
            output_rows = None if rows is None else int(rows)
    return Commit(version, user_metadata, txn, output_rows, adds)


def commits_from(table_path: str, version: int) -> list[Commit] | None:
    """The commits of the table from ``version`` on, in order (None: not a local table)."""
    if local_path(table_path) is None:
        return None
    commits = []
    while (commit := _read_commit(table_path, version)) is not None:
        commits.append(commit)
        version += 1
    return commits
