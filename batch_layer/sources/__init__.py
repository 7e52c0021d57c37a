"""The batch layer's sources, behind one protocol (:mod:`batch_layer.sources.base`).

``files`` (the landing zone), ``jdbc`` (a database table) and ``http`` (a paged JSON API).
A new kind of source is one new module here with a ``source(sources, lakehouse)`` factory
(``None`` when its configuration section disables it), its line in :data:`REGISTRY`, and
its section in the typed configuration; the ledger, the ingest and the job need no change.
"""

from __future__ import annotations

from collections.abc import Callable

from batch_layer.sources import files, http, jdbc
from batch_layer.sources.base import Entry, Source, SourcePlan
from sales_core.config import SourcesConf
from sales_core.lakehouse import Lakehouse

SourceFactory = Callable[[SourcesConf, Lakehouse], Source | None]

#: Every kind of batch source, in the order an epoch plans them.
REGISTRY: tuple[SourceFactory, ...] = (files.source, jdbc.source, http.source)


def configured_sources(sources: SourcesConf, lakehouse: Lakehouse) -> dict[str, Source]:
    """The sources the configuration enables, by kind.

    Raises:
        ConfigError: a source's section is enabled but not valid.
    """
    found: dict[str, Source] = {}
    for factory in REGISTRY:
        source = factory(sources, lakehouse)
        if source is not None:
            found[source.kind] = source
    return found


__all__ = ["REGISTRY", "Entry", "Source", "SourcePlan", "configured_sources"]
