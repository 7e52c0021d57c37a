"""Loading the configuration: TOML layers, environment overrides, validation (CONTRACT §6).

Layers, later wins: ``conf/base.toml`` (every key, with its default), ``conf/<env>.toml``
(``local``, ``cluster`` or ``databricks``), the file given with ``--conf``, then environment
variables ``LAMBDA_SALES__SECTION__KEY=value``. The result is checked against
:mod:`sales_core.config.schema`: a key it does not name, a value of the wrong type or not
among a key's choices, or a secret in a file stops the command with a one-line
:class:`ConfigError` naming the key and where its value came from.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
import zipimport
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sales_core.config.schema import PATH_KEYS, SECRET_KEYS, Config, ConfigError, Secret

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "LAMBDA_SALES__"
ENV_NAME_VAR = "LAMBDA_SALES_ENV"
ENVIRONMENTS = ("local", "cluster", "databricks")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def load_config(
    conf_path: str | os.PathLike[str] | None = None,
    *,
    env_name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load, merge and validate the configuration.

    Args:
        conf_path: the ``--conf`` file, if any.
        env_name: ``local`` (default), ``cluster`` or ``databricks``; else ``$LAMBDA_SALES_ENV``.
        environ: the environment to read overrides from (``os.environ`` by default).
    """
    environ = os.environ if environ is None else environ
    env_name = env_name or environ.get(ENV_NAME_VAR) or "local"
    if env_name not in ENVIRONMENTS:
        raise ConfigError(
            f"unknown environment '{env_name}': choose one of {', '.join(ENVIRONMENTS)}"
        )
    origins: dict[str, str] = {}
    data: dict[str, Any] = {}
    files = [CONF_DIR / "base.toml", CONF_DIR / f"{env_name}.toml"]
    files += [Path(conf_path)] if conf_path is not None else []
    for index, path in enumerate(files):
        if index == 1 and not _exists(path):
            continue
        layer = _read_toml(path)
        if index > 0:
            _check_no_secrets(layer, str(path))
        _record_origins(layer, str(path), origins)
        data = _merge(data, layer)
    overrides, env_origins = _env_overrides(environ)
    origins.update(env_origins)
    data = _merge(data, overrides)
    return typing.cast(Config, _build(Config, data, "", origins))


def resolve_location(location: str) -> str:
    """An absolute local path for a relative one; URIs (``s3a://``, ``dbfs:/``…) unchanged."""
    if "://" in location or location.startswith(("dbfs:", "/Volumes/")):
        return location
    if not location.strip():
        raise ConfigError("a path in the configuration is empty")
    return str(Path(location).expanduser().resolve())


# ------------------------------------------------------------------ the layers


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _shipped_layer(path: Path) -> bytes | None:
    """A ``conf/`` file shipped inside the project archive, when the code runs from one.

    Under ``spark-submit --py-files lambda_sales.zip`` (the cluster-mode driver, executors)
    this module is imported from the zip, so ``CONF_DIR`` points into it and no directory
    exists there; the zip's own loader reads the file instead.
    """
    loader = globals().get("__loader__")
    if not isinstance(loader, zipimport.zipimporter) or loader.archive is None:
        return None
    try:
        return typing.cast(bytes, loader.get_data(os.path.join(loader.archive, "conf", path.name)))
    except OSError:
        return None


def _exists(path: Path) -> bool:
    return path.is_file() or (path.parent == CONF_DIR and _shipped_layer(path) is not None)


def _read_toml(path: Path) -> dict[str, Any]:
    if path.is_file():
        content = path.read_bytes()
    elif path.parent == CONF_DIR and (shipped := _shipped_layer(path)) is not None:
        content = shipped
    else:
        raise ConfigError(f"configuration file not found: {path}")
    try:
        return tomllib.loads(content.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None


def _record_origins(
    data: Mapping[str, Any], origin: str, origins: dict[str, str], prefix: str = ""
) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _record_origins(value, origin, origins, dotted + ".")
        else:
            origins[dotted] = origin


def _check_no_secrets(data: Mapping[str, Any], origin: str, prefix: str = "") -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _check_no_secrets(value, origin, dotted + ".")
        elif dotted in SECRET_KEYS and value not in ("", None):
            raise ConfigError(
                f"secret '{dotted}' must not be set in {origin}; set it in the environment "
                f"as {ENV_PREFIX}{dotted.upper().replace('.', '__')}"
            )


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Environment variables as a nested dict (strings), and each dotted key's variable name."""
    overrides: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        # Section and key names are case-insensitive; Spark setting names are not.
        parts = [
            p if i >= 2 and [q.lower() for q in parts[:2]] == ["spark", "conf"] else p.lower()
            for i, p in enumerate(parts)
        ]
        if not all(parts):
            raise ConfigError(
                f"environment variable {name} is not of the form {ENV_PREFIX}SECTION__KEY"
            )
        node = overrides
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another override")
        node[parts[-1]] = value
        origins[".".join(parts)] = name
    return overrides, origins


# ------------------------------------------------------------------ validation against the schema


def _build(cls: type, data: Mapping[str, Any], prefix: str, origins: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            dotted = f"{prefix}{key}"
            where = origins.get(dotted, "configuration")
            raise ConfigError(f"unknown configuration key '{dotted}' ({where})")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        dotted = f"{prefix}{field.name}"
        target = hints[field.name]
        if field.name not in data:
            if target is Secret:
                values[field.name] = Secret("")
                continue
            raise ConfigError(f"missing configuration key '{dotted}'")
        raw = data[field.name]
        origin = origins.get(dotted, "configuration")
        if isinstance(target, type) and dataclasses.is_dataclass(target):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"configuration key '{dotted}' must be a table ({origin})")
            values[field.name] = _build(target, raw, dotted + ".", origins)
        elif target is Secret:
            values[field.name] = Secret(str(raw))
        elif typing.get_origin(target) is dict:
            if not isinstance(raw, Mapping):
                raise ConfigError(f"configuration key '{dotted}' must be a table ({origin})")
            values[field.name] = {str(k): str(v) for k, v in raw.items()}
        else:
            values[field.name] = _scalar(raw, target, field, dotted, origin)
    return cls(**values)


def _scalar(raw: Any, target: Any, field: dataclasses.Field[Any], dotted: str, origin: str) -> Any:
    if isinstance(raw, str) and target is not str:
        raw = _parse_scalar(raw, target, dotted, origin)
    elif target is float and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw)
    if not isinstance(raw, target) or (target is int and isinstance(raw, bool)):
        raise ConfigError(
            f"configuration key '{dotted}' must be of type {target.__name__}, "
            f"got {type(raw).__name__} {raw!r} ({origin})"
        )
    choices: tuple[str, ...] | None = field.metadata.get("choices")
    if choices is not None:
        chosen = [c for c in choices if c.lower() == str(raw).strip().lower()]
        if not chosen:
            raise ConfigError(
                f"configuration key '{dotted}' must be one of {', '.join(choices)}, "
                f"got {raw!r} ({origin})"
            )
        raw = chosen[0]
    if dotted in PATH_KEYS:
        raw = resolve_location(raw)
    return raw


def _parse_scalar(text: str, target: Any, key: str, origin: str) -> Any:
    if target is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(
            f"configuration key '{key}' must be true or false, got {text!r} ({origin})"
        )
    if target is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(
                f"configuration key '{key}' must be an integer, got {text!r} ({origin})"
            ) from None
    if target is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(
                f"configuration key '{key}' must be a number, got {text!r} ({origin})"
            ) from None
    return text
