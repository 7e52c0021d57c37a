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


# ------------------------------------------------------------------ the console's endpoints


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Any], *, required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties) if required is None else required,
        "properties": properties,
    }


_TIME = {"type": "string", "format": "date-time", "description": "UTC"}
_COUNT = {"type": "integer", "minimum": 0}
_INTEGER = {"type": "integer"}
_NUMBER = {"type": "number"}
_TEXT = {"type": "string"}
_WINDOW_HEADER = {
    "window": {"type": "string", "enum": ["hour", "day", "week"]},
    "from": _TIME,
    "to": _TIME,
    "bucket_seconds": {"type": "integer", "minimum": 1},
}
_ALERT = _object(
    {
        "alert_id": _TEXT,
        "kind": _TEXT,
        "summary": _TEXT,
        "details": {"type": "object"},
        "at": _TIME,
        "webhook": {"type": "boolean", "description": "a webhook was configured"},
        "delivered": {"type": "boolean", "description": "the webhook took it"},
    }
)
_RECONCILIATION = _nullable(
    {
        "type": "object",
        "properties": {
            "drift": {"type": "boolean"},
            "differing_groups": _COUNT,
            "events_diff": _INTEGER,
            "revenue_diff": _NUMBER,
            "compared_batches": _COUNT,
            "error": _TEXT,
        },
    }
)
_SAMPLE = _object(
    {
        "rejected_at": _TIME,
        "source": _nullable(_TEXT),
        "source_name": _nullable(_TEXT),
        "source_partition": _nullable(_INTEGER),
        "source_offset": _nullable(_INTEGER),
        "source_key": _nullable(_TEXT),
        "raw_record": _nullable(_TEXT),
        "raw_truncated": {"type": "boolean"},
    }
)

CONSOLE_BODIES: dict[str, dict[str, Any]] = {
    "status": _object(
        {
            "now": _TIME,
            "batch": _object(
                {
                    "generation": _nullable({"type": "integer", "minimum": 1}),
                    "published_at": _nullable(_TIME),
                    "seconds_since_publish": _nullable(_NUMBER),
                    "events": _nullable(_COUNT),
                    "run_id": _nullable(_TEXT),
                    "handoff": {"type": "object", "additionalProperties": _INTEGER},
                }
            ),
            "stream": _object(
                {
                    "state": {"type": "string", "enum": ["running", "stalled", "stopped"]},
                    "reason": _TEXT,
                    "last_micro_batch": _nullable(_COUNT),
                    "last_micro_batch_at": _nullable(_TIME),
                    "seconds_since_last_micro_batch": _nullable(_NUMBER),
                    "newest_event_at": _nullable(_TIME),
                    "seconds_since_newest_event": _nullable(_NUMBER),
                    "metrics": _nullable(
                        _object(
                            {
                                "batch_id": _COUNT,
                                "ended_at": _TIME,
                                "input_rows": _COUNT,
                                "valid": _COUNT,
                                "duplicates": _INTEGER,
                                "quarantined": _COUNT,
                                "duration_ms": _COUNT,
                                "kafka_lag": _nullable(_COUNT),
                                "freshness_ms": _nullable(_INTEGER),
                            }
                        )
                    ),
                    "last_run": _nullable(
                        _object({"run_id": _TEXT, "status": _TEXT, "ended_at": _nullable(_TIME)})
                    ),
                    "thresholds": _object(
                        {
                            "trigger_seconds": _NUMBER,
                            "stalled_after_seconds": _NUMBER,
                            "stopped_after_seconds": _NUMBER,
                        }
                    ),
                }
            ),
            "last_alert": _nullable(_ALERT),
        }
    ),
    "stream": _object(
        {
            **_WINDOW_HEADER,
            "totals": _object(
                {
                    "micro_batches": _COUNT,
                    "input_rows": _COUNT,
                    "valid": _COUNT,
                    "duplicates": _INTEGER,
                    "quarantined": _COUNT,
                }
            ),
            "points": {
                "type": "array",
                "maxItems": 120,
                "items": _object(
                    {
                        "t": _TIME,
                        "micro_batches": _COUNT,
                        "input_rows": _COUNT,
                        "events_per_second": _NUMBER,
                        "duration_ms_mean": _nullable(_NUMBER),
                        "duration_ms_max": _nullable(_NUMBER),
                        "kafka_lag_max": _nullable(_NUMBER),
                        "freshness_ms_max": _nullable(_NUMBER),
                    }
                ),
            },
        }
    ),
    "runs": _object(
        {
            **_WINDOW_HEADER,
            "truncated": {"type": "boolean"},
            "runs": {
                "type": "array",
                "maxItems": 200,
                "items": _object(
                    {
                        "run_id": _TEXT,
                        "job": _TEXT,
                        "status": _TEXT,
                        "started_at": _TIME,
                        "ended_at": _nullable(_TIME),
                        "duration_seconds": _nullable(_NUMBER),
                        "records_read": _nullable(_COUNT),
                        "valid": _nullable(_COUNT),
                        "duplicates": _nullable(_INTEGER),
                        "quarantined": _nullable(_COUNT),
                        "quality_score": _nullable(_NUMBER),
                        "generation": _nullable(_INTEGER),
                        "error": _nullable(_TEXT),
                        "reconciliation": _RECONCILIATION,
                    }
                ),
            },
        }
    ),
    "quarantine": _object(
        {
            **_WINDOW_HEADER,
            "total": _COUNT,
            "reasons": {
                "type": "array",
                "maxItems": 21,
                "items": _object({"reason": _TEXT, "count": _COUNT}),
            },
            "points": {
                "type": "array",
                "maxItems": 120,
                "items": _object(
                    {"t": _TIME, "counts": {"type": "object", "additionalProperties": _COUNT}}
                ),
            },
            "samples": {
                "type": "object",
                "additionalProperties": {"type": "array", "maxItems": 20, "items": _SAMPLE},
            },
        }
    ),
    "alerts": _object(
        {"total": _COUNT, "alerts": {"type": "array", "maxItems": 200, "items": _ALERT}}
    ),
}


def console_operation(
    operation: dict[str, Any], name: str, parameters: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """``GET /console/<name>``: its typed parameters (``parameters``: name → schema with its
    bounds and default), its 200 body and the 400 (a parameter it does not take, or out of
    its bounds)."""
    documented = [
        {"name": p, "in": "query", "required": False, "schema": schema}
        for p, schema in parameters.items()
    ]
    responses: dict[str, Any] = {
        "200": {
            "description": operation.get("summary", name),
            "content": {"application/json": {"schema": CONSOLE_BODIES[name]}},
        },
        "400": {
            "description": "a parameter that is unknown, repeated, or out of its bounds",
            "content": {"application/json": {"schema": ERROR_BODY}},
        },
    }
    return {**operation, "parameters": documented, "responses": responses}
