"""What a command writes on stderr besides its one-line error: log lines, progress lines and,
apart from them, the Spark JVM's own output.

- :func:`configure_logging` applies the ``[logging]`` section: ``level`` for every logger,
  ``format`` ``json`` (one JSON object a line: the cluster and Databricks layers) or ``text``
  (a laptop). Never a secret: configuration reaches a log only through
  :func:`sales_core.config.to_printable`.
- :class:`Progress`: the step lines of long commands, in the same format.
- :func:`redirect_jvm_output`: the JVM's log4j lines and warnings go to a file, not the terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOG_FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_NOISY = ("py4j", "urllib3")  # third-party clients: their warnings only
# kafka-python logs every failed connection attempt of its own retries (ERROR and WARNING
# lines a second while a broker is down); what its calls finally raise is reported by ours.
_SILENT = ("kafka",)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``message`` and the record's
    ``fields`` (``extra={"fields": {...}}``). A message that is itself a JSON object (the
    speed layer's per micro-batch metrics) is merged into the line rather than quoted."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
        }
        message = record.getMessage()
        inline = _json_object(message)
        if inline is None:
            payload["message"] = message
        else:
            payload.update(inline)
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            payload.update(extra)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def _json_object(message: str) -> dict[str, Any] | None:
    if not (message.startswith("{") and message.endswith("}")):
        return None
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record at ``level`` or above to stderr, as ``json`` or ``text`` lines."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format '{fmt}': choose one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for silent in _SILENT:
        logging.getLogger(silent).setLevel(max(logging.CRITICAL, root.level))


def json_logging() -> bool:
    """True when the root logger writes JSON lines (see :func:`configure_logging`)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


_progress_log = logging.getLogger("lambda_sales.progress")
_progress_log.setLevel(logging.INFO)  # shown unless --quiet, whatever logging.level says


class Progress:
    """Step lines with elapsed time on stderr, for long steps.

    ``[batch    12.3s] message`` for a terminal; with JSON logging, a JSON log line
    (logger ``lambda_sales.progress``, fields ``job`` and ``elapsed_seconds``) instead.
    """

    def __init__(self, job: str, *, quiet: bool = False) -> None:
        self.job, self.quiet, self.started = job, quiet, time.monotonic()

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.started
        if json_logging():
            fields = {"job": self.job, "elapsed_seconds": round(elapsed, 1)}
            _progress_log.info(message, extra={"fields": fields})
        else:
            print(f"[{self.job} {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def redirect_jvm_output(app: str) -> Path | None:
    """Send the Spark JVM's own output (log4j lines, JVM warnings, what Delta prints on its
    stdout such as VACUUM's "Deleted N files") to a log file.

    The JVM inherits file descriptors 1 and 2, so they are pointed at the log before Spark
    starts; Python keeps the terminal (``sys.stdout`` and ``sys.stderr`` on copies of the
    original descriptors), so results, progress, log lines and one-line errors stay readable.
    Not under spark-submit (the JVM is already running) or with ``LAMBDA_SALES_SPARK_LOG=stderr``.
    The file is under ``$LAMBDA_SALES_LOG_DIR`` (default ``~/.cache/lambda-sales/logs``); its
    path is returned and left in ``$LAMBDA_SALES_SPARK_LOG_FILE``.
    """
    if "PYSPARK_GATEWAY_PORT" in os.environ or os.environ.get("LAMBDA_SALES_SPARK_LOG") == "stderr":
        return None
    log_dir = Path(
        os.environ.get("LAMBDA_SALES_LOG_DIR", Path.home() / ".cache" / "lambda-sales" / "logs")
    )
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / f"spark-{app}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return None  # no place for a log: Spark's lines stay on stderr
    sys.stdout.flush()
    sys.stderr.flush()
    results = os.dup(1)
    terminal = os.dup(2)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stdout = os.fdopen(
        results,
        "w",
        buffering=1 if sys.stdout.line_buffering else -1,
        encoding=sys.stdout.encoding,
        errors=sys.stdout.errors,
    )
    sys.stderr = os.fdopen(terminal, "w", buffering=1)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    os.environ["LAMBDA_SALES_SPARK_LOG_FILE"] = str(path)
    return path
