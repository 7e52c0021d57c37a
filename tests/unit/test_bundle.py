"""What travels to a cluster: the --py-files zip (jobs/bundle.py) and the Databricks bundle's
sync hold the pipeline's packages and conf/, never the developer tooling (devtools/)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from jobs.bundle import PROJECT_ROOT, build_archive

pytestmark = pytest.mark.unit


def test_the_archive_holds_the_pipeline_and_never_devtools(tmp_path: Path) -> None:
    archive = build_archive(tmp_path)

    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"sales_core", "batch_layer", "speed_layer", "serving_layer", "jobs", "conf"}
    assert {"jobs/run.py", "sales_core/session.py", "conf/base.toml"} <= set(names)
    assert (PROJECT_ROOT / "devtools" / "kafka.py").is_file()  # there to be left out
    assert not [name for name in names if name.startswith("devtools/")]


def test_the_databricks_bundle_does_not_sync_devtools() -> None:
    bundle = yaml.safe_load((PROJECT_ROOT / "databricks.yml").read_text())

    assert "devtools/**" in bundle["sync"]["exclude"]


# What a cluster imports: the entry point, the CLI it hands over to and every job's modules.
CLUSTER_SIDE = """
import sys

class NotShipped:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "devtools":
            raise ImportError(f"{name} is not shipped to the cluster")
        return None

sys.meta_path.insert(0, NotShipped())
import jobs.run, jobs.cli, batch_layer.job, speed_layer.job, serving_layer.query
"""


def test_what_a_cluster_runs_imports_without_devtools() -> None:
    """import-linter lets jobs/ import devtools (the dev-only subcommands); only lazily, or
    the zip's entry point would fail on a cluster."""
    allowed = subprocess.run(
        [sys.executable, "-c", CLUSTER_SIDE], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    refused = subprocess.run(
        [sys.executable, "-c", CLUSTER_SIDE + "import devtools.generator\n"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )

    assert allowed.returncode == 0, allowed.stderr
    assert refused.returncode == 1 and "devtools is not shipped" in refused.stderr
