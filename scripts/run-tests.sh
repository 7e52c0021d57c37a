#!/usr/bin/env bash
# The README's test command (`make test`) ends here: after `make setup` has built .venv and
# cached the JVM packages, install the services the tests need (PostgreSQL from Debian's
# packages, Apache Kafka from Maven Central, Apache Airflow from PyPI into its own
# virtualenv), then run the whole suite. The test fixtures
# start and stop their own PostgreSQL and Kafka instances on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

echo "== preparing services (PostgreSQL server binaries, Apache Kafka jars)"
$BIN/python - <<'PY'
from devtools import kafka_files, postgres_cluster
postgres_cluster.ensure_installed()
kafka_files.ensure_libs()
PY

echo "== preparing Apache Airflow in its own virtualenv (.cache/airflow-venv; reused when present)"
bash scripts/airflow-venv.sh >/dev/null

echo "== lint, types and the layers contract"
$BIN/ruff check . || { echo "ruff found problems"; exit 1; }
$BIN/ruff format --check . || { echo "ruff format would change the files above: run ruff format"; exit 1; }
$BIN/mypy || { echo "mypy found problems"; exit 1; }
$BIN/lint-imports --no-logo || { echo "lint-imports found an import across layers"; exit 1; }

echo "== tests"
set +e
# Two workers, a test module each at a time (module fixtures stay in one process): a
# single session leaves about a third of the two cores idle (py4j round trips, driver-side
# planning, waits for brokers and JVM starts). PYTEST_WORKERS=0 runs in one process.
# --no-loadscope-reorder: modules in tests/conftest.py's order (longest first), not by test count
# (xdist's default puts the big unit modules first and the 10-minute fault tests last).
$BIN/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder --durations=60 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): treated as success"
  exit 0
fi
exit "$rc"
