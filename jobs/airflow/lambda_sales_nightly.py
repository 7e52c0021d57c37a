"""Airflow DAG ``lambda_sales_nightly``: the nightly batch at 02:00 UTC through ``spark-submit.sh``.

Put this file (or a symlink to it) in Airflow's dags folder on a machine with a checkout of
the project, built with ``make setup``. The task runs the same entry point as every other
scheduler: ``spark-submit.sh [--master M] [--env E] batch``. Settings come from the Airflow
worker's environment, so nothing secret is in the DAG:

- ``LAMBDA_SALES_HOME``: the checkout (default: two folders up from this file)
- ``LAMBDA_SALES_SPARK_MASTER``: the Spark master (default ``local[*]``)
- ``LAMBDA_SALES_ENV``: the ``conf/`` layer (default: chosen by spark-submit.sh from the master)
- ``LAMBDA_SALES__*``: configuration overrides and secrets, passed through to the job
  (``LAMBDA_SALES__ALERTS__WEBHOOK_URL`` also receives this DAG's failure alerts)

Retries: 3, five minutes apart (``LAMBDA_SALES_AIRFLOW_RETRIES``,
``LAMBDA_SALES_AIRFLOW_RETRY_DELAY_SECONDS`` change them); a try that runs past ``execution_timeout`` is killed and
retried. When the last try fails, ``on_failure_callback`` sends the project's webhook alert
(``sales_core.alerts``), in addition to whatever Airflow itself is set up to notify. The
batch exits 3 when the quality gate refuses to publish; retrying that is harmless (the
refused data still counts against the gate) and the alert says so.
"""

from __future__ import annotations

import os
import shlex
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, CronTriggerTimetable

DAG_ID = "lambda_sales_nightly"
PROJECT_HOME = Path(os.environ.get("LAMBDA_SALES_HOME", Path(__file__).resolve().parents[2]))


def alert_on_failure(context: dict[str, Any]) -> None:
    """Send a ``job_failed`` webhook alert for a task that failed for good. Never raises."""
    try:
        if str(PROJECT_HOME) not in sys.path:
            sys.path.insert(0, str(PROJECT_HOME))
        from sales_core.alerts import JOB_FAILED, notify
        from sales_core.config import load_config

        ti = context.get("task_instance") or context.get("ti")
        dag_run = context.get("dag_run")
        task_id = getattr(ti, "task_id", "?")
        exception = context.get("exception")
        details = {
            "job": "batch",
            "scheduler": "airflow",
            "dag_id": DAG_ID,
            "task_id": task_id,
            "run_id": getattr(dag_run, "run_id", None),
            "try_number": getattr(ti, "try_number", None),
            "error": str(exception).splitlines()[0] if exception else None,
        }
        summary = f"Airflow {DAG_ID}.{task_id} failed after its retries: {details['error']}"
        notify(load_config(), JOB_FAILED, summary, details)
    except Exception as exc:  # an alert must never turn into a second failure
        print(f"lambda-sales: failure alert not sent: {type(exc).__name__}: {exc}", file=sys.stderr)


def job_command(job: str) -> str:
    """``spark-submit.sh JOB`` with the master and environment of this worker."""
    parts = ["bash", str(PROJECT_HOME / "spark-submit.sh")]
    if os.environ.get("LAMBDA_SALES_SPARK_MASTER"):
        parts += ["--master", os.environ["LAMBDA_SALES_SPARK_MASTER"]]
    if os.environ.get("LAMBDA_SALES_ENV"):
        parts += ["--env", os.environ["LAMBDA_SALES_ENV"]]
    return shlex.join([*parts, job, "--quiet"])


default_args = {
    "owner": "lambda-sales",
    # 3 tries more, 5 minutes apart; the variables exist for drills and tests of the failure path.
    "retries": int(os.environ.get("LAMBDA_SALES_AIRFLOW_RETRIES", "3")),
    "retry_delay": timedelta(
        seconds=float(os.environ.get("LAMBDA_SALES_AIRFLOW_RETRY_DELAY_SECONDS", "300"))
    ),
    "retry_exponential_backoff": False,
    "execution_timeout": timedelta(hours=3),
    "on_failure_callback": alert_on_failure,
}

with DAG(
    dag_id=DAG_ID,
    description="lambda-sales nightly batch: ingest, recompute every view, publish",
    # A cron trigger in UTC, no start date, no catch-up: after a scheduler outage only the most
    # recent 02:00 runs (one batch run ingests every night's new data), and a DAG that appears
    # after today's 02:00 runs once at once (Airflow always schedules the latest past point
    # when catchup is off).
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    dagrun_timeout=timedelta(hours=12),
    is_paused_upon_creation=False,
    tags=["lambda-sales"],
) as dag:
    batch = BashOperator(
        task_id="batch",
        bash_command=job_command("batch"),
        cwd=str(PROJECT_HOME),
        # The worker's environment (LAMBDA_SALES__*, SPARK_HOME, JAVA_HOME) reaches the job.
        append_env=True,
    )
    # After the publish: compaction, expiry of what the new generation covers, VACUUM.
    maintain = BashOperator(
        task_id="maintain",
        bash_command=job_command("maintain"),
        cwd=str(PROJECT_HOME),
        append_env=True,
    )
    batch >> maintain
