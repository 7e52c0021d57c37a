"""The live console of ``lambda-sales serve``: a read-only web page at ``/`` and the JSON
endpoints it polls, part of the documented API.

``GET /console/status`` (the "now" panel), ``GET /console/stream?window=hour|day|week``
(stream metrics per bucket), ``GET /console/runs?window=...`` (pipeline runs),
``GET /console/quarantine?window=...&samples=N`` (rejects by reason over time, samples with
their source position), ``GET /console/alerts?limit=N`` (recorded alerts, newest first).
The page (``static/console.html``) draws them with Chart.js, vendored in ``static/vendor``
and served by this process (no CDN), and browses the merged views through ``/views/{view}``.

Parameters are checked as the view endpoints check theirs: unknown or repeated names and bad
values are a 400 with ``{"detail": "<one line>"}``; the bounds are the document's
(:func:`serving_layer.openapi.console_operation`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from serving_layer.console_reads import ConsoleReader
from serving_layer.console_series import DEFAULT_WINDOW, WINDOWS, Window

STATIC = Path(str(resources.files("serving_layer") / "static"))

DEFAULT_SAMPLES, MAX_SAMPLES = 3, 20
DEFAULT_ALERTS, MAX_ALERTS = 20, 200

Parse = Callable[[str], Any]


@dataclass(frozen=True)
class Parameter:
    """A query parameter of a console endpoint: its default (as query text), its parser
    (raises ValueError with one line) and its JSON schema for the OpenAPI document."""

    default: str
    parse: Parse
    schema: dict[str, Any]


def _window(text: str) -> Window:
    if text not in WINDOWS:
        raise ValueError(f"bad window {text!r}: choose one of {', '.join(WINDOWS)}")
    return WINDOWS[text]


_DIGITS = re.compile(r"[0-9]{1,12}")


def _bounded(name: str, low: int, high: int, default: int) -> Parameter:
    def parse(text: str) -> int:
        if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
            raise ValueError(f"bad {name} {text!r}: an integer from {low} to {high}")
        return int(text)

    schema = {"type": "integer", "minimum": low, "maximum": high, "default": default}
    return Parameter(str(default), parse, schema)


WINDOW = Parameter(
    DEFAULT_WINDOW,
    _window,
    {
        "type": "string",
        "enum": list(WINDOWS),
        "default": DEFAULT_WINDOW,
        "description": ", ".join(
            f"{w.name}: {w.seconds // w.bucket_seconds} buckets of {w.bucket_seconds} s"
            for w in WINDOWS.values()
        ),
    },
)
PARAMETERS: dict[str, dict[str, Parameter]] = {
    "status": {},
    "stream": {"window": WINDOW},
    "runs": {"window": WINDOW},
    "quarantine": {
        "window": WINDOW,
        "samples": _bounded("samples", 0, MAX_SAMPLES, DEFAULT_SAMPLES),
    },
    "alerts": {"limit": _bounded("limit", 1, MAX_ALERTS, DEFAULT_ALERTS)},
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message})


def parse_parameters(endpoint: str, request: Request) -> dict[str, Any]:
    """The endpoint's parameters from the query, parsed, defaults filled in.

    Raises:
        ValueError: an unknown or repeated parameter, or a bad value (one line).
    """
    known = PARAMETERS[endpoint]
    values: dict[str, Any] = {}
    for name in request.query_params:
        if name not in known:
            choices = ", ".join(known) or "none"
            raise ValueError(f"unknown parameter '{name}' for /console/{endpoint}: {choices}")
        if len(request.query_params.getlist(name)) > 1:
            raise ValueError(f"parameter '{name}' is given more than once")
    for name, parameter in known.items():
        values[name] = parameter.parse(request.query_params.get(name, parameter.default))
    return values


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, default=str), media_type="application/json")


def install_console(app: FastAPI, console: ConsoleReader) -> None:
    """Add the page, its static files and the ``/console/*`` endpoints to ``app``."""
    answers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "status": lambda p: console.status(),
        "stream": lambda p: console.stream(p["window"]),
        "runs": lambda p: console.runs(p["window"]),
        "quarantine": lambda p: console.quarantine(p["window"], samples=p["samples"]),
        "alerts": lambda p: console.alerts(p["limit"]),
    }
    summaries = {
        "status": "Now: batch generation and age, stream state, Kafka lag, freshness, last alert",
        "stream": "Stream metrics of a window, per bucket",
        "runs": "Pipeline runs of a window, newest first",
        "quarantine": "Rejects of a window by reason, per bucket, with samples",
        "alerts": "Recorded alerts, newest first",
    }

    def endpoint_for(name: str) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                parameters = parse_parameters(name, request)
            except ValueError as exc:
                return _error(400, str(exc))
            return _json(answers[name](parameters))

        endpoint.__name__ = f"console_{name}"
        return endpoint

    for name in answers:
        app.add_api_route(
            f"/console/{name}",
            endpoint_for(name),
            methods=["GET"],
            tags=["console"],
            summary=summaries[name],
            response_class=Response,
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "console.html", media_type="text/html")
