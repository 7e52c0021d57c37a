"""A Spark standalone cluster on 127.0.0.1 from the pip pyspark distribution.

One master and N 1-core workers, each daemon in its own process group with its log under the
cluster's folder, torn down whatever happens. Used by the cluster test and ``bench/cluster.py``.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.processes import ServiceError, free_port, stop_group


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass(frozen=True)
class Cluster:
    url: str
    """The master's URL (``spark://127.0.0.1:PORT``)."""
    ui: str
    """The master's web UI (its ``/json/`` is the cluster's state)."""
    base: Path
    """Logs (``master.log``, ``worker-N.log``) and each worker's ``work-N`` directory."""

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.ui}/json/", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def alive_workers(self) -> int:
        return sum(1 for w in self.state().get("workers", []) if w.get("state") == "ALIVE")


@contextmanager
def standalone_cluster(
    base: Path,
    *,
    workers: int = 2,
    worker_memory: str = "1g",
    timeout: float = 180,
    environ: dict[str, str] | None = None,
    daemon_java_options: tuple[str, ...] = (),
) -> Iterator[Cluster]:
    """Start a master and ``workers`` 1-core workers; yield once every worker is ALIVE.
    ``environ``: variables the cluster's processes (and so every executor) carry besides this
    process's, as a cluster's machines carry their own (object-store credentials, say).
    ``daemon_java_options``: the master's and workers' own JVM options
    (``SPARK_DAEMON_JAVA_OPTS``; the executors take ``spark.executor.extraJavaOptions``)."""
    home = spark_home()
    spark_class = str(home / "bin" / "spark-class")
    master_port, ui_port = free_port(), free_port()
    cluster = Cluster(f"spark://127.0.0.1:{master_port}", f"http://127.0.0.1:{ui_port}", base)
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(base / "logs"),
        # No REST submission server: its fixed port 6066 would clash with other clusters.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        # Keep the executors' work directories: callers read them to see where tasks ran.
        "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=false",
        "PYSPARK_PYTHON": sys.executable,
        **(environ or {}),
    }
    if daemon_java_options:
        env["SPARK_DAEMON_JAVA_OPTS"] = " ".join(daemon_java_options)
    base.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def launch(name: str, *args: str) -> None:
        with (base / f"{name}.log").open("wb") as log:
            processes[name] = subprocess.Popen(
                [spark_class, *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    try:
        launch(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(master_port),
            "--webui-port",
            str(ui_port),
        )
        for i in range(workers):
            launch(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                worker_memory,
                "--webui-port",
                str(free_port()),
                "--work-dir",
                str(base / f"work-{i}"),
                cluster.url,
            )
        deadline = time.monotonic() + timeout
        alive = 0
        while alive < workers:
            for name, p in processes.items():
                if p.poll() is not None:
                    raise ServiceError(f"the Spark {name} exited; its log is {base / name}.log")
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{alive} of {workers} Spark workers registered in {timeout:.0f} s; logs in {base}"
                )
            time.sleep(1)
            try:
                alive = cluster.alive_workers()
            except (OSError, ValueError, http.client.HTTPException):
                # a master still starting: refused, cut short, or an empty body where its JSON
                # goes (seen once in a CI run: JSONDecodeError at "line 1 column 1")
                alive = 0
        yield cluster
    finally:
        for p in reversed(processes.values()):
            stop_group(p, term_wait=20)
