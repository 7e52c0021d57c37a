"""The HTTP JSON API (``lambda-sales serve``): the merged views over the fast path, no JVM.

``GET /views/{view}?COL=VALUE&from=DATE&to=DATE&limit=N&offset=N`` answers
``{"rows": [...], "generation": N}`` with rows shaped exactly as ``query --format jsonl``
(money as exact JSON numbers, days and UTC timestamps as ISO text), ordered by the view's
keys so pages are stable. ``GET /health`` reports freshness and the current generation.
``/docs`` is the OpenAPI page (one documented endpoint per view). ``/`` is the live console
(:mod:`serving_layer.console_api`), over the ``/console/*`` endpoints.

Every parameter name is checked against an allow-list (the view's columns, ``from``, ``to``,
``limit``, ``offset``) and every value is parsed to its column's type before it reaches
DuckDB, as a bound parameter: no SQL is built from request text. Errors are 4xx with
``{"detail": "<one line>"}``: 404 for an unknown view, 400 for anything wrong in the query.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from sales_core.views import VIEW_NAMES, VIEWS, ViewDef
from serving_layer.console_api import PARAMETERS, install_console
from serving_layer.console_reads import ConsoleReader
from serving_layer.console_series import StreamThresholds
from serving_layer.duckdb_engine import FastServing
from serving_layer.openapi import console_operation, health_operation, view_operation
from serving_layer.query import MAX_LIMIT, MAX_OFFSET, NoViewsError, build_query
from serving_layer.rows import FilterError, dumps_row, to_text

DEFAULT_LIMIT = 1000
PAGING = ("from", "to", "limit", "offset")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message})


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return to_text(value)
    return str(value)


def answer_body(
    rows: list[dict[str, Any]], columns: tuple[str, ...], generation: int | None
) -> str:
    """``{"rows": [...], "generation": N}`` with each row as ``query --format jsonl`` prints it."""
    encoded = ", ".join(dumps_row({c: r[c] for c in columns}) for r in rows)
    return '{"rows": [' + encoded + '], "generation": ' + json.dumps(generation) + "}"


def _view_endpoint(view: ViewDef, reader: FastServing) -> Callable[..., Response]:
    """``GET /views/<view>``, with the view's columns as documented query parameters."""

    def endpoint(request: Request, **_documented: Any) -> Response:
        params = request.query_params
        allowed = set(view.columns) | set(PAGING)
        for name in params:
            if name not in allowed:
                return _error(
                    400,
                    f"unknown parameter '{name}' for view {view.name}: choose one of {', '.join(view.columns + PAGING)}",
                )
            if len(params.getlist(name)) > 1:
                return _error(400, f"parameter '{name}' is given more than once")
        try:
            query = build_query(
                view.name,
                [f"{name}={params[name]}" for name in params if name in view.columns],
                date_from=params.get("from"),
                date_to=params.get("to"),
                limit=params.get("limit"),
                offset=params.get("offset"),
                default_limit=DEFAULT_LIMIT,
                max_limit=MAX_LIMIT,
                max_offset=MAX_OFFSET,
                empty_range=True,
            )
            result = reader.answer(query)
        except FilterError as exc:
            return _error(400, str(exc))
        except NoViewsError as exc:
            return _error(503, str(exc))
        return Response(
            answer_body(result.rows, view.columns, result.generation), media_type="application/json"
        )

    types = {f.name: f.dataType.simpleString() for f in view.schema.fields}
    documented = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)
    ]
    for column in view.columns:
        documented.append(
            inspect.Parameter(
                column,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=str | None,
                default=Query(
                    None, description=f"only rows with {column} equal to this ({types[column]})"
                ),
            )
        )
    for name, alias, description in (
        ("date_from", "from", "first UTC day (YYYY-MM-DD) on the view's time key; see the README"),
        ("date_to", "to", "last UTC day (YYYY-MM-DD), included; before `from`: no rows"),
        (
            "limit",
            "limit",
            f"at most this many rows (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})",
        ),
        ("offset", "offset", "skip this many rows first (rows are ordered by the view's keys)"),
    ):
        documented.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=str | None,
                default=Query(None, alias=alias, description=description),
            )
        )
    endpoint.__signature__ = inspect.Signature(documented)  # type: ignore[attr-defined]
    endpoint.__name__ = f"get_{view.name}"
    return endpoint


def create_app(
    lakehouse_root: str,
    *,
    reader: FastServing | None = None,
    thresholds: StreamThresholds | None = None,
    storage_options: dict[str, str] | None = None,
) -> FastAPI:
    """The API and the console over the lakehouse at ``lakehouse_root`` (one reader, its
    caches shared). ``thresholds``: how the console judges the stream (defaults: a 1-second
    trigger, ``conf/base.toml``'s ``serving`` thresholds). ``storage_options``: delta-rs's,
    for a lakehouse on object storage."""
    reader = reader or FastServing(lakehouse_root, storage_options=storage_options)
    app = FastAPI(
        title="lambda-sales",
        summary="Merged sales views: the batch generation ⊕ the speed increments above its hand-off mark.",
        version="0.1.0",
    )
    for name, view in VIEWS.items():
        keys = ", ".join(view.key_names)
        app.add_api_route(
            f"/views/{name}",
            _view_endpoint(view, reader),
            methods=["GET"],
            tags=["views"],
            summary=f"Rows of the merged {name} view",
            description=f"Keys: {keys}; measures: {', '.join(m.name for m in view.measures)}. "
            f'Rows are ordered by {keys}. Answers {{"rows": [...], "generation": N}}.',
            response_class=Response,
        )

    @app.get(
        "/views/{view}", tags=["views"], summary="Any other name: 404", include_in_schema=False
    )
    def unknown_view(view: str) -> JSONResponse:
        return _error(404, f"unknown view '{view}': choose one of {', '.join(VIEW_NAMES)}")

    @app.get(
        "/health",
        tags=["health"],
        summary="Freshness of both layers and the current batch generation",
    )
    def health() -> Response:
        return Response(
            json.dumps(reader.health(), default=_json_default), media_type="application/json"
        )

    install_console(app, ConsoleReader(reader, thresholds or StreamThresholds()))
    install_openapi(app)
    return app


def install_openapi(app: FastAPI) -> None:
    """Serve the document of :mod:`serving_layer.openapi` (typed, every status code)."""
    derived = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = derived()
            for name, view in VIEWS.items():
                path = schema["paths"][f"/views/{name}"]
                path["get"] = view_operation(
                    path["get"],
                    view,
                    default_limit=DEFAULT_LIMIT,
                    max_limit=MAX_LIMIT,
                    max_offset=MAX_OFFSET,
                )
            schema["paths"]["/health"]["get"] = health_operation(schema["paths"]["/health"]["get"])
            for name, parameters in PARAMETERS.items():
                path = schema["paths"][f"/console/{name}"]
                path["get"] = console_operation(
                    path["get"], name, {p: parameter.schema for p, parameter in parameters.items()}
                )
            schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
            schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def serve(
    lakehouse_root: str,
    *,
    host: str,
    port: int,
    thresholds: StreamThresholds | None = None,
    storage_options: dict[str, str] | None = None,
) -> None:
    """Run the API and the console with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(lakehouse_root, thresholds=thresholds, storage_options=storage_options),
        host=host,
        port=port,
        log_level="warning",
    )
