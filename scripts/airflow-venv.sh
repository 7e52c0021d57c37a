#!/usr/bin/env bash
# A real Apache Airflow in its own virtualenv, .cache/airflow-venv (Airflow's dependencies
# clash with the project's, and an Airflow deployment never shares the jobs' Python anyway).
# Pinned by jobs/airflow/constraints-3.3.2.txt; installed with uv (from PyPI), which takes
# seconds where pip takes minutes. A second run with the same constraints does nothing.
#
#   scripts/airflow-venv.sh            # prints the venv's path
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LAMBDA_SALES_AIRFLOW_VENV:-.cache/airflow-venv}"
CONSTRAINTS=jobs/airflow/constraints-3.3.2.txt
UV_VERSION=0.13.9
STAMP="$VENV/.installed-$(md5sum "$CONSTRAINTS" | cut -c1-12)"
PYTHON="${PYTHON:-python3}"

if [ ! -f "$STAMP" ]; then
  started=$(date +%s)
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -c "$CONSTRAINTS" "apache-airflow==3.3.2"
  "$VENV/bin/airflow" version >/dev/null
  touch "$STAMP"
  echo "airflow-venv: installed Apache Airflow $("$VENV/bin/airflow" version 2>/dev/null) in $(( $(date +%s) - started ))s" >&2
fi
echo "$VENV"
