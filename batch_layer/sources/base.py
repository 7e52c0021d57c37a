"""What a batch source is: the ledger entries it writes, and the protocol every source follows.

A source takes part in an ingest epoch in three steps, kedro-style:

1. **plan**: given what earlier epochs took from it (its own ledger entries), say what the
   new epoch takes, as ledger entries. The entries must name the epoch's records exactly,
   so that a rerun of the epoch reads the same records: files by path, size and mtime, a
   database by a watermark range. A source whose records cannot be named before they are
   read (a paged API) pins them first in a table of its own, keyed by the epoch number.
2. **read**: the envelopes (:mod:`sales_core.events`) of every record the entries name.
3. **record**: the job writes the entries to the ingest ledger, ``planned`` before the epoch
   is read and ``ingested`` after it; a source never writes the ledger itself.

An entry is the source's kind, a name (a file, a table, an API URL) and a position: JSON the
source writes and alone reads. The ledger does not know what a position means.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class Entry:
    """One line of the ingest ledger: what an epoch took from a source, in its own words."""

    source: str  # the source's kind: also the ``source`` of the envelopes it reads
    name: str  # what was taken: a file path, a table, an API URL
    position: str  # JSON, the source's own (file size and mtime, a watermark range, cursors)

    @classmethod
    def of(cls, source: str, name: str, position: Mapping[str, Any]) -> Entry:
        return cls(source, name, json.dumps(position, sort_keys=True, separators=(",", ":")))

    @property
    def fields(self) -> dict[str, Any]:
        """The position, parsed."""
        parsed = json.loads(self.position)
        if not isinstance(parsed, dict):
            raise ValueError(f"ledger position of {self.source} {self.name!r} is not an object")
        return parsed


@dataclass(frozen=True)
class SourcePlan:
    """A source's share of a new epoch: its entries (none: nothing new) and one line for people."""

    entries: tuple[Entry, ...]
    summary: str


class Source(Protocol):
    """A batch source (see the module's docstring for the contract of each step)."""

    @property
    def kind(self) -> str:
        """The source's name in the ledger and in the envelopes' ``source`` column."""
        ...

    def plan(self, spark: SparkSession, taken: Sequence[Entry], *, epoch: int) -> SourcePlan:
        """What epoch ``epoch`` takes from this source.

        Args:
            taken: this source's entries of every ingested epoch and of the interrupted one
                (which runs again before the new epoch), oldest epoch first.
        """
        ...

    def read(self, spark: SparkSession, entries: Sequence[Entry], *, epoch: int) -> DataFrame:
        """Envelopes of every record ``entries`` name: the same records on every call.

        Raises:
            SourceError: the records cannot be read.
        """
        ...


def utc_text(moment: datetime) -> str:
    """An instant as ISO-8601 UTC text, to the microsecond (naive means the process's zone,
    which is how PySpark hands out timestamps)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")
