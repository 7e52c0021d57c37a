#!/usr/bin/env bash
# Submit a lambda-sales job to any Spark master: local[*] (default), spark://host:7077, yarn,
# k8s://https://host:443. The same jobs the CLI runs, with the pinned JVM packages.
#
#   ./spark-submit.sh [--master URL] [--env local|cluster|databricks] [--deploy-mode client|cluster]
#                     [--spark-conf KEY=VALUE]... [--dry-run] JOB [JOB ARGS...]
#
#   ./spark-submit.sh batch --conf conf/prod.toml
#   ./spark-submit.sh --master spark://10.0.0.5:7077 --env cluster batch
#   ./spark-submit.sh --master yarn --env cluster speed --available-now
#   ./spark-submit.sh --master spark://10.0.0.5:7077 --spark-conf spark.cores.max=8 batch
#
# JOB is any lambda-sales subcommand (batch, speed, query, ...); its arguments are checked with
# the CLI's own parser before Spark starts. Configuration layers as for the CLI; the --env
# layer (default: local for local[*], cluster otherwise) travels in the project archive.
# LAMBDA_SALES__* variables reach the driver: directly in client mode, and in cluster mode
# as spark.yarn.appMasterEnv.* / spark.kubernetes.driverEnv.*.
# Uses $SPARK_HOME/bin/spark-submit when SPARK_HOME is set, else the one pip's pyspark ships.
# Executors run $PYSPARK_PYTHON (default: this checkout's .venv python, right for a cluster
# on this machine or one with the same path on every node).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

MASTER="local[*]"; ENV_NAME="${LAMBDA_SALES_ENV:-}"; DEPLOY_MODE="client"; EXTRA=(); DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --master) MASTER="$2"; shift 2 ;;
    --master=*) MASTER="${1#*=}"; shift ;;
    --env) ENV_NAME="$2"; shift 2 ;;
    --env=*) ENV_NAME="${1#*=}"; shift ;;
    --deploy-mode) DEPLOY_MODE="$2"; shift 2 ;;
    --spark-conf) EXTRA+=(--conf "$2"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "spark-submit.sh: unknown option $1 (options go before the job name; --help for usage)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "spark-submit.sh: name a job (batch, speed, query, ...); --help for usage" >&2; exit 2; }
if [ -z "$ENV_NAME" ]; then
  case "$MASTER" in local*) ENV_NAME=local ;; *) ENV_NAME=cluster ;; esac
fi
case "$ENV_NAME" in local|cluster|databricks) ;; *)
  echo "spark-submit.sh: unknown environment '$ENV_NAME': choose local, cluster or databricks" >&2; exit 2 ;;
esac
case "$DEPLOY_MODE" in client|cluster) ;; *)
  echo "spark-submit.sh: --deploy-mode is client or cluster, got '$DEPLOY_MODE'" >&2; exit 2 ;;
esac
if [ "$DEPLOY_MODE" = cluster ] && [[ "$MASTER" == local* || "$MASTER" == spark://* ]]; then
  echo "spark-submit.sh: Spark runs Python drivers in cluster mode only on YARN and Kubernetes" >&2; exit 2
fi

# The job and its arguments, checked by the CLI's parser now rather than after Spark started.
(cd "$ROOT" && "$PYTHON" -c 'import sys; from jobs.cli import build_parser; build_parser().parse_args(sys.argv[1:])' "$@") || exit 2

if [ -n "${SPARK_HOME:-}" ]; then
  SUBMIT="$SPARK_HOME/bin/spark-submit"
else
  SUBMIT="$(dirname "$PYTHON")/spark-submit"
fi
[ -x "$SUBMIT" ] || { echo "spark-submit.sh: no spark-submit at $SUBMIT (set SPARK_HOME or run make setup)" >&2; exit 1; }

# The project for the executors and a cluster-mode driver: one zip of the packages and conf/.
ARCHIVE="$(cd "$ROOT" && "$PYTHON" -m jobs.bundle "$ROOT/.cache/dist")"

# A lakehouse or landing zone on s3a://: S3A's settings from [lakehouse.s3] and Delta's
# conditional-PUT LogStore (sales_core/object_store.py), with their jars below.
S3_CONF=()
S3_SETTINGS="$(cd "$ROOT" && LAMBDA_SALES_ENV="$ENV_NAME" "$PYTHON" -m sales_core.object_store spark-conf)" || exit 2
while IFS= read -r setting; do
  [ -n "$setting" ] && S3_CONF+=(--conf "$setting")
done <<< "$S3_SETTINGS"
S3_JARS=()
[ ${#S3_CONF[@]} -gt 0 ] && S3_JARS=(--s3)

# The pinned JVM packages (sales_core/packages.py): the cached jars when resolved (shipped to
# the executors by spark-submit), else --packages (resolved by the cluster from Maven Central).
if JARS="$(cd "$ROOT" && "$PYTHON" -m sales_core.packages jars "${S3_JARS[@]}" 2>/dev/null)"; then
  # A cluster's executors get them all through --jars (a local master's are the driver's
  # threads).
  JVM=()
  case "$MASTER" in local*) ;; *) JVM=(--jars "$JARS") ;; esac
  # A driver that runs here (client mode, any master) holds them on its own class path, as the
  # CLI's sessions do: no copy per run, and the class-data archive below fits its class path.
  # The object store's jars go after Spark's own (SPARK_DIST_CLASSPATH, last on the
  # launcher's class path), so that the archive of the pinned jars' class path still fits.
  if [ "$DEPLOY_MODE" = client ]; then
    JVM+=(--driver-class-path "$(cd "$ROOT" && "$PYTHON" -m sales_core.packages class-path)")
    if [ ${#S3_JARS[@]} -gt 0 ]; then
      APPENDED="$(cd "$ROOT" && "$PYTHON" -m sales_core.packages class-path --appended)"
      export SPARK_DIST_CLASSPATH="${SPARK_DIST_CLASSPATH:+$SPARK_DIST_CLASSPATH:}$APPENDED"
    fi
  fi
  # Delta lists a local table's log with the project's LogStore (its jar is among JARS).
  if LOCAL_LOGSTORE="$(cd "$ROOT" && "$PYTHON" -m sales_core.packages local-logstore)"; then
    JVM+=(--conf "$LOCAL_LOGSTORE")
  fi
else
  JVM=(--packages "$(cd "$ROOT" && "$PYTHON" -m sales_core.packages list)")
fi

# A cluster-mode driver gets the LAMBDA_SALES__* variables (secrets among them) through a
# properties file only this user can read, removed when spark-submit returns: never on the
# command line (other users' `ps`, shell history, scheduler logs). Spark's UI and event log
# redact them (spark.redaction.regex below). spark-defaults.conf is still read.
ENV_CONF=()
DRIVER_ENV_PREFIX=""
case "$DEPLOY_MODE:$MASTER" in
  cluster:yarn*) DRIVER_ENV_PREFIX="spark.yarn.appMasterEnv." ;;
  cluster:k8s*) DRIVER_ENV_PREFIX="spark.kubernetes.driverEnv." ;;
esac
if [ -n "$DRIVER_ENV_PREFIX" ]; then
  PROPERTIES="$(umask 077 && mktemp "${TMPDIR:-/tmp}/lambda-sales-submit.XXXXXX")"
  trap 'rm -f "$PROPERTIES"' EXIT
  {
    printf '%s\n' "${DRIVER_ENV_PREFIX}LAMBDA_SALES_ENV=$ENV_NAME"
    while IFS= read -r -d '' entry; do
      # Java properties: backslashes escaped, the value on one line
      printf '%s\n' "${DRIVER_ENV_PREFIX}${entry%%=*}=$(printf '%s' "${entry#*=}" | sed 's/\\/\\\\/g' | tr '\n' ' ')"
    done < <(env -0 | grep -z -E '^LAMBDA_SALES__' || true)
  } > "$PROPERTIES"
  ENV_CONF=(--properties-file "$PROPERTIES" --load-spark-defaults)
fi

export LAMBDA_SALES_ENV="$ENV_NAME"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PYTHON}"
LOG4J="file:$ROOT/conf/log4j2.properties"
DRIVER_OPTIONS="-Dlog4j2.configurationFile=$LOG4J"
# A driver that runs here maps the class-data archive of `make archive` when there is one
# (seconds off its start; sales_core/jvm_archive.py).
if [ "$DEPLOY_MODE" = client ]; then
  DRIVER_OPTIONS="$DRIVER_OPTIONS $(cd "$ROOT" && "$PYTHON" -m sales_core.jvm_archive options 2>/dev/null || true)"
fi
COMMAND=(
  "$SUBMIT"
  --master "$MASTER"
  --deploy-mode "$DEPLOY_MODE"
  --name "lambda-sales-$1"
  --py-files "$ARCHIVE"
  "${JVM[@]}"
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
  --conf spark.sql.session.timeZone=UTC
  --conf "spark.driver.extraJavaOptions=${DRIVER_OPTIONS% }"
  --conf "spark.executorEnv.LAMBDA_SALES_ENV=$ENV_NAME"
  --conf "spark.executorEnv.PYSPARK_PYTHON=$PYSPARK_PYTHON"
  --conf "spark.redaction.regex=(?i)secret|password|token|access[.]key|webhook"
  "${S3_CONF[@]}"
  "${ENV_CONF[@]}"
  "${EXTRA[@]}"
  "$ROOT/jobs/run.py" "$@"
)
if [ "$DRY_RUN" = 1 ]; then
  printf '%q ' "${COMMAND[@]}"; echo
  if [ -n "${APPENDED:-}" ]; then
    echo "appended to the driver's class path (SPARK_DIST_CLASSPATH): $APPENDED"
  fi
  if [ -n "$DRIVER_ENV_PREFIX" ]; then  # the names it passes, never the values
    echo "driver environment (in the properties file): $(cut -d= -f1 "$PROPERTIES" | sed "s/^$DRIVER_ENV_PREFIX//" | tr '\n' ' ')"
  fi
  exit 0
fi
if [ -n "$DRIVER_ENV_PREFIX" ]; then
  "${COMMAND[@]}"  # not exec: the properties file is removed when it returns
else
  exec "${COMMAND[@]}"
fi
