"""Errors a user can act on: the CLI prints them as one line, without a traceback."""

from __future__ import annotations


class PipelineError(RuntimeError):
    """A failure explained in one line (exit status 1)."""

    exit_code = 1


class SourceError(PipelineError):
    """A source (landing zone, database, Kafka) cannot be read."""


class QualityGateError(PipelineError):
    """The data-quality score is below the configured threshold; nothing was published."""

    exit_code = 3
