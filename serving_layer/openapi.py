"""The API's OpenAPI document, made true: typed parameters and every status code answered.

FastAPI derives the document from the endpoints' signatures; the view endpoints take every
parameter as text (they parse and check it themselves, answering 400 with one line rather
than FastAPI's 422), so the derived document would say "any string" and "200 or 422". This
module rewrites each view operation from the view's own schema: dates, UTC timestamps,
integers and decimals with their bounds; ``limit``/``offset`` with theirs; the 200 body, 400
(a bad parameter), 503 (no view written yet). Whatever the document allows, the API accepts.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import types as T

from sales_core.views import ViewDef
from serving_layer.rows import INTEGER_BOUNDS, decimal_pattern

ERROR_BODY = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string", "description": "one line"}},
}


def column_schema(dtype: T.DataType) -> dict[str, Any]:
    """The JSON schema of a filter value of a column of ``dtype`` (as query text)."""
    if isinstance(dtype, T.DateType):
        return {"type": "string", "format": "date"}
    if isinstance(dtype, T.TimestampType):
        return {"type": "string", "format": "date-time"}
    if isinstance(dtype, (T.LongType, T.IntegerType)):
        low, high = INTEGER_BOUNDS[type(dtype)]
        return {"type": "integer", "minimum": low, "maximum": high}
    if isinstance(dtype, T.DecimalType):
        whole = dtype.precision - dtype.scale
        return {"type": "string", "pattern": decimal_pattern(whole, dtype.scale)}
    return {"type": "string"}


def row_schema(view: ViewDef) -> dict[str, Any]:
    """One answered row: the view's columns as ``query --format jsonl`` prints them."""
    properties: dict[str, Any] = {}
    for f in view.schema.fields:
        if isinstance(f.dataType, (T.LongType, T.IntegerType)):
            value: dict[str, Any] = {"type": "integer"}
        elif isinstance(f.dataType, T.DecimalType):
            value = {"type": "number", "description": f"exact, {f.dataType.scale} decimals"}
        elif isinstance(f.dataType, T.DateType):
            value = {"type": "string", "format": "date"}
        elif isinstance(f.dataType, T.TimestampType):
            value = {"type": "string", "format": "date-time", "description": "UTC"}
        else:
            value = {"type": "string"}
        properties[f.name] = value if not f.nullable else {"anyOf": [value, {"type": "null"}]}
    return {
        "type": "object",
        "required": list(view.columns),
        "properties": properties,
        "additionalProperties": False,
    }


def view_operation(
    operation: dict[str, Any], view: ViewDef, *, default_limit: int, max_limit: int, max_offset: int
) -> dict[str, Any]:
    """``operation`` (FastAPI's) with typed parameters and the answers the endpoint gives."""
    types = {f.name: f.dataType for f in view.schema.fields}
    typed: dict[str, dict[str, Any]] = {c: column_schema(types[c]) for c in view.columns}
    typed["from"] = {"type": "string", "format": "date"}
    typed["to"] = {"type": "string", "format": "date"}
    typed["limit"] = {
        "type": "integer",
        "minimum": 0,
        "maximum": max_limit,
        "default": default_limit,
    }
    typed["offset"] = {"type": "integer", "minimum": 0, "maximum": max_offset, "default": 0}
    parameters = []
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        parameters.append({**parameter, "required": False, "schema": typed[name]})
    body = {
        "type": "object",
        "required": ["rows", "generation"],
        "properties": {
            "rows": {"type": "array", "items": row_schema(view)},
            "generation": {
                "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
                "description": "the batch generation the rows stand on (null: speed layer only)",
            },
        },
        "additionalProperties": False,
    }
    error = {"application/json": {"schema": ERROR_BODY}}
    return {
        **operation,
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "the rows, ordered by the view's keys",
                "content": {"application/json": {"schema": body}},
            },
            "400": {
                "description": "a parameter that is unknown, repeated, or not of its type",
                "content": error,
            },
            "503": {"description": "no view written yet by either layer", "content": error},
        },
    }


def health_operation(operation: dict[str, Any]) -> dict[str, Any]:
    """``GET /health``: a JSON object, always 200."""
    return {
        **operation,
        "responses": {
            "200": {
                "description": "freshness of both layers and the current batch generation",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["status", "now", "batch", "speed"],
                            "properties": {
                                "status": {"type": "string"},
                                "now": {"type": "string", "format": "date-time"},
                                "batch": {"type": "object"},
                                "speed": {"type": "object"},
                            },
                        }
                    }
                },
            }
        },
    }
