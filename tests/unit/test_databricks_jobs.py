"""The Databricks job definitions (``databricks.yml`` and ``jobs/databricks/*.yml``), read with
the official ``databricks-sdk`` models and checked against the code they run.

``JobSettings.from_dict`` ignores keys it does not know, so each job is also turned back into
a dict and compared with the file: a misspelled setting shows up as a difference.
"""

from __future__ import annotations

import io
import re
import shlex
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from databricks.sdk.service.jobs import JobSettings, PauseStatus

from jobs.cli import build_parser
from sales_core.config import SECRET_KEYS, load_config
from sales_core.packages import JVM_PACKAGES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.unit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINT = PROJECT_ROOT / "jobs" / "run.py"
_VAR = re.compile(r"\$\{var\.([a-z_]+)\}")
_SECRET_REF = re.compile(r"^\{\{secrets/[^/{}]+/[^/{}]+\}\}$")


def load_bundle() -> tuple[dict[str, Any], dict[str, tuple[Path, dict[str, Any]]]]:
    """The bundle's root settings and every job as (file it is defined in, settings)."""
    root = yaml.safe_load((PROJECT_ROOT / "databricks.yml").read_text())
    jobs: dict[str, tuple[Path, dict[str, Any]]] = {}
    for pattern in root.get("include", []):
        for path in sorted(PROJECT_ROOT.glob(pattern)):
            for name, job in (
                yaml.safe_load(path.read_text()).get("resources", {}).get("jobs", {}) or {}
            ).items():
                assert name not in jobs, f"job {name} defined twice"
                jobs[name] = (path, job)
    return root, jobs


BUNDLE, JOBS = load_bundle()


def substitute(value: str) -> str:
    """Bundle variables replaced by their defaults (what `bundle deploy` does without --var)."""
    return _VAR.sub(lambda m: str(BUNDLE["variables"][m.group(1)]["default"]), value)


def tasks() -> list[tuple[str, Path, dict[str, Any]]]:
    return [(name, path, task) for name, (path, job) in JOBS.items() for task in job["tasks"]]


def is_subcommand(name: str) -> bool:
    """Whether the CLI takes ``name`` as a subcommand: its ``--help`` exits 0, where an
    unknown subcommand is a usage error (exit 2)."""
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args([name, "--help"])
        except SystemExit as exit_:
            return exit_.code == 0
    return False


def test_the_bundle_defines_the_nightly_batch_and_the_continuous_speed_job() -> None:
    assert BUNDLE["bundle"]["name"] == "lambda-sales"
    assert set(JOBS) == {"lambda_sales_nightly", "lambda_sales_speed"}
    assert {"dev", "prod"} <= set(BUNDLE["targets"])


@pytest.mark.parametrize("job_name", sorted(JOBS))
def test_each_job_is_valid_jobs_api_settings(job_name: str) -> None:
    _, job = JOBS[job_name]
    settings = JobSettings.from_dict(job)
    assert settings.as_dict() == job  # nothing the model does not know, nothing lost
    assert settings.max_concurrent_runs == 1
    assert settings.email_notifications and settings.email_notifications.on_failure
    assert settings.webhook_notifications and settings.webhook_notifications.on_failure
    assert all(
        t.job_cluster_key in {c.job_cluster_key for c in settings.job_clusters or []}
        for t in settings.tasks or []
    )


def test_a_misspelled_setting_is_caught_by_the_round_trip() -> None:
    _, job = JOBS["lambda_sales_nightly"]
    broken = {**job, "tasks": [{**job["tasks"][0], "max_retrys": 3}]}
    assert JobSettings.from_dict(broken).as_dict() != broken


def test_nightly_batch_runs_at_two_with_retries_and_failure_notifications() -> None:
    settings = JobSettings.from_dict(JOBS["lambda_sales_nightly"][1])
    assert settings.schedule is not None
    assert settings.schedule.quartz_cron_expression.split() == [
        "0",
        "0",
        "2",
        "*",
        "*",
        "?",
    ]  # s m h dom mon dow
    assert settings.schedule.timezone_id == "UTC"
    assert settings.schedule.pause_status == PauseStatus.UNPAUSED
    assert settings.continuous is None
    by_key = {t.task_key: t for t in settings.tasks or []}
    batch = by_key["batch"]
    assert (
        batch.max_retries == 3
        and batch.min_retry_interval_millis == 300_000
        and batch.timeout_seconds
    )
    assert batch.spark_python_task is not None and batch.spark_python_task.parameters[0] == "batch"  # type: ignore[index]
    views = by_key["sql_views"]
    assert [d.task_key for d in views.depends_on or []] == [
        "batch"
    ]  # after the publish, never before
    assert (
        views.spark_python_task is not None and views.spark_python_task.parameters[0] == "sql-views"
    )  # type: ignore[index]
    upkeep = by_key["maintain"]  # after the nightly batch
    assert [d.task_key for d in upkeep.depends_on or []] == ["batch"]
    assert upkeep.spark_python_task is not None
    assert upkeep.spark_python_task.parameters[0] == "maintain"  # type: ignore[index]


def test_speed_job_is_continuous_and_never_drains_and_exits() -> None:
    settings = JobSettings.from_dict(JOBS["lambda_sales_speed"][1])
    assert (
        settings.continuous is not None and settings.continuous.pause_status == PauseStatus.UNPAUSED
    )
    assert settings.schedule is None
    [task] = settings.tasks or []
    assert task.spark_python_task is not None
    params = task.spark_python_task.parameters or []
    assert params[0] == "speed" and "--available-now" not in params


@pytest.mark.parametrize(
    ("job_name", "path", "task"), tasks(), ids=[f"{j}:{t['task_key']}" for j, _, t in tasks()]
)
def test_every_task_runs_the_entry_point_with_arguments_the_cli_accepts(
    job_name: str, path: Path, task: dict[str, Any]
) -> None:
    python_task = task["spark_python_task"]
    # Bundle paths are relative to the file that declares them.
    assert (path.parent / python_task["python_file"]).resolve() == ENTRY_POINT
    assert ENTRY_POINT.is_file()
    params = [substitute(p) for p in python_task["parameters"]]
    assert is_subcommand(params[0]), f"{job_name}: no such subcommand {params[0]}"
    args = build_parser().parse_args(params)  # SystemExit (a failure) on anything it does not take
    assert args.command == params[0]
    assert args.env == "databricks", shlex.join(params)


@pytest.mark.parametrize("job_name", sorted(JOBS))
def test_cluster_environment_is_a_valid_configuration_with_secrets_only_from_a_secret_scope(
    job_name: str,
) -> None:
    _, job = JOBS[job_name]
    for cluster in job["job_clusters"]:
        env = {k: substitute(v) for k, v in cluster["new_cluster"]["spark_env_vars"].items()}
        assert env["LAMBDA_SALES_ENV"] == "databricks"
        for name, value in env.items():
            key = name.removeprefix("LAMBDA_SALES__").lower().replace("__", ".")
            if key in SECRET_KEYS:
                assert _SECRET_REF.match(value), (
                    f"{name} must be a {{{{secrets/scope/key}}}} reference"
                )
        config = load_config(env_name="databricks", environ=env)  # unknown keys or bad types raise
        assert config.lakehouse.root.startswith("/Volumes/main/lambda_sales/")


def test_every_bundle_variable_used_is_declared() -> None:
    text = (PROJECT_ROOT / "databricks.yml").read_text() + "".join(
        p.read_text() for p, _ in JOBS.values()
    )
    used = set(_VAR.findall(text))
    assert used and used <= set(BUNDLE["variables"])


def test_libraries_match_the_pins_of_the_project() -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    pinned = {
        d.split("==")[0].lower(): d for d in pyproject["project"]["dependencies"] if "==" in d
    }
    seen = 0
    for _, _, task in tasks():
        for library in task.get("libraries", []):
            if "maven" in library:
                assert library["maven"]["coordinates"] in JVM_PACKAGES
            if "pypi" in library:
                package = library["pypi"]["package"]
                assert pinned[package.split("==")[0].lower()] == package
            seen += 1
    assert seen >= 2
