"""The subcommands of ``lambda-sales``, one function each: ``cmd_<name>(args, config)``.

Each hands the parsed arguments and the loaded configuration to the layer or tool that does
the work and prints what it returns; :mod:`jobs.cli` parses, loads the configuration and
turns errors into one line and an exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sales_core.config import Config, ConfigError, dumps_toml, to_printable
from sales_core.logs import Progress, redirect_jvm_output

EXIT_OK = 0


def _spark(config: Config, app: str):  # type: ignore[no-untyped-def]
    from sales_core.lakehouse import Lakehouse
    from sales_core.object_store import session_s3
    from sales_core.session import get_spark

    redirect_jvm_output(app)
    return get_spark(
        config.spark,
        app_name=f"lambda-sales-{app}",
        s3=session_s3(config),
        warehouse=Lakehouse(config.lakehouse.root).spark_warehouse,
    )


def cmd_config(args: argparse.Namespace, config: Config) -> int:
    print(dumps_toml(to_printable(config)), end="")
    return EXIT_OK


def cmd_batch(args: argparse.Namespace, config: Config) -> int:
    from batch_layer.job import BatchOptions, check_before_spark, run_batch
    from sales_core.runs import format_run_summary

    check_before_spark(config)
    progress = Progress("batch", quiet=args.quiet)
    progress("starting Spark")
    spark = _spark(config, "batch")
    record = run_batch(
        spark, config, options=BatchOptions(args.accept_low_quality), progress=progress
    )
    print(format_run_summary(record))
    return EXIT_OK


def cmd_query(args: argparse.Namespace, config: Config) -> int:
    from sales_core.lakehouse import Lakehouse
    from serving_layer.query import build_query
    from serving_layer.rows import render

    query = build_query(
        args.view,
        args.where,
        date_from=args.date_from,
        date_to=args.date_to,
        limit=args.limit,
        offset=args.offset,
    )
    if args.engine == "fast":
        from sales_core.object_store import delta_rs_table
        from serving_layer.duckdb_engine import FastServing

        root, options = delta_rs_table(config.lakehouse.s3, config.lakehouse.root)
        answer = FastServing(root, storage_options=options).answer(query)
    else:
        from serving_layer.spark_engine import answer as spark_answer

        answer = spark_answer(_spark(config, "query"), Lakehouse(config.lakehouse.root), query)
    sys.stdout.write(render(answer.rows, query.view.columns, args.format))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from serving_layer.console_series import StreamThresholds, trigger_seconds
    from serving_layer.http import serve

    host, port = args.host or config.serving.host, args.port or config.serving.port
    if not args.quiet:
        print(
            f"serving the merged views of {config.lakehouse.root} at http://{host}:{port} (console: /, OpenAPI page: /docs)",
            file=sys.stderr,
            flush=True,
        )
    try:
        trigger = trigger_seconds(config.speed.trigger_interval)
    except ValueError:  # the speed job refuses it with its own message; judge by the default
        trigger = 1.0
    thresholds = StreamThresholds(
        trigger,
        config.serving.stream_stalled_after_seconds,
        config.serving.stream_stopped_after_seconds,
    )
    from sales_core.object_store import delta_rs_table

    root, options = delta_rs_table(config.lakehouse.s3, config.lakehouse.root)
    serve(root, host=host, port=port, thresholds=thresholds, storage_options=options)
    return EXIT_OK


def cmd_sql_views(args: argparse.Namespace, config: Config) -> int:
    from sales_core.lakehouse import Lakehouse
    from serving_layer.sql_views import merged_view_statements, register_merged_views

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


def cmd_generate(args: argparse.Namespace, config: Config) -> int:
    from devtools.generator import GeneratorSpec, generate_records
    from devtools.writers import write_database, write_landing_files

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
        from devtools.writers import publish_records

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


def cmd_speed(args: argparse.Namespace, config: Config) -> int:
    from speed_layer.job import check_trigger, run_speed, stop_on_sigterm
    from speed_layer.kafka_client import ensure_topic

    check_trigger(args.trigger or config.speed.trigger_interval)
    kafka = config.sources.kafka
    ensure_topic(kafka, kafka.dlq_topic, partitions=1)  # Kafka unreachable: one line, before Spark
    stop = stop_on_sigterm()
    if not args.quiet:  # one JSON line a micro-batch
        logging.getLogger("speed_layer.metrics").setLevel(logging.INFO)
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


def cmd_runs(args: argparse.Namespace, config: Config) -> int:
    from sales_core.lakehouse import Lakehouse
    from sales_core.runs import RUN_LIST_COLUMNS, recent_runs
    from serving_layer.rows import render

    runs = recent_runs(
        _spark(config, "runs"), Lakehouse(config.lakehouse.root).pipeline_runs, args.limit
    )
    if runs is None:
        print("no runs recorded yet")
    else:
        sys.stdout.write(render(runs, RUN_LIST_COLUMNS, "table"))
    return EXIT_OK


def _instant(option: str, text: str | None):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option} {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def cmd_quarantine(args: argparse.Namespace, config: Config) -> int:
    from batch_layer.quarantine import (
        LIST_COLUMNS,
        QuarantineFilter,
        list_quarantine,
        replay_quarantine,
        replay_summary,
        show_quarantined,
    )
    from sales_core.lakehouse import Lakehouse
    from sales_core.runs import format_items
    from serving_layer.rows import render

    if args.action == "show" and not args.id:
        raise ValueError("quarantine show needs the record's id (the first column of `list`)")
    if args.action != "show" and args.id:
        raise ValueError(
            f"quarantine {args.action} takes no id (filter with --reason, --source, --since, --until)"
        )
    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, not {args.limit}")
    where = QuarantineFilter(
        tuple(args.reason),
        tuple(args.source),
        _instant("--since", args.since),
        _instant("--until", args.until),
    )
    lakehouse = Lakehouse(config.lakehouse.root)
    if args.action == "list":
        rows = list_quarantine(_spark(config, "quarantine"), lakehouse, where, args.limit)
        if rows is None:
            print("nothing quarantined yet")
        else:
            sys.stdout.write(render(rows, LIST_COLUMNS, args.format))
        return EXIT_OK
    if args.action == "show":
        found = show_quarantined(_spark(config, "quarantine"), lakehouse, args.id)
        if not found:
            raise ValueError(f"no quarantined record has the id {args.id!r}")
        columns = list(found[0])
        if args.format == "table":
            print("\n\n".join(format_items([(c, _text(r[c])) for c in columns]) for r in found))
        else:
            sys.stdout.write(render(found, columns, args.format))
        return EXIT_OK
    progress = Progress("replay", quiet=args.quiet)
    progress("starting Spark")
    record = replay_quarantine(
        _spark(config, "replay"), config, where, dry_run=args.dry_run, progress=progress
    )
    print(format_items(replay_summary(record)))
    return EXIT_OK


def cmd_maintain(args: argparse.Namespace, config: Config) -> int:
    from batch_layer.maintain import maintain, maintain_summary
    from sales_core.runs import format_items

    progress = Progress("maintain", quiet=args.quiet)
    progress("starting Spark")
    record = maintain(_spark(config, "maintain"), config, progress=progress)
    print(format_items(maintain_summary(record)))
    return EXIT_OK


def _text(value: object) -> str:
    from serving_layer.rows import to_text

    return to_text(value)


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    from jobs.demo import run_demo

    return run_demo(
        config,
        events=args.events,
        progress=Progress("demo", quiet=args.quiet),
        spark_factory=lambda config: _spark(config, "demo"),
    )


def cmd_kafka(args: argparse.Namespace, config: Config) -> int:
    from devtools import kafka, kafka_cluster
    from sales_core.errors import PipelineError

    host, _, port = config.sources.kafka.bootstrap_servers.split(",")[0].rpartition(":")
    host, port_number = host or "127.0.0.1", args.port or int(port or 9092)
    single = args.brokers in (None, 1)
    # Without --brokers, stop and status also report a cluster once one has been started.
    cluster = args.brokers == 3 or (
        args.brokers is None
        and args.action != "start"
        and kafka_cluster.DEFAULT_CLUSTER_DIR.is_dir()
    )
    statuses: list[object] = []
    try:
        if args.action == "start":
            if args.brokers == 3:
                ports = kafka_cluster.consecutive_ports(port_number, args.brokers)
                statuses.append(kafka_cluster.start_cluster(ports, host=host))
            else:
                statuses.append(kafka.start(host=host, port=port_number))
        elif args.action == "stop":
            if single:
                statuses.append(kafka.stop())
            if cluster:
                statuses.append(kafka_cluster.stop_cluster())
        else:
            if single:
                statuses.append(kafka.status())
            if cluster:
                statuses.append(kafka_cluster.cluster_status())
    except kafka.ServiceError as exc:
        raise PipelineError(str(exc)) from None
    for status in statuses:
        print(status)
    return EXIT_OK


def cmd_airflow(args: argparse.Namespace, config: Config) -> int:
    from jobs.airflow_rest import AirflowRest

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
