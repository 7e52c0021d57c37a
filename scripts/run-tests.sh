#!/usr/bin/env bash
# The README's test command (`make test`) ends here: after `make setup` has built .venv and
# cached the JVM packages, install the services the tests need (PostgreSQL, and Chromium with
# its WebDriver for the console's browser tests, from Debian's packages in one apt-get run;
# Apache Kafka from Maven Central, Apache Airflow from PyPI into its own
# virtualenv), then run the whole suite. The test fixtures
# start and stop their own PostgreSQL and Kafka instances on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

# Set-up steps that do not depend on one another run side by side (most of their time is
# downloads and a JVM's start): each one's output goes to a log, shown only if it fails.
LOGS=.cache/setup-logs
mkdir -p "$LOGS"
names=()
pids=()
step() {  # step NAME COMMAND...: run in the background, output to $LOGS/NAME.log
  local name=$1
  shift
  ("$@") >"$LOGS/$name.log" 2>&1 &
  names+=("$name")
  pids+=($!)
}
services() {
  $BIN/python - <<'PY'
from devtools import browser, kafka_files, postgres_cluster
postgres_cluster.ensure_installed(also=browser.missing_packages())
browser.ensure_installed()
kafka_files.ensure_libs()
PY
}
lint() {
  $BIN/ruff check . || { echo "ruff found problems"; return 1; }
  $BIN/ruff format --check . || { echo "ruff format would change the files above: run ruff format"; return 1; }
  $BIN/mypy || { echo "mypy found problems"; return 1; }
  $BIN/lint-imports --no-logo || { echo "lint-imports found an import across layers"; return 1; }
}
started=$(date +%s)
echo "== set-up, side by side: PostgreSQL server and Chromium (Debian), Apache Kafka (Maven Central);"
echo "   Apache Airflow in its own virtualenv (.cache/airflow-venv); the JVM class archive"
echo "   (.cache/jvm); MinIO built with Go (.cache/minio); lint, types and the layers contract"
step services services
step airflow bash scripts/airflow-venv.sh
step jvm-archive "$BIN/python" -m devtools.jvm_archive build
# MinIO for the object-store tests, built with Go into .cache/minio (once; minutes of CPU).
step minio "$BIN/python" -c "from devtools import object_store; object_store.ensure_installed()"
step lint lint
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "-- ${names[$i]} failed ($LOGS/${names[$i]}.log):"
    tail -n 40 "$LOGS/${names[$i]}.log"
    failed=1
  fi
done
[ "$failed" -eq 0 ] || exit 1
echo "   done in $(( $(date +%s) - started )) s"

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
