"""``lambda-sales``: the one command-line entry point (CONTRACT §5)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from sales_core.config import Config, ConfigError, dumps_toml, load_config, to_printable

log = logging.getLogger("lambda_sales")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Progress:
    """Step lines with elapsed time on stderr, for long steps."""

    def __init__(self, job: str, *, quiet: bool = False) -> None:
        self.job, self.quiet, self.started = job, quiet, time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(
                f"[{self.job} {time.monotonic() - self.started:7.1f}s] {message}",
                file=sys.stderr,
                flush=True,
            )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", metavar="PATH", help="TOML file layered over conf/ defaults")
    parser.add_argument(
        "--env",
        choices=("local", "cluster", "databricks"),
        help="conf/ environment (default: $LAMBDA_SALES_ENV or local)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lambda-sales",
        description="Lambda-architecture sales analytics on Spark, Delta Lake and Kafka.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("batch", help="the nightly job: ingest, recompute every batch view, publish")
    _common(p)
    p.add_argument(
        "--accept-low-quality", action="store_true", help="publish even below quality.min_score"
    )
    p.set_defaults(handler=cmd_batch)

    p = sub.add_parser("query", help="rows of a merged view (batch generation + speed increments)")
    _common(p)
    p.add_argument(
        "view", help="sales_daily | sales_hourly | customer_totals | revenue_category_monthly"
    )
    p.add_argument(
        "--where", action="append", default=[], metavar="COL=VALUE", help="filter (repeatable)"
    )
    p.add_argument(
        "--from",
        dest="date_from",
        metavar="DATE",
        help="first UTC day (YYYY-MM-DD) on the view's time key",
    )
    p.add_argument(
        "--to", dest="date_to", metavar="DATE", help="last UTC day (YYYY-MM-DD), included"
    )
    p.add_argument("--format", default="table", choices=("table", "jsonl", "csv"))
    p.add_argument("--limit", default=None, metavar="N", help="at most N rows")
    p.add_argument(
        "--offset",
        default=None,
        metavar="N",
        help="skip N rows first (rows are ordered by the view's keys)",
    )
    p.add_argument(
        "--engine",
        default="fast",
        choices=("fast", "spark"),
        help="fast: delta-rs + DuckDB, no JVM (default); spark: the cluster path",
    )
    p.set_defaults(handler=cmd_query)

    p = sub.add_parser("serve", help="the HTTP JSON API over the merged views (no JVM)")
    _common(p)
    p.add_argument("--host", default=None, help="default: serving.host (127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="default: serving.port (8000)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser(
        "sql-views", help="register the merged views in the Spark catalog (<view>_merged)"
    )
    _common(p)
    p.add_argument(
        "--database",
        metavar="NAME",
        default=None,
        help="schema (or catalog.schema) to create them in",
    )
    p.add_argument("--temporary", action="store_true", help="temporary views (this session only)")
    p.add_argument(
        "--print",
        dest="print_sql",
        action="store_true",
        help="print the SQL instead of running it (no Spark)",
    )
    p.set_defaults(handler=cmd_sql_views)

    p = sub.add_parser(
        "speed", help="the streaming job: Kafka into the master dataset and the speed increments"
    )
    _common(p)
    p.add_argument(
        "--available-now", action="store_true", help="process what is in the topic now, then exit"
    )
    p.add_argument(
        "--trigger",
        metavar="INTERVAL",
        default=None,
        help='micro-batch interval, e.g. "1 second" (default: speed.trigger_interval)',
    )
    p.set_defaults(handler=cmd_speed)

    p = sub.add_parser(
        "generate", help="realistic synthetic sales to Kafka, landing files or the database"
    )
    _common(p)
    p.add_argument("--to", choices=("files", "database", "kafka"), default="files")
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bad-share", type=float, default=0.02, help="share of records to reject (0-1)")
    p.add_argument(
        "--duplicate-share", type=float, default=0.02, help="share of duplicated events (0-1)"
    )
    p.add_argument("--late-share", type=float, default=0.05, help="share of late events (0-1)")
    p.add_argument("--days", type=int, default=7, help="events spread over the last N days")
    p.add_argument(
        "--format", choices=("jsonl", "csv", "parquet"), default="jsonl", help="landing file format"
    )
    p.add_argument("--rows-per-file", type=int, default=50_000)
    p.add_argument(
        "--partitions",
        type=int,
        default=3,
        help="partitions of the Kafka topic, when it is created",
    )
    p.set_defaults(handler=cmd_generate)

    p = sub.add_parser("demo", help="the whole pipeline end to end on the embedded defaults")
    _common(p)
    p.add_argument("--events", type=int, default=20_000)
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("runs", help="recent pipeline runs")
    _common(p)
    p.add_argument("--limit", type=int, default=10)
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    _common(p)
    p.set_defaults(handler=cmd_config)

    p = sub.add_parser(
        "kafka", help="a local single-node Apache Kafka broker (KRaft) for development"
    )
    _common(p)
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="default: the port of sources.kafka.bootstrap_servers",
    )
    p.set_defaults(handler=cmd_kafka)

    p = sub.add_parser(
        "airflow", help="trigger the nightly DAG on Airflow, or follow a run (REST API)"
    )
    _common(p)
    p.add_argument("action", choices=("trigger", "status", "wait"))
    p.add_argument(
        "run_id", nargs="?", help="the DAG run (status: default the latest; wait: required)"
    )
    p.add_argument("--dag-id", default=None, help="default: airflow.dag_id")
    p.add_argument("--wait", action="store_true", help="trigger: wait until the run ends")
    p.add_argument(
        "--timeout",
        type=float,
        default=6 * 3600.0,
        metavar="SECONDS",
        help="wait at most this long",
    )
    p.set_defaults(handler=cmd_airflow)
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.conf, env_name=args.env)


def _spark(config: Config, app: str):  # type: ignore[no-untyped-def]
    from sales_core.session import get_spark

    _jvm_output_to_log(app)
    return get_spark(config.spark, app_name=f"lambda-sales-{app}")


def _jvm_output_to_log(app: str) -> None:
    """Send the Spark JVM's own stderr (log4j lines, JVM warnings) to a log file.

    The JVM inherits file descriptor 2, so it is pointed at the log before Spark starts;
    Python keeps the terminal, so progress and the one-line errors stay readable. Not under
    spark-submit (the JVM is already running) or with ``LAMBDA_SALES_SPARK_LOG=stderr``.
    """
    if "PYSPARK_GATEWAY_PORT" in os.environ or os.environ.get("LAMBDA_SALES_SPARK_LOG") == "stderr":
        return
    from pathlib import Path

    log_dir = Path(
        os.environ.get("LAMBDA_SALES_LOG_DIR", Path.home() / ".cache" / "lambda-sales" / "logs")
    )
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / f"spark-{app}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return  # no place for a log: Spark's lines stay on stderr
    sys.stderr.flush()
    terminal = os.dup(2)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = os.fdopen(terminal, "w", buffering=1)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    os.environ["LAMBDA_SALES_SPARK_LOG_FILE"] = str(path)


def cmd_config(args: argparse.Namespace) -> int:
    print(dumps_toml(to_printable(_config(args))), end="")
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    from batch_layer.job import BatchOptions, run_batch

    config = _config(args)
    progress = Progress("batch", quiet=args.quiet)
    progress("starting Spark")
    spark = _spark(config, "batch")
    record = run_batch(
        spark, config, options=BatchOptions(args.accept_low_quality), progress=progress
    )
    print(format_run_summary(record))
    return EXIT_OK


def format_run_summary(record: Any) -> str:
    from serving_layer.rows import render

    details = record.details or {}
    rows = [
        {"item": "run", "value": record.run_id},
        {"item": "status", "value": record.status},
        {"item": "records read", "value": record.records_read},
        {"item": "  valid (new events)", "value": record.valid},
        {"item": "  duplicates", "value": record.duplicates},
        {"item": "  quarantined", "value": record.quarantined},
        {
            "item": "quality score",
            "value": f"{record.quality_score:.2f}" if record.quality_score is not None else "",
        },
        {"item": "generation published", "value": record.generation},
        {"item": "events in views", "value": details.get("events_in_views")},
        {
            "item": "duration",
            "value": f"{(record.ended_at - record.started_at).total_seconds():.1f}s"
            if record.ended_at
            else "",
        },
    ]
    for reason, n in sorted((details.get("rejected_by_reason") or {}).items()):
        rows.append({"item": f"  rejected {reason}", "value": n})
    return (
        render(
            [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows],
            ["item", "value"],
            "table",
        )
        .rsplit("(", 1)[0]
        .rstrip()
    )


def cmd_query(args: argparse.Namespace) -> int:
    from sales_core.lakehouse import Lakehouse
    from serving_layer.query import build_query
    from serving_layer.rows import render

    config = _config(args)
    query = build_query(
        args.view,
        args.where,
        date_from=args.date_from,
        date_to=args.date_to,
        limit=args.limit,
        offset=args.offset,
    )
    if args.engine == "fast":
        from serving_layer.fast import FastServing

        answer = FastServing(config.lakehouse.root).answer(query)
    else:
        from serving_layer.merge import answer as spark_answer

        answer = spark_answer(_spark(config, "query"), Lakehouse(config.lakehouse.root), query)
    sys.stdout.write(render(answer.rows, query.view.columns, args.format))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from serving_layer.http import serve

    config = _config(args)
    host, port = args.host or config.serving.host, args.port or config.serving.port
    if not args.quiet:
        print(
            f"serving the merged views of {config.lakehouse.root} at http://{host}:{port} (OpenAPI page: /docs)",
            file=sys.stderr,
            flush=True,
        )
    serve(config.lakehouse.root, host=host, port=port)
    return EXIT_OK


def cmd_sql_views(args: argparse.Namespace) -> int:
    from sales_core.lakehouse import Lakehouse
    from serving_layer.sql_views import merged_view_statements, register_merged_views

    config = _config(args)
    lakehouse = Lakehouse(config.lakehouse.root)
    if args.print_sql:
        statements = merged_view_statements(
            lakehouse, database=args.database, temporary=args.temporary
        )
        print(";\n\n".join(statements) + ";")
        return EXIT_OK
    names = register_merged_views(
        _spark(config, "sql-views"), lakehouse, database=args.database, temporary=args.temporary
    )
    print("registered " + ", ".join(names))
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from sales_core.generator import (
        GeneratorSpec,
        generate_records,
        write_database,
        write_landing_files,
    )

    config = _config(args)
    spec = GeneratorSpec(
        events=args.events,
        seed=args.seed,
        bad_share=args.bad_share,
        duplicate_share=args.duplicate_share,
        late_share=args.late_share,
        days=args.days,
    )
    records = generate_records(spec)
    if args.to == "files":
        paths = write_landing_files(
            records, config.sources.files.landing, fmt=args.format, rows_per_file=args.rows_per_file
        )
        print(
            f"wrote {spec.events} records to {len(paths)} {args.format} file(s) in {config.sources.files.landing}"
        )
    elif args.to == "kafka":
        from speed_layer.kafka_client import publish_records

        if args.partitions < 1:
            raise ValueError(f"--partitions must be at least 1, got {args.partitions}")
        kafka = config.sources.kafka
        sent = publish_records(
            records,
            kafka,
            partitions=args.partitions,
            progress=Progress("generate", quiet=args.quiet),
        )
        print(f"published {sent} records to Kafka topic {kafka.topic} at {kafka.bootstrap_servers}")
    else:
        from batch_layer.sources.jdbc import JdbcSource

        jdbc = config.sources.jdbc
        JdbcSource.from_conf(jdbc)  # validates table and column names
        if not jdbc.password:
            raise ConfigError(
                "the database password is not set: export LAMBDA_SALES__SOURCES__JDBC__PASSWORD"
            )
        inserted, skipped = write_database(
            records, url=jdbc.url, user=jdbc.user, password=jdbc.password.get(), table=jdbc.table
        )
        print(
            f"inserted {inserted} rows into {jdbc.table}"
            + (
                f" ({skipped} records not representable in a typed table skipped)"
                if skipped
                else ""
            )
        )
    return EXIT_OK


def cmd_speed(args: argparse.Namespace) -> int:
    from speed_layer.job import check_trigger, run_speed, stop_on_sigterm

    config = _config(args)
    check_trigger(args.trigger or config.speed.trigger_interval)
    stop = stop_on_sigterm()
    if not args.quiet:
        logging.getLogger("speed_layer.metrics").setLevel(
            logging.INFO
        )  # one JSON line a micro-batch
    progress = Progress("speed", quiet=args.quiet)
    progress("starting Spark")
    spark = _spark(config, "speed")
    run = run_speed(
        spark,
        config,
        available_now=args.available_now,
        trigger=args.trigger,
        stop=stop,
        progress=progress,
    )
    print(run.summary())
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from pyspark.sql import functions as F

    from sales_core.lakehouse import Lakehouse
    from serving_layer.rows import render

    config = _config(args)
    spark = _spark(config, "runs")
    path = Lakehouse(config.lakehouse.root).pipeline_runs
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        print("no runs recorded yet")
        return EXIT_OK
    columns = [
        "run_id",
        "job",
        "status",
        "started_at",
        "records_read",
        "valid",
        "duplicates",
        "quarantined",
        "quality_score",
        "generation",
    ]
    rows = (
        spark.read.format("delta")
        .load(path)
        .orderBy(F.col("started_at").desc())
        .limit(args.limit)
        .select(*columns)
        .collect()
    )
    sys.stdout.write(render([r.asDict() for r in rows], columns, "table"))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from jobs.demo import run_demo

    return run_demo(
        _config(args),
        events=args.events,
        progress=Progress("demo", quiet=args.quiet),
        spark_factory=lambda config: _spark(config, "demo"),
    )


def cmd_kafka(args: argparse.Namespace) -> int:
    from sales_core.devservices import kafka
    from sales_core.errors import PipelineError

    config = _config(args)
    host, _, port = config.sources.kafka.bootstrap_servers.split(",")[0].rpartition(":")
    port_number = args.port or int(port or 9092)
    try:
        if args.action == "start":
            status = kafka.start(host=host or "127.0.0.1", port=port_number)
        elif args.action == "stop":
            status = kafka.stop()
        else:
            status = kafka.status()
    except kafka.ServiceError as exc:
        raise PipelineError(str(exc)) from None
    print(status)
    return EXIT_OK


def cmd_airflow(args: argparse.Namespace) -> int:
    from jobs.airflow_rest import AirflowRest

    config = _config(args)
    dag_id = args.dag_id or config.airflow.dag_id
    if args.action == "wait" and not args.run_id:
        raise ValueError("airflow wait needs the run id (printed by `airflow trigger`)")
    progress = Progress("airflow", quiet=args.quiet)
    with AirflowRest(config.airflow) as airflow:
        if args.action == "status":
            print(airflow.status(dag_id, args.run_id).line())
            return EXIT_OK
        if args.action == "trigger":
            run = airflow.trigger(dag_id)
            print(run.run_id, flush=True)
            if not args.wait:
                return EXIT_OK
            run_id = run.run_id
        else:
            run_id = args.run_id
        final = airflow.wait(
            dag_id,
            run_id,
            timeout_seconds=args.timeout,
            on_change=lambda s: progress(f"{s.run_id}: {s.state}"),
        )
        print(final.line())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sales_core.logs import configure_logging

    configure_logging(os.environ.get("LAMBDA_SALES_LOG_LEVEL", "WARNING"), "text")
    handler: Callable[[argparse.Namespace], int] = args.handler
    from sales_core.errors import PipelineError
    from sales_core.errors import one_line as _one_line
    from serving_layer.rows import FilterError

    try:
        return handler(args)
    except (ConfigError, FilterError) as exc:
        print(f"lambda-sales {args.command}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except PipelineError as exc:
        print(f"lambda-sales {args.command}: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:
        print(f"lambda-sales {args.command}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"lambda-sales {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # unexpected: still one line, the traceback on request
        if os.environ.get("LAMBDA_SALES_DEBUG"):
            raise
        print(
            f"lambda-sales {args.command}: failed: {_one_line(exc)} (set LAMBDA_SALES_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
