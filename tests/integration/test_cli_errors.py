"""``lambda-sales`` as a user runs it (CONTRACT §5, §6): bad configuration, missing or
unreachable sources and bad queries end with a non-zero status and one line on stderr that
names the problem, never a traceback; secrets are never printed; ``--help`` works everywhere.

Configuration problems and bad queries must be caught before Spark starts: those runs get
``JAVA_HOME`` pointing nowhere, so a Spark start would fail with a different message (and
they must also be fast).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import environ_without_config

pytestmark = [pytest.mark.integration]

CLI = str(Path(sys.executable).with_name("lambda-sales"))
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "cli-secret-pw-4242"
FAST_SECONDS = 15.0  # a JVM start alone takes longer than this here


def _no_spark_env(**extra: str) -> dict[str, str]:
    return environ_without_config(JAVA_HOME="/nonexistent-java-home-lambda-sales-test", **extra)


def _conf(tmp_path: Path, extra: str = "", *, landing: Path | None = None) -> Path:
    if landing is None:
        landing = tmp_path / "landing"
        landing.mkdir(exist_ok=True)
    path = tmp_path / "conf.toml"
    path.write_text(
        f'[lakehouse]\nroot = "{tmp_path / "lakehouse"}"\n\n'
        f'[sources.files]\nlanding = "{landing}"\n\n'
        '[spark]\nmaster = "local[1]"\nshuffle_partitions = 2\ndriver_memory = "1g"\n\n'
        "[quality]\nmin_score = 0.0\n\n" + extra,
        encoding="utf-8",
    )
    return path


def _run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    return result, time.monotonic() - started


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *must_mention: str) -> str:
    shown = f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode != 0, shown
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr, shown
    lines = result.stderr.splitlines()
    naming = [line for line in lines if all(word in line for word in must_mention)]
    assert naming, f"no stderr line names {must_mention}:\n{shown}"
    assert len(lines) == 1 and lines[0].strip(), f"stderr must be exactly one line:\n{shown}"
    return lines[0]


# ------------------------------------------------------------------ configuration errors


def test_unknown_key_in_conf_file(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    conf.write_text(conf.read_text().replace("[lakehouse]\n", '[lakehouse]\nrooot = "x"\n', 1))
    result, elapsed = _run(["batch", "--quiet", "--conf", str(conf)], _no_spark_env(), tmp_path)
    _assert_one_line_error(result, "lakehouse.rooot")
    assert elapsed < FAST_SECONDS


def test_wrong_type_from_environment(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    env = _no_spark_env(LAMBDA_SALES__SPARK__SHUFFLE_PARTITIONS="abc")
    result, elapsed = _run(["batch", "--quiet", "--conf", str(conf)], env, tmp_path)
    _assert_one_line_error(result, "shuffle_partitions")
    assert elapsed < FAST_SECONDS


def test_secret_in_conf_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    secret = "conf-file-secret-7731"
    conf = _conf(tmp_path, f'[sources.jdbc]\npassword = "{secret}"\n')
    result, elapsed = _run(["batch", "--quiet", "--conf", str(conf)], _no_spark_env(), tmp_path)
    _assert_one_line_error(result, "sources.jdbc.password")
    assert secret not in result.stdout + result.stderr
    assert elapsed < FAST_SECONDS


# ------------------------------------------------------------------ query errors


def test_query_unknown_view(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    result, elapsed = _run(
        ["query", "no_such_view", "--conf", str(conf)], _no_spark_env(), tmp_path
    )
    _assert_one_line_error(result, "no_such_view")
    assert elapsed < FAST_SECONDS


def test_query_unknown_where_column(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    result, elapsed = _run(
        ["query", "sales_daily", "--where", "no_such_col=1", "--conf", str(conf)],
        _no_spark_env(),
        tmp_path,
    )
    _assert_one_line_error(result, "no_such_col")
    assert elapsed < FAST_SECONDS


# ------------------------------------------------------------------ source errors (Spark runs)


def test_batch_with_missing_landing_location(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-landing-dir"
    conf = _conf(tmp_path, landing=missing)
    result, elapsed = _run(
        ["batch", "--quiet", "--conf", str(conf)], environ_without_config(), tmp_path
    )
    line = _assert_one_line_error(result, "no-such-landing-dir")
    assert "landing location does not exist" in line
    assert elapsed < FAST_SECONDS  # found before Spark starts
    assert not (tmp_path / "lakehouse").exists()  # nothing ran, nothing written


def _without_root_file_access(command: list[str]) -> list[str]:
    """Root reads any file whatever its mode: drop the capabilities that allow it, so a mode
    000 file is as unreadable to the job as it is to any other user."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without util-linux setpriv: no way to make a file unreadable")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *command]


def test_batch_with_an_unreadable_landing_file(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "readable.jsonl").write_text('{"event_id": "e-1"}\n', encoding="utf-8")
    secret = landing / "no-read-permission.jsonl"
    secret.write_text('{"event_id": "e-2"}\n', encoding="utf-8")
    secret.chmod(0o000)
    conf = _conf(tmp_path, landing=landing)
    command = _without_root_file_access([CLI, "batch", "--quiet", "--conf", str(conf)])
    result = subprocess.run(
        command,
        env=environ_without_config(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    line = _assert_one_line_error(result, "no-read-permission.jsonl")
    assert "Permission denied" in line and "Traceback" not in line

    from deltalake import DeltaTable

    runs = (
        DeltaTable(str(tmp_path / "lakehouse" / "meta" / "pipeline_runs"))
        .to_pyarrow_table()
        .to_pylist()
    )
    assert [(r["job"], r["status"]) for r in runs] == [("batch", "failed")]
    assert "no-read-permission.jsonl" in runs[0]["error"]
    master = tmp_path / "lakehouse" / "bronze" / "master_dataset"
    assert not master.exists() or DeltaTable(str(master)).to_pyarrow_table().num_rows == 0


def test_batch_with_unreachable_database(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        '[sources.jdbc]\nenabled = true\nurl = "jdbc:postgresql://127.0.0.1:1/sales"\n'
        'table = "sales_data"\nuser = "sales"\n',
    )
    result, _ = _run(
        ["batch", "--quiet", "--conf", str(conf)],
        environ_without_config(LAMBDA_SALES__SOURCES__JDBC__PASSWORD=PASSWORD),
        tmp_path,
    )
    assert PASSWORD not in result.stdout + result.stderr
    _assert_one_line_error(result, "127.0.0.1:1")


# ------------------------------------------------------------------ secrets and help


def test_config_masks_the_password(tmp_path: Path) -> None:
    conf = _conf(tmp_path, "[sources.jdbc]\nenabled = true\n")
    env = _no_spark_env(LAMBDA_SALES__SOURCES__JDBC__PASSWORD=PASSWORD)
    result, _ = _run(["config", "--conf", str(conf)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    import tomllib

    printed = tomllib.loads(result.stdout)
    assert printed["sources"]["jdbc"]["password"] == "***"
    assert printed["sources"]["jdbc"]["enabled"] is True
    assert printed["lakehouse"]["root"] == str(tmp_path / "lakehouse")


@pytest.mark.parametrize(
    "command",
    ["", "batch", "query", "serve", "sql-views", "generate", "demo", "runs", "config", "kafka"],
)
def test_help_works_everywhere(tmp_path: Path, command: str) -> None:
    args = [command, "--help"] if command else ["--help"]
    result, elapsed = _run(args, _no_spark_env(), tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: lambda-sales"), result.stdout
    assert "--conf" in result.stdout or not command
    assert result.stderr == ""
    assert elapsed < FAST_SECONDS
