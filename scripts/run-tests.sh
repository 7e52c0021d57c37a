#!/usr/bin/env bash
# The README's test command (`make test`) ends here. It sets up everything the tests need,
# side by side: the project's virtualenv and the cached JVM packages (`make setup`), then the
# JVM class archive; from the start, beside them, the services (PostgreSQL, and
# Chromium with its WebDriver for the console's browser tests, from Debian's packages in one
# apt-get run; Apache Kafka from Maven Central), Apache Airflow from PyPI into its own
# virtualenv, and MinIO built with Go (these need only the system's Python). Then it runs the
# whole suite. The test fixtures start and stop their own PostgreSQL and Kafka instances on
# free ports. The lint runs beside the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
# Each module's bytecode written once (into __pycache__, which git ignores), not compiled from
# source again by every process: with PYTHONDONTWRITEBYTECODE set (as on our CI machines) and
# uv's installs holding no bytecode, every one of the suite's ~150 CLI and Airflow processes
# compiled all it imported: a fast-path query's process 4.1 -> 1.3 s of CPU, a batch run's
# Python 5.7 -> 3 s, `airflow version` 7.0 -> 3.2 s.
unset PYTHONDONTWRITEBYTECODE

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
  python3 - <<'PY'
from devtools import browser, kafka_files, postgres_cluster
postgres_cluster.ensure_installed(also=browser.missing_packages())
browser.ensure_installed()
kafka_files.ensure_libs()
PY
}
lint() {
  renice -n 10 -p "$BASHPID" >/dev/null 2>&1 || true  # beside the class archive: see below
  $BIN/ruff check . || { echo "ruff found problems"; return 1; }
  $BIN/ruff format --check . || { echo "ruff format would change the files above: run ruff format"; return 1; }
  # mypy's cache once a machine (it checks each file against its hash): 21 -> 1 CPU-s a clone
  $BIN/mypy --cache-dir "$HOME/.cache/lambda-sales/mypy" || { echo "mypy found problems"; return 1; }
  $BIN/lint-imports --no-logo || { echo "lint-imports found an import across layers"; return 1; }
}
timed() {  # timed NAME COMMAND...: the command, then how long it took
  local name=$1 began
  shift
  began=$(date +%s)
  "$@" && echo "-- $name: $(( $(date +%s) - began )) s"
}
started=$(date +%s)
echo "== set-up, side by side: PostgreSQL server and Chromium (Debian), Apache Kafka (Maven Central);"
echo "   Apache Airflow in its own virtualenv (once a machine); MinIO built with Go"
echo "   (.cache/minio); the project's virtualenv and JVM packages (make setup), then the JVM"
echo "   class archive (once a machine: ~/.cache/lambda-sales/jvm); lint, types and the layers"
echo "   contract beside the tests"
# Steps that need only the system's Python start first. MinIO's build (minutes of CPU, on a
# machine with nothing cached) is not waited for: the tests start beside it, and the first test
# that needs the object store waits for it (devtools.object_store.ensure_installed holds a lock
# while it builds). It runs niced throughout: the set-up steps the tests wait for and then the
# tests have the CPU first, and the build takes what they leave (on an empty home, 2026-12-05:
# 862 s, done 12 minutes before the first module that needs the store). Raising it again once
# the tests start would not work: Linux keeps a nice value per thread, `renice -p` changes the
# main thread's alone, and go starts its compilers from any of its threads.
(timed minio nice -n 15 python3 -c "from devtools import object_store; object_store.ensure_installed()") \
  >"$LOGS/minio.log" 2>&1 &
minio_pid=$!
# `make setup` and then the class archive (recorded once a machine) are the longest path to
# the tests: Airflow's virtualenv (once a machine too), which the tests need later, runs niced
# beside them. The lint (which renices itself) is not waited for: it runs beside the tests and
# its outcome is reported after theirs.
step services timed services services
step airflow timed airflow nice -n 10 bash scripts/airflow-venv.sh
timed "make setup" make --no-print-directory setup || exit 1
step jvm-archive timed jvm-archive "$BIN/python" -m devtools.jvm_archive build
(timed lint lint) >"$LOGS/lint.log" 2>&1 &
lint_pid=$!
reported() {  # reported NAME PID: wait for a step; its seconds, or its log's end if it failed
  if wait "$2"; then
    tail -n 1 "$LOGS/$1.log"
  else
    echo "-- $1 failed ($LOGS/$1.log):"
    tail -n 40 "$LOGS/$1.log"
    return 1
  fi
}
failed=0
for i in "${!pids[@]}"; do
  reported "${names[$i]}" "${pids[$i]}" || failed=1
done
[ "$failed" -eq 0 ] || exit 1
# uv keeps each build of pyspark's source distribution (0.5-1.4 GB, one per install): 36 fresh
# clones had left 33 GB and filled the disk mid-run (PostgreSQL's initdb failed). Once both
# virtualenvs are installed nothing uses them.
[ -x "$BIN/uv" ] && "$BIN/uv" cache prune --quiet || true
echo "   done in $(( $(date +%s) - started )) s (MinIO's build goes on beside the tests)"

cpu_ticks() {  # busy, total and stolen ticks of all CPUs so far (/proc/stat's first line)
  awk '/^cpu /{ print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9, $9 }' /proc/stat
}
cpu_shares() {  # cpu_shares "BUSY TOTAL STEAL" "BUSY TOTAL STEAL": the busy share between two
  # readings, and the share the hypervisor gave to other machines (steal: a busy host)
  echo "$1 $2" | awk '{ d = $5 - $2; print (d > 0 ? int(100 * ($4 - $1) / d) : 0) "% (stolen " (d > 0 ? int(100 * ($6 - $3) / d) : 0) "%)" }'
}
echo "== tests"
set +e
# Two workers, a test module each at a time (module fixtures stay in one process): a
# single session leaves about a third of the two cores idle (py4j round trips, driver-side
# planning, waits for brokers and JVM starts). PYTEST_WORKERS=0 runs in one process.
# --no-loadscope-reorder: modules in tests/conftest.py's order (longest first), not by test count
# (xdist's default puts the big unit modules first and the 10-minute fault tests last).
cpu_before=$(cpu_ticks)
tests_began=$(date +%s)
# Each module's CPU seconds, summed over the test process and the processes it started
# (tests/cpu_report.py), printed after pytest's durations.
export LAMBDA_SALES_TEST_CPU="$PWD/.cache/test-cpu.jsonl"
mkdir -p .cache && rm -f "$LAMBDA_SALES_TEST_CPU"
$BIN/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder --durations=60 "$@"
rc=$?
echo "-- tests: $(( $(date +%s) - tests_began )) s; the CPUs were busy $(cpu_shares "$cpu_before" "$(cpu_ticks)") of that time"
set -e
reported minio "$minio_pid" || { [ "$rc" -ne 0 ] || rc=1; }
reported lint "$lint_pid" || { [ "$rc" -ne 0 ] || rc=1; }
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): treated as success"
  exit 0
fi
exit "$rc"
