"""``lambda-sales airflow trigger|status|wait``: the nightly DAG through Airflow's REST API.

Airflow 3 serves REST API v2; a caller first exchanges a user name and password for a JWT at
``POST /auth/token`` (the simple auth manager's and FAB's endpoint alike), then sends it as a
bearer token. The calls themselves go through ``apache-airflow-client`` (3.x matches an
Airflow 3 server). Where and as whom come from ``[airflow]`` in the configuration; the
password only from the environment (``LAMBDA_SALES__AIRFLOW__PASSWORD``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sales_core.config import AirflowConf, ConfigError
from sales_core.errors import PipelineError

TERMINAL_STATES = frozenset({"success", "failed"})


class AirflowRunFailed(PipelineError):
    """The DAG run ended in a state other than success (exit status 1)."""


@dataclass(frozen=True)
class DagRunStatus:
    dag_id: str
    run_id: str
    state: str
    start_date: str | None
    end_date: str | None

    def line(self) -> str:
        times = " ".join(
            f"{k}={v}" for k, v in (("started", self.start_date), ("ended", self.end_date)) if v
        )
        return f"{self.dag_id} {self.run_id} {self.state}" + (f" {times}" if times else "")


def _fail(conf: AirflowConf, what: str, exc: BaseException) -> PipelineError:
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    if status in (401, 403):
        return PipelineError(
            f"Airflow at {conf.url} refused to {what} (HTTP {status}): check LAMBDA_SALES__AIRFLOW__USERNAME "
            "and LAMBDA_SALES__AIRFLOW__PASSWORD"
        )
    if status == 404:
        return PipelineError(f"Airflow at {conf.url} could not {what}: not found (HTTP 404)")
    reason = getattr(exc, "reason", None) or exc
    return PipelineError(
        f"cannot {what} at {conf.url}: {str(reason).strip().splitlines()[0] if str(reason).strip() else type(exc).__name__}"
    )


def fetch_token(conf: AirflowConf) -> str:
    """A JWT for ``conf.username`` from ``POST {url}/auth/token``."""
    if not conf.password:
        raise ConfigError("the Airflow password is not set: export LAMBDA_SALES__AIRFLOW__PASSWORD")
    request = urllib.request.Request(
        f"{conf.url.rstrip('/')}/auth/token",
        data=json.dumps({"username": conf.username, "password": conf.password.get()}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=conf.timeout_seconds) as response:
            token = json.loads(response.read()).get("access_token")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _fail(conf, "log in", exc) from None
    if not token:
        raise PipelineError(f"Airflow at {conf.url} answered the login without a token")
    return str(token)


class AirflowRest:
    """The few REST calls the CLI needs, with one token for the session."""

    def __init__(self, conf: AirflowConf) -> None:
        import airflow_client.client as client

        self.conf = conf
        configuration = client.Configuration(
            host=conf.url.rstrip("/"), access_token=fetch_token(conf)
        )
        self._api = client.ApiClient(configuration)

    def __enter__(self) -> AirflowRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self._api.__exit__(None, None, None)

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        from airflow_client.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except (ApiException, HTTPError, OSError) as exc:
            raise _fail(self.conf, what, exc) from None

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> DagRunStatus:
        """Start a run of ``dag_id`` now (unpausing the DAG: a paused DAG's run never starts)."""
        from airflow_client.client.api.dag_api import DAGApi
        from airflow_client.client.api.dag_run_api import DagRunApi
        from airflow_client.client.models.dag_patch_body import DAGPatchBody
        from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

        dag = self._call(f"read DAG {dag_id}", lambda: DAGApi(self._api).get_dag(dag_id))
        if dag.is_paused:
            self._call(
                f"unpause DAG {dag_id}",
                lambda: DAGApi(self._api).patch_dag(dag_id, DAGPatchBody(is_paused=False)),
            )
        body = TriggerDAGRunPostBody(logical_date=None, conf=conf or {})
        run = self._call(
            f"trigger DAG {dag_id}", lambda: DagRunApi(self._api).trigger_dag_run(dag_id, body)
        )
        return _status(run)

    def status(self, dag_id: str, run_id: str | None = None) -> DagRunStatus:
        """The state of ``run_id``, or of the most recent run when none is named."""
        from airflow_client.client.api.dag_run_api import DagRunApi

        api = DagRunApi(self._api)
        if run_id:
            return _status(
                self._call(
                    f"read run {run_id} of DAG {dag_id}", lambda: api.get_dag_run(dag_id, run_id)
                )
            )
        runs = self._call(
            f"list runs of DAG {dag_id}",
            lambda: api.get_dag_runs(dag_id, limit=1, order_by=["-run_after"]),
        )
        if not runs.dag_runs:
            raise PipelineError(f"DAG {dag_id} has no runs yet")
        return _status(runs.dag_runs[0])

    def wait(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout_seconds: float,
        on_change: Callable[[DagRunStatus], None] | None = None,
    ) -> DagRunStatus:
        """Poll until the run ends; raises :class:`AirflowRunFailed` unless it succeeded."""
        deadline = time.monotonic() + timeout_seconds
        last = None
        while True:
            current = self.status(dag_id, run_id)
            if on_change and current.state != last:
                on_change(current)
            last = current.state
            if current.state in TERMINAL_STATES:
                break
            if time.monotonic() >= deadline:
                raise PipelineError(
                    f"DAG run {run_id} still {current.state} after {timeout_seconds:g}s"
                )
            time.sleep(self.conf.poll_seconds)
        if current.state != "success":
            raise AirflowRunFailed(f"DAG run {run_id} of {dag_id} ended {current.state}")
        return current


def _status(run: Any) -> DagRunStatus:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    state = getattr(run.state, "value", run.state)
    return DagRunStatus(
        run.dag_id, run.dag_run_id, str(state), iso(run.start_date), iso(run.end_date)
    )
