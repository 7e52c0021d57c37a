"""Printing the configuration (``lambda-sales config``): plain data, every secret masked."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from sales_core.config.schema import Config, Secret


def to_printable(config: Config) -> dict[str, Any]:
    """The configuration as plain data with every secret masked (safe to print or log)."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Secret):
            return "***" if value else ""
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return typing.cast(dict[str, Any], convert(config))


def dumps_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Render nested plain data as TOML (enough for ``config show``)."""
    scalars: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            name = f"{prefix}{key}"
            body = dumps_toml(value, name + ".")
            tables.append(
                f"[{name}]\n{body}" if body and not body.startswith("[") else body or f"[{name}]\n"
            )
        else:
            scalars.append(f"{_quote_key(key)} = {_toml_value(value)}")
    out = "\n".join(scalars)
    if scalars:
        out += "\n"
    if tables:
        out += ("\n" if scalars else "") + "\n".join(t.rstrip("\n") + "\n" for t in tables)
    return out


def _quote_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
