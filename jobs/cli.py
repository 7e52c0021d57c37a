"""``lambda-sales``: the one command-line entry point (CONTRACT §5).

It parses the command line, loads the configuration once, applies its ``[logging]`` section
and hands over to the layer or tool the subcommand names; every user error ends as one line
on stderr and an exit status (0 success, 1 failed run or unreachable service, 2 usage or
configuration, 3 the quality gate).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from jobs import commands
from sales_core.config import Config, ConfigError, load_config
from sales_core.logs import configure_logging

log = logging.getLogger("lambda_sales")

EXIT_FAILED, EXIT_USAGE = 1, 2  # and 0 for success, 3 for the quality gate (QualityGateError)


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
    p.set_defaults(handler=commands.cmd_batch)

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
    p.set_defaults(handler=commands.cmd_query)

    p = sub.add_parser("serve", help="the HTTP JSON API over the merged views (no JVM)")
    _common(p)
    p.add_argument("--host", default=None, help="default: serving.host (127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="default: serving.port (8000)")
    p.set_defaults(handler=commands.cmd_serve)

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
    p.set_defaults(handler=commands.cmd_sql_views)

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
    p.set_defaults(handler=commands.cmd_speed)

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
    p.set_defaults(handler=commands.cmd_generate)

    p = sub.add_parser("demo", help="the whole pipeline end to end on the embedded defaults")
    _common(p)
    p.add_argument("--events", type=int, default=20_000)
    p.set_defaults(handler=commands.cmd_demo)

    p = sub.add_parser("runs", help="recent pipeline runs")
    _common(p)
    p.add_argument("--limit", type=int, default=10)
    p.set_defaults(handler=commands.cmd_runs)

    p = sub.add_parser(
        "quarantine",
        help="rejected records: list them, show one, replay them through today's rules",
        description="list: the latest rejected records (newest first); show ID: one in full; "
        "replay: validate them again with the current rules and processing time and ingest "
        "those that pass (exactly once, with their lineage), then publish the views. "
        "The quarantine itself is never changed.",
    )
    _common(p)
    p.add_argument("action", choices=("list", "show", "replay"))
    p.add_argument("id", nargs="?", help="show: the record's quarantine_id (6+ hex digits)")
    p.add_argument(
        "--reason", action="append", default=[], metavar="REASON", help="only this reason (repeat)"
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        choices=("kafka", "file", "jdbc", "http"),
        help="only records from this source (repeat)",
    )
    p.add_argument("--since", default=None, metavar="TIME", help="rejected at or after (ISO 8601)")
    p.add_argument("--until", default=None, metavar="TIME", help="rejected before (ISO 8601)")
    p.add_argument("--limit", type=int, default=20, help="list: at most N records")
    p.add_argument("--format", default="table", choices=("table", "jsonl", "csv"))
    p.add_argument(
        "--dry-run", action="store_true", help="replay: count what would pass, write nothing"
    )
    p.set_defaults(handler=commands.cmd_quarantine)

    p = sub.add_parser(
        "maintain",
        help="compact tables, expire covered speed increments and old generations, VACUUM",
        description="Safe while the stream, the batch and readers run; schedule it after the "
        "nightly batch. VACUUM keeps maintenance.vacuum_retention_hours of versions.",
    )
    _common(p)
    p.set_defaults(handler=commands.cmd_maintain)

    p = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    _common(p)
    p.set_defaults(handler=commands.cmd_config)

    p = sub.add_parser(
        "kafka",
        help="a local Apache Kafka broker (KRaft) for development, or a cluster of three",
        description="--brokers 3 runs three broker+controller nodes on consecutive ports "
        "(replication factor 3, min.insync.replicas 2); point sources.kafka.bootstrap_servers "
        "at the bootstrap list it prints. stop and status act on the single broker and on the "
        "cluster unless --brokers names one.",
    )
    _common(p)
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="default: the port of sources.kafka.bootstrap_servers (the first broker's, for a "
        "cluster: the others take the next ports)",
    )
    p.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=None,
        help="start: 1 (the default) or a cluster of 3; stop/status: default both",
    )
    p.set_defaults(handler=commands.cmd_kafka)

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
    p.set_defaults(handler=commands.cmd_airflow)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging("WARNING", "text")  # until the configuration says otherwise
    handler: Callable[[argparse.Namespace, Config], int] = args.handler
    from sales_core.errors import PipelineError
    from sales_core.errors import one_line as _one_line
    from serving_layer.rows import FilterError

    started = time.monotonic()
    try:
        config = load_config(args.conf, env_name=args.env)
        configure_logging(config.logging.level, config.logging.format)
        log.info(
            "lambda-sales %s started",
            args.command,
            extra={"fields": {"command": args.command, "lakehouse": config.lakehouse.root}},
        )
        status = handler(args, config)
        log.info(
            "lambda-sales %s finished in %.1f s",
            args.command,
            time.monotonic() - started,
            extra={"fields": {"command": args.command, "exit_status": status}},
        )
        return status
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
