"""The wheels of source-only dependencies (devtools/wheels.py): built once per machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devtools import wheels

pytestmark = pytest.mark.unit


def test_the_pin_read_is_the_pyspark_installed() -> None:
    import pyspark

    assert wheels.pinned_source_only() == [("pyspark", pyspark.__version__)]


def test_a_pin_is_read_off_a_dependency_list(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = [\n    "PySpark==9.1.2",\n    "other==1",\n]\n')
    assert wheels.pinned_source_only(pyproject) == [("pyspark", "9.1.2")]
    pyproject.write_text('[project]\ndependencies = ["pyspark>=4"]\n')
    assert wheels.pinned_source_only(pyproject) == []


def test_a_wheel_built_before_is_reused_without_pip(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    built = tmp_path / "pyspark-9.1.2-py2.py3-none-any.whl"
    built.write_bytes(b"")

    def no_build(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"a build: {args[0]}")

    monkeypatch.setattr(subprocess, "run", no_build)
    assert wheels.ensure(tmp_path, [("pyspark", "9.1.2")]) == [built]


def test_a_failed_build_leaves_no_wheel_and_says_so_in_one_line(
    tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise subprocess.CalledProcessError(1, args[0])

    monkeypatch.setattr(subprocess, "run", failing)
    monkeypatch.setattr(wheels, "pinned_source_only", lambda: [("pyspark", "9.1.2")])
    assert wheels.main(["ensure", str(tmp_path / "wheels")]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("could not build the source-only dependencies' wheels:") and "\n" not in err
    )
    assert not list((tmp_path / "wheels").rglob("*.whl"))
