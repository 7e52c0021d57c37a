"""The ``[logging]`` section as a user sees it (conf/*.toml): ``level`` and ``format`` change
what ``lambda-sales`` writes on stderr. A laptop (conf/local.toml) gets text at WARNING, so a
command that goes well writes no log line; the cluster and Databricks layers get one JSON
object a line at INFO, and then everything on stderr is such a line: the layers' logs, the
command's start and end, the progress lines (the Spark JVM's output goes to a file).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import environ_without_config

pytestmark = [pytest.mark.integration]

CLI = str(Path(sys.executable).with_name("lambda-sales"))
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) (\S+): (.*)$")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return environ_without_config(LAMBDA_SALES_LOG_DIR=str(tmp_path / "logs"), **extra)


def _conf(tmp_path: Path) -> Path:
    (tmp_path / "landing").mkdir(exist_ok=True)
    path = tmp_path / "conf.toml"
    path.write_text(
        f'[lakehouse]\nroot = "{tmp_path / "lakehouse"}"\n\n'
        f'[sources.files]\nlanding = "{tmp_path / "landing"}"\n\n'
        # the cluster and Databricks layers leave the master to the launcher: run locally here
        '[spark]\nmaster = "local[1]"\nshuffle_partitions = 2\ndriver_memory = "1g"\n\n'
        # conf/cluster.toml sizes Delta's log replay for a cluster (50 tasks per replay): on
        # one local core this batch took 183 s, 37 s with what conf/local.toml sets instead
        # (C1 alone comes from the environment, as for every driver the tests start).
        "[spark.conf]\n"
        '"spark.databricks.delta.snapshotPartitions" = "2"\n'
        '"spark.sql.adaptive.coalescePartitions.initialPartitionNum" = "2"\n\n'
        "[quality]\nmin_score = 0.0\n",
        encoding="utf-8",
    )
    return path


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args, "--conf", str(_conf(tmp_path))],
        env=_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = stderr.splitlines()
    assert lines, "no log line on stderr"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}\n--- stderr ---\n{stderr}")
    return parsed


# ------------------------------------------------------------------ no Spark: `config`


def test_local_default_writes_no_log_line_for_a_command_that_goes_well(tmp_path: Path) -> None:
    result = _run(tmp_path, "config")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert '[logging]\nlevel = "WARNING"\nformat = "text"' in result.stdout


def test_level_info_shows_the_command_lines_as_text(tmp_path: Path) -> None:
    result = _run(tmp_path, "config", LAMBDA_SALES__LOGGING__LEVEL="INFO")
    assert result.returncode == 0, result.stderr
    shown = [TEXT_LINE.match(line) for line in result.stderr.splitlines()]
    assert all(shown), result.stderr
    assert [m.groups()[:2] for m in shown if m] == [("INFO", "lambda_sales")] * 2
    assert shown[0] and shown[0].group(3) == "lambda-sales config started"
    assert shown[1] and re.fullmatch(
        r"lambda-sales config finished in \d+\.\d s", shown[1].group(3)
    )


def test_format_json_turns_the_same_lines_into_json(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "config",
        LAMBDA_SALES__LOGGING__LEVEL="INFO",
        LAMBDA_SALES__LOGGING__FORMAT="json",
    )
    assert result.returncode == 0, result.stderr
    lines = _json_lines(result.stderr)
    assert [(r["level"], r["logger"]) for r in lines] == [("INFO", "lambda_sales")] * 2
    assert lines[0]["message"] == "lambda-sales config started"
    assert re.fullmatch(r"lambda-sales config finished in \d+\.\d s", lines[1]["message"])
    assert lines[0]["lakehouse"] == str(tmp_path / "lakehouse")
    assert lines[1]["exit_status"] == 0


@pytest.mark.parametrize("env_name", ["cluster", "databricks"])
def test_cluster_and_databricks_layers_log_json_at_info(tmp_path: Path, env_name: str) -> None:
    result = _run(tmp_path, "config", "--env", env_name)
    assert result.returncode == 0, result.stderr
    assert [(r["level"], r["command"]) for r in _json_lines(result.stderr)] == [
        ("INFO", "config"),
        ("INFO", "config"),
    ]


def test_a_higher_level_hides_info_on_the_cluster_layer(tmp_path: Path) -> None:
    result = _run(tmp_path, "config", "--env", "cluster", LAMBDA_SALES__LOGGING__LEVEL="ERROR")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_an_error_stays_one_plain_line_whatever_the_format(tmp_path: Path) -> None:
    result = _run(tmp_path, "query", "sales_daily", "--env", "cluster")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[-1] == (
        "lambda-sales query: no views yet: run `lambda-sales batch` or `lambda-sales speed` first"
    )
    assert [r["message"] for r in _json_lines("\n".join(lines[:-1]))] == [
        "lambda-sales query started"
    ]


def test_a_bad_logging_value_is_a_one_line_configuration_error(tmp_path: Path) -> None:
    result = _run(tmp_path, "config", LAMBDA_SALES__LOGGING__LEVEL="chatty")
    assert result.returncode == 2
    assert result.stderr == (
        "lambda-sales config: configuration key 'logging.level' must be one of DEBUG, INFO, "
        "WARNING, ERROR, CRITICAL, got 'chatty' (LAMBDA_SALES__LOGGING__LEVEL)\n"
    )


# ------------------------------------------------------------------ a Spark job: `batch`


def test_batch_on_the_cluster_layer_writes_only_json_lines(tmp_path: Path) -> None:
    events = [
        {
            "event_id": f"log-{i}",
            "order_id": f"o-{i}",
            "product_id": "p-1",
            "quantity": 1,
            "amount": "10.00",
            "event_time": "2026-11-01T10:00:00Z",
        }
        for i in range(3)
    ]
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "sales.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in events) + "not json\n", encoding="utf-8"
    )
    result = _run(tmp_path, "batch", "--env", "cluster")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("item "), result.stdout

    lines = _json_lines(result.stderr)  # nothing else: no JVM line, no plain progress line
    by_logger = {(r["logger"], r["level"]) for r in lines}
    assert ("batch_layer.publish", "INFO") in by_logger
    assert any(
        r["logger"] == "batch_layer.ingest"
        and "read 4, valid 3, duplicates 0, quarantined 1" in r["message"]
        for r in lines
    ), result.stderr
    progress = [r for r in lines if r["logger"] == "lambda_sales.progress"]
    assert progress and progress[0]["message"] == "starting Spark"
    assert {r["job"] for r in progress} == {"batch"}
    assert lines[-1]["message"].startswith("lambda-sales batch finished in ")

    spark_logs = list((tmp_path / "logs").glob("spark-batch-*.log"))
    assert len(spark_logs) == 1 and spark_logs[0].stat().st_size > 0
