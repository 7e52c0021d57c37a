"""The nightly DAG in a real Apache Airflow 3 (its own virtualenv, SQLite, a temporary
AIRFLOW_HOME): the DAG as Airflow loads it; ``airflow dags test`` on the failure path with its
retries and webhook alert; and ``lambda-sales airflow trigger|status|wait`` against a real API
server, scheduler and DAG processor, the triggered run going through ``spark-submit.sh`` (the
batch, then maintenance) with no secret in its task logs.

The virtualenv is made by ``scripts/airflow-venv.sh`` on first use (about two minutes from
PyPI with uv) and reused afterwards.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sales_core.handoff import current_generation, read_batch_view
from sales_core.lakehouse import Lakehouse
from tests.conftest import environ_without_config, write_jsonl
from tests.integration.test_alerts import Webhook
from tests.oracle import compute_views, event, raw_json, rows_to_view
from tests.processes import free_port, stop_group

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "lambda_sales_nightly"
CLI = str(Path(sys.executable).with_name("lambda-sales"))

EVENTS = [
    event("a1", amount="10.00", quantity=2, event_time="2024-05-01T10:00:00Z", region="north"),
    event(
        "a2", amount="250.50", event_time="2024-05-01T11:30:00Z", region="south", customer_id="c2"
    ),
    event("a3", amount="1200.00", event_time="2024-05-02T09:00:00Z", channel="mobile"),
]


@dataclass
class AirflowHome:
    venv: Path
    home: Path
    env: dict[str, str]
    password: str

    def airflow(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 1200
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "airflow"), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
        )


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """Airflow installed (once, cached under .cache/) and a fresh SQLite metadata database."""
    started = time.monotonic()
    venv = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "airflow-venv.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=PROJECT_ROOT,
    )
    assert venv.returncode == 0, venv.stderr[-4000:]
    print(
        f"airflow venv ready in {time.monotonic() - started:.0f}s: {venv.stderr.strip()}",
        file=sys.stderr,
    )
    home = tmp_path_factory.mktemp("airflow-home")
    password = secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    env = {
        **{k: v for k, v in environ_without_config().items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "jobs" / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        # The DAG folder listed every 5 s (the DAG is found soon after the processor starts);
        # each file is parsed again every 30 s ([dag_processor] min_file_process_interval's
        # default: Airflow 3 no longer reads [scheduler]'s old key).
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # The batch job runs with the project's own Python and Spark, not Airflow's.
        "PYTHON": sys.executable,
        "LAMBDA_SALES_SPARK_MASTER": "local[2]",
        "LAMBDA_SALES__QUALITY__MIN_SCORE": "0",
        "LAMBDA_SALES__SPARK__SHUFFLE_PARTITIONS": "2",
        "LAMBDA_SALES__SPARK__CONF__spark.databricks.delta.snapshotPartitions": "2",
    }
    af = AirflowHome(PROJECT_ROOT / venv.stdout.strip(), home, env, password)
    migrate = af.airflow("db", "migrate")
    assert migrate.returncode == 0, migrate.stderr[-4000:]
    return af


def test_the_dag_has_the_nightly_schedule_retries_timeout_and_alert(
    airflow_home: AirflowHome,
) -> None:
    """The DAG as Airflow itself loads it (its own DagBag, no test overrides)."""
    script = (
        "import json; from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(PROJECT_ROOT / 'jobs' / 'airflow')!r})\n"
        f"dag = bag.get_dag({DAG_ID!r}); t = dag.get_task('batch')\n"
        "cb = t.on_failure_callback; cbs = cb if isinstance(cb, (list, tuple)) else [cb]\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()}, 'schedule': dag.timetable.expression, 'tt_tz': str(dag.timetable.timezone),\n"
        "  'tz': str(dag.timezone), 'catchup': dag.catchup, 'retries': t.retries, 'retry_delay': t.retry_delay.total_seconds(),\n"
        "  'timeout': t.execution_timeout.total_seconds(), 'callbacks': [c.__name__ for c in cbs if c],\n"
        "  'command': t.bash_command, 'tasks': [x.task_id for x in dag.tasks],\n"
        "  'after_batch': sorted(t.downstream_task_ids), 'maintain': dag.get_task('maintain').bash_command}))\n"
    )
    result = subprocess.run(
        [str(airflow_home.venv / "bin" / "python"), "-c", script],
        env={k: v for k, v in airflow_home.env.items() if not k.startswith("LAMBDA_SALES")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dag = json.loads(result.stdout.strip().splitlines()[-1])
    assert dag["errors"] == {}
    assert dag["schedule"] == "0 2 * * *" and dag["tt_tz"] == "UTC" and dag["catchup"] is False
    assert (dag["retries"], dag["retry_delay"]) == (3, 300.0)
    assert 0 < dag["timeout"] <= 6 * 3600
    assert dag["callbacks"] == ["alert_on_failure"]
    assert dag["tasks"] == ["batch", "maintain"] and dag["after_batch"] == ["maintain"]
    assert dag["command"].endswith("spark-submit.sh batch --quiet")
    assert dag["maintain"].endswith("spark-submit.sh maintain --quiet")


# Secrets the task's environment carries (CONTRACT §6: never in a log line).
SECRETS = {
    "LAMBDA_SALES__SOURCES__JDBC__PASSWORD": "pg-s3cr3t-in-airflow",
    "LAMBDA_SALES__SOURCES__KAFKA__SASL_PASSWORD": "sasl-s3cr3t-in-airflow",
    "LAMBDA_SALES__SOURCES__HTTP__TOKEN": "token-s3cr3t-in-airflow",
}


def task_logs(airflow_home: AirflowHome, run_id: str = "") -> str:
    """Every task log file Airflow wrote under its home, or only those of run ``run_id``
    (``dags test`` writes none: it prints the task logs with its output)."""
    return "".join(
        p.read_text(encoding="utf-8", errors="replace")
        for p in (airflow_home.home / "logs").rglob("*")
        if p.is_file() and (not run_id or f"run_id={run_id}/" in str(p))
    )


def assert_no_secret(text: str, values: Iterable[str]) -> None:
    for value in values:
        assert value not in text, f"a secret is in the Airflow output or task logs: {value[:6]}…"


def test_a_failing_batch_is_retried_then_alerts_the_webhook(
    airflow_home: AirflowHome, tmp_path: Path
) -> None:
    with Webhook([200]) as hook:
        result = airflow_home.airflow(
            "dags",
            "test",
            DAG_ID,
            env={
                "LAMBDA_SALES__LAKEHOUSE__ROOT": str(tmp_path / "lakehouse"),
                "LAMBDA_SALES__SOURCES__FILES__LANDING": str(tmp_path / "no-such-landing"),
                "LAMBDA_SALES__ALERTS__WEBHOOK_URL": hook.url,
                "LAMBDA_SALES_AIRFLOW_RETRIES": "1",
                "LAMBDA_SALES_AIRFLOW_RETRY_DELAY_SECONDS": "1",
            },
        )
    output = result.stdout + result.stderr
    assert_no_secret(output + task_logs(airflow_home), [hook.url])
    assert "landing location does not exist" in output, output[-6000:]
    assert "state=failed" in output, output[-6000:]
    # The batch job's own alert on each try, then the DAG's once the retry failed too.
    kinds = [(r["json"]["kind"], r["json"]["details"].get("scheduler")) for r in hook.requests]
    assert kinds.count(("job_failed", "airflow")) == 1, kinds
    airflow_alert = next(
        r["json"] for r in hook.requests if r["json"]["details"].get("scheduler") == "airflow"
    )
    assert (
        airflow_alert["details"]["dag_id"] == DAG_ID
        and airflow_alert["details"]["task_id"] == "batch"
    )
    assert airflow_alert["details"]["try_number"] == 2  # the first try and one retry
    assert airflow_alert["text"].startswith(
        "[lambda-sales] job_failed: Airflow lambda_sales_nightly.batch failed"
    )


@pytest.fixture
def airflow_server(
    airflow_home: AirflowHome, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """API server, scheduler and DAG processor, sharing the metadata database; stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    lakehouse = tmp_path / "lakehouse"
    write_jsonl(tmp_path / "landing" / "day-1.jsonl", [raw_json(e) for e in EVENTS] + ["not json"])
    env = {
        **SECRETS,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        # A shared, busy machine: give the task's calls to the API server time, and a task
        # that failed to start a quick retry.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        # Only the run this test triggers: the scheduler would otherwise also start today's
        # 02:00 run at once (catchup off schedules the latest past point), a second batch on
        # the same lakehouse. The schedule itself is the DAG test's.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "LAMBDA_SALES_AIRFLOW_RETRY_DELAY_SECONDS": "10",
        "LAMBDA_SALES__LAKEHOUSE__ROOT": str(lakehouse),
        "LAMBDA_SALES__SOURCES__FILES__LANDING": str(tmp_path / "landing"),
    }
    processes = []
    try:
        for name, args in (
            ("api-server", ["api-server", "--port", str(port), "--host", "127.0.0.1"]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
        ):
            log = (tmp_path / f"{name}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [str(airflow_home.venv / "bin" / "airflow"), *args],
                    env={**airflow_home.env, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=airflow_home.home,
                )
            )
        deadline = time.monotonic() + 300
        while True:
            assert all(p.poll() is None for p in processes), (
                f"an Airflow process exited; logs in {tmp_path}"
            )
            try:
                with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                    health = json.loads(response.read())
                processor = health.get("dag_processor") or {
                    "status": "healthy"
                }  # not reported by every version
                if (health.get("scheduler") or {}).get("status") == "healthy" and processor.get(
                    "status"
                ) == "healthy":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (
                f"Airflow did not become healthy in 300 s; logs in {tmp_path}"
            )
            time.sleep(2)
        yield url, env
    finally:
        for p in reversed(processes):
            stop_group(p)


def _cli(
    *args: str, env: dict[str, str], timeout: float = 1500
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "airflow", *args],
        env=environ_without_config(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(2400)
def test_cli_triggers_the_dag_and_waits_for_it_through_the_rest_api(
    airflow_home: AirflowHome, airflow_server: tuple[str, dict[str, str]], spark
) -> None:  # type: ignore[no-untyped-def]
    url, server_env = airflow_server
    credentials = {
        "LAMBDA_SALES__AIRFLOW__URL": url,
        "LAMBDA_SALES__AIRFLOW__PASSWORD": airflow_home.password,
    }

    wrong = _cli("status", env={**credentials, "LAMBDA_SALES__AIRFLOW__PASSWORD": "wrong"})
    assert wrong.returncode == 1
    assert (
        "refused to log in (HTTP 401)" in wrong.stderr and airflow_home.password not in wrong.stderr
    )

    # The DAG processor must have parsed the DAG before it can be triggered (until then: 404).
    # The scheduler starts no scheduled run here (USE_JOB_SCHEDULE off); runs of
    # `airflow dags test` in this module's database may be listed already.
    deadline = time.monotonic() + 300
    while True:
        none_yet = _cli("status", env=credentials)
        if none_yet.returncode == 0 or "has no runs yet" in none_yet.stderr:
            break
        assert "not found (HTTP 404)" in none_yet.stderr, none_yet.stdout + none_yet.stderr
        assert time.monotonic() < deadline, none_yet.stderr
        time.sleep(3)

    triggered = _cli("trigger", "--wait", "--timeout", "1200", env=credentials)
    assert triggered.returncode == 0, triggered.stderr[-4000:]
    run_id = triggered.stdout.splitlines()[0].strip()
    assert triggered.stdout.splitlines()[-1].startswith(f"{DAG_ID} {run_id} success")

    status = _cli("status", run_id, env=credentials)
    assert status.returncode == 0 and status.stdout.startswith(f"{DAG_ID} {run_id} success")
    latest = _cli("status", env=credentials)
    assert latest.stdout.startswith(f"{DAG_ID} {run_id} success")
    waited = _cli("wait", run_id, "--timeout", "60", env=credentials)
    assert waited.returncode == 0 and f"{run_id} success" in waited.stdout

    # The run really ran the batch job, then maintenance: the views are published, both jobs'
    # runs recorded; the task logs hold the job's own output and no secret.
    logs = task_logs(airflow_home, run_id)
    assert "records read" in logs
    assert_no_secret(logs + triggered.stdout + triggered.stderr, SECRETS.values())
    lakehouse = Lakehouse(server_env["LAMBDA_SALES__LAKEHOUSE__ROOT"])
    generation = current_generation(spark, lakehouse)
    assert generation is not None and generation.events == len(EVENTS)
    runs = spark.read.format("delta").load(lakehouse.pipeline_runs).collect()
    assert sorted((r["job"], r["status"]) for r in runs) == [
        ("batch", "succeeded"),
        ("maintain", "succeeded"),  # the DAG's second task, after the publish
    ]
    for name, view in compute_views(EVENTS).items():
        rows = read_batch_view(spark, lakehouse, name, generation.generation).collect()
        assert rows_to_view([r.asDict() for r in rows], name) == view, name


def test_cli_reports_an_unreachable_airflow_in_one_line() -> None:
    result = _cli(
        "status",
        env={
            "LAMBDA_SALES__AIRFLOW__URL": f"http://127.0.0.1:{free_port()}",
            "LAMBDA_SALES__AIRFLOW__PASSWORD": "x",
        },
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("lambda-sales airflow: cannot log in at http://127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1
