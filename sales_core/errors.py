"""Errors a user can act on: the CLI prints them as one line, without a traceback."""

from __future__ import annotations

import re


class PipelineError(RuntimeError):
    """A failure explained in one line (exit status 1)."""

    exit_code = 1


class SourceError(PipelineError):
    """A source (landing zone, database, Kafka) cannot be read."""


class QualityGateError(PipelineError):
    """The data-quality score is below the configured threshold; nothing was published."""

    exit_code = 3


_PYTHON_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
_JAVA_EXCEPTION = re.compile(r"^(?:Caused by: |: )?((?:[a-z_$][\w$]*\.)+[A-Z][\w$]*): ?(.*)$")
_JVM_PACKAGES = ("py4j", "org.", "java.", "javax.", "scala.", "io.delta.", "com.")
#: Packages of a root cause that means a source could not be read (file, database).
IO_FAILURE_PACKAGES = ("java.io.", "java.nio.file.", "java.sql.", "org.postgresql.")


def _java_causes(lines: list[str]) -> list[tuple[str, str]]:
    """(class, message) of the Java exception at the top of a JVM trace and of each cause."""
    causes = []
    for index, line in enumerate(lines):
        if line.startswith("Caused by: ") or (index == 1 and line.startswith(": ")):
            match = _JAVA_EXCEPTION.match(line)
            if match:
                causes.append((match.group(1), match.group(2).strip()))
    return causes


def root_cause_class(exc: BaseException) -> str | None:
    """The fully qualified class of the deepest JVM exception behind ``exc``, if any."""
    causes = _java_causes([line.strip() for line in str(exc).splitlines() if line.strip()])
    return causes[-1][0] if causes else None


def one_line(exc: BaseException) -> str:
    """The one line of a failure a user should see.

    A Spark failure's text is a JVM stack trace under "An error occurred while calling
    o123.collectToPython": the line worth showing is a Python exception raised inside a
    Spark callback (a ``foreachBatch`` sink) if there is one, else the deepest JVM cause
    (``FileNotFoundException: /landing/x.jsonl (Permission denied)``), else the first line.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return lines[0]
    for line in reversed(lines):
        match = _PYTHON_EXCEPTION.match(line)
        if match and not match.group(1).startswith(_JVM_PACKAGES):
            return f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2)}"
    causes = _java_causes(lines)
    if causes:
        name, message = causes[-1]
        short = name.rsplit(".", 1)[-1]
        return f"{short}: {message}" if message else short
    return lines[0]
