"""The layers contract (pyproject's [tool.importlinter]) holds, and it can fail.

Each case copies the packages and pyproject.toml to tmp_path, adds one import the
architecture forbids and runs ``lint-imports`` on the copy: it must fail and name the
import, while the unmodified copy passes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sales_core", "batch_layer", "speed_layer", "serving_layer", "jobs", "devtools")
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
CONTRACT_NAMES = {
    "layers": "jobs above three sibling layers",
    "devtools": "devtools (local services",
}


def copy_project(dest: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            PROJECT_ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(PROJECT_ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the copy in ``root``: only the copy is importable."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_project_keeps_its_contracts(tmp_path: Path) -> None:
    result = lint_imports(copy_project(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "imported", "contract"),
    [
        ("serving_layer/query.py", "batch_layer.publish", "layers"),  # a sibling
        ("speed_layer/job.py", "serving_layer.query", "layers"),  # a sibling
        ("batch_layer/job.py", "jobs.bundle", "layers"),  # a layer importing an entry point
        ("sales_core/views.py", "speed_layer.job", "layers"),  # the core importing a layer
        ("sales_core/views.py", "devtools.generator", "devtools"),  # the core, dev tooling
        ("serving_layer/query.py", "devtools.kafka", "devtools"),  # a layer, dev tooling
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    tmp_path: Path, module: str, imported: str, contract: str
) -> None:
    root = copy_project(tmp_path)
    source = root / module
    assert source.is_file() and (root / (imported.replace(".", "/") + ".py")).is_file()
    source.write_text(source.read_text() + f"\nimport {imported}  # noqa: E402, F401\n")
    importer = module.removesuffix(".py").replace("/", ".")

    result = lint_imports(root)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 kept, 1 broken" in result.stdout, result.stdout
    broken = result.stdout.split("Broken contracts")[1]
    assert CONTRACT_NAMES[contract] in broken
    assert f"{importer} -> {imported}" in broken
