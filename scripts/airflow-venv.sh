#!/usr/bin/env bash
# A real Apache Airflow in its own virtualenv (Airflow's dependencies clash with the project's,
# and an Airflow deployment never shares the jobs' Python anyway). Pinned by
# jobs/airflow/constraints-3.3.2.txt; installed with uv (from PyPI), which takes seconds where
# pip takes minutes. One virtualenv a machine for each set of constraints and Python, under
# ~/.cache/lambda-sales (LAMBDA_SALES_AIRFLOW_VENV overrides), linked from the clone's
# .cache/airflow-venv: a second clone, or a second run, installs nothing.
#
#   scripts/airflow-venv.sh            # prints the venv's path
set -euo pipefail
cd "$(dirname "$0")/.."
CONSTRAINTS=jobs/airflow/constraints-3.3.2.txt
UV_VERSION=0.13.9
PYTHON="${PYTHON:-python3}"
KEY=$( { cat "$CONSTRAINTS"; "$PYTHON" -c 'import sys; print(sys.executable, sys.version)'; } | md5sum | cut -c1-12)
VENV="${LAMBDA_SALES_AIRFLOW_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lambda-sales/airflow-$KEY}"
STAMP="$VENV/.installed"

install() {
  started=$(date +%s)
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -c "$CONSTRAINTS" "apache-airflow==3.3.2"
  "$VENV/bin/airflow" version >/dev/null
  touch "$STAMP"
  echo "airflow-venv: installed Apache Airflow $("$VENV/bin/airflow" version 2>/dev/null) in $(( $(date +%s) - started ))s" >&2
}

if [ ! -f "$STAMP" ]; then
  mkdir -p "$(dirname "$VENV")"
  # one installer at a time (two clones' test runs may start together); the second finds it done
  exec 9>"$VENV.lock"
  flock 9
  [ -f "$STAMP" ] || install
  flock -u 9
fi
if [ -z "${LAMBDA_SALES_AIRFLOW_VENV:-}" ]; then
  mkdir -p .cache
  [ -L .cache/airflow-venv ] || rm -rf .cache/airflow-venv  # a clone's own, from before
  ln -sfn "$VENV" .cache/airflow-venv
fi
echo "$VENV"
