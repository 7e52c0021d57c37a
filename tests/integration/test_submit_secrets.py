"""Secrets never on ``spark-submit.sh``'s command line (CONTRACT §6): in cluster mode the
driver's LAMBDA_SALES__* variables travel in a properties file only the user can read, removed
when spark-submit returns, and Spark's UI and event log redact them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SUBMIT = Path(__file__).resolve().parents[2] / "spark-submit.sh"
SECRETS = {
    "LAMBDA_SALES__SOURCES__JDBC__PASSWORD": "pg-s3cr3t-\\-value",
    "LAMBDA_SALES__SOURCES__KAFKA__SASL_PASSWORD": "sasl s3cr3t",
    "LAMBDA_SALES__SOURCES__HTTP__TOKEN": "tok-s3cr3t",
    "LAMBDA_SALES__ALERTS__WEBHOOK_URL": "https://hooks.example/s3cr3t-path",
}


def dry_run(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **SECRETS, "TMPDIR": str(tmp_path)}
    return subprocess.run(
        [str(SUBMIT), "--dry-run", *options, "batch", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("--master", "spark://10.0.0.5:7077"),
        ("--master", "yarn", "--deploy-mode", "cluster"),
        ("--master", "k8s://https://10.0.0.5:443", "--deploy-mode", "cluster"),
    ],
    ids=["local", "standalone", "yarn-cluster", "k8s-cluster"],
)
def test_no_secret_on_the_command_line(tmp_path: Path, options: tuple[str, ...]) -> None:
    done = dry_run(tmp_path, *options)
    assert done.returncode == 0, done.stderr
    for value in SECRETS.values():
        assert value not in done.stdout and value not in done.stderr
    assert "spark.redaction.regex=" in done.stdout and "webhook" in done.stdout
    if "cluster" in options:  # the driver still gets them, by name, from the properties file
        for name in SECRETS:
            assert name in done.stdout.splitlines()[-1]
        assert "--properties-file" in done.stdout
    assert list(tmp_path.iterdir()) == [], "the properties file outlived the submission"
