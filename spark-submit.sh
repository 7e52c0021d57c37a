#!/usr/bin/env bash
# Submit a lambda-sales job to any Spark master: local[*] (default), spark://host:7077, yarn,
# k8s://https://host:443. The same jobs the CLI runs, with the pinned JVM packages.
#
#   ./spark-submit.sh [--master URL] [--env local|cluster|databricks] [--deploy-mode client|cluster]
#                     [--spark-conf KEY=VALUE]... JOB [JOB ARGS...]
#
#   ./spark-submit.sh batch --conf conf/prod.toml
#   ./spark-submit.sh --master spark://10.0.0.5:7077 --env cluster batch
#   ./spark-submit.sh --master yarn --env cluster speed --available-now
#
# JOB is any lambda-sales subcommand (batch, speed, query, ...). Configuration layers as for the
# CLI; LAMBDA_SALES__* environment variables are forwarded to the driver (client mode) and, in
# cluster mode, as spark.yarn.appMasterEnv.* / spark.kubernetes.driverEnv.*.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

MASTER="local[*]"; ENV_NAME="${LAMBDA_SALES_ENV:-}"; DEPLOY_MODE="client"; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --master) MASTER="$2"; shift 2 ;;
    --env) ENV_NAME="$2"; shift 2 ;;
    --deploy-mode) DEPLOY_MODE="$2"; shift 2 ;;
    --spark-conf) EXTRA+=(--conf "$2"); shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "spark-submit.sh: name a job (batch, speed, query, ...); --help for usage" >&2; exit 2; }
if [ -z "$ENV_NAME" ]; then
  case "$MASTER" in local*) ENV_NAME=local ;; *) ENV_NAME=cluster ;; esac
fi

if [ -n "${SPARK_HOME:-}" ] && [ -x "$SPARK_HOME/bin/spark-submit" ]; then
  SUBMIT="$SPARK_HOME/bin/spark-submit"
else
  SUBMIT="$(dirname "$PYTHON")/spark-submit"
  [ -x "$SUBMIT" ] || { echo "spark-submit.sh: no spark-submit found (set SPARK_HOME or run make setup)" >&2; exit 1; }
fi

# The project for the executors and a cluster-mode driver: one zip of the packages.
DIST="$ROOT/.cache/dist"; mkdir -p "$DIST"
ARCHIVE="$DIST/lambda_sales.zip"
(cd "$ROOT" && rm -f "$ARCHIVE" && "$PYTHON" -m zipfile -c "$ARCHIVE" sales_core batch_layer speed_layer serving_layer jobs conf)

# The pinned JVM packages (sales_core/packages.py): cached jars when resolved, else --packages.
if JARS="$("$PYTHON" -m sales_core.packages jars 2>/dev/null)"; then
  JVM=(--jars "$JARS")
else
  JVM=(--packages "$("$PYTHON" -m sales_core.packages list)")
fi

ENV_CONF=()
while IFS='=' read -r name value; do
  case "$DEPLOY_MODE:$MASTER" in
    cluster:yarn*) ENV_CONF+=(--conf "spark.yarn.appMasterEnv.$name=$value") ;;
    cluster:k8s*) ENV_CONF+=(--conf "spark.kubernetes.driverEnv.$name=$value") ;;
  esac
done < <(env | grep -E '^LAMBDA_SALES(__|_ENV=)' || true)

export LAMBDA_SALES_ENV="$ENV_NAME"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PYTHON}"
exec "$SUBMIT" \
  --master "$MASTER" \
  --deploy-mode "$DEPLOY_MODE" \
  --name "lambda-sales-$1" \
  --py-files "$ARCHIVE" \
  "${JVM[@]}" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --conf spark.sql.session.timeZone=UTC \
  --conf "spark.driver.extraJavaOptions=-Dlog4j2.configurationFile=file:$ROOT/conf/log4j2.properties" \
  --conf spark.executorEnv.LAMBDA_SALES_ENV="$ENV_NAME" \
  "${ENV_CONF[@]}" \
  "${EXTRA[@]}" \
  "$ROOT/jobs/run.py" "$@"
