"""Tests reach the code through its public names only: no ``from x import _y``, no ``x._y``.

A test that needs a private name is testing an implementation detail; test through the
public function instead, or make the helper public where it is part of the module's interface.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parents[1]


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_names(source: str) -> list[str]:
    """Every private name a module imports or reads as an attribute, with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [
                f"{node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if is_private(alias.name)
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {alias.name}"
                for alias in node.names
                if any(is_private(part) for part in alias.name.split("."))
            ]
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("from serving_layer.fast import _may_hold_above", id="from_import"),
        pytest.param("from sales_core import lakehouse\nlakehouse._DELTA_LOG_API", id="attribute"),
        pytest.param("import sales_core._private", id="private_module"),
        pytest.param("parser = object()\n[a for a in parser._actions]", id="third_party"),
    ],
)
def test_the_check_finds_private_names(source: str) -> None:
    assert private_names(source)


def test_public_and_dunder_names_pass() -> None:
    source = "from sales_core.rules import validate\nimport os\nos.path.join(__file__, '__init__')"
    assert private_names(source) == []


def test_no_test_uses_a_private_name() -> None:
    found = {
        str(path.relative_to(TESTS)): names
        for path in sorted(TESTS.rglob("*.py"))
        if (names := private_names(path.read_text()))
    }
    assert found == {}
