"""Command line: ``python -m devtools {kafka|postgres} {start|stop|status}``.

Prints the service's one-line status on stdout and exits 0; on failure prints one line
on stderr and exits 1. Progress messages go to stderr (``--quiet`` hides them).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from devtools.processes import ServiceError

ACTIONS = ("start", "stop", "status")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the dev-services CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools",
        description="Run the local Apache Kafka broker and PostgreSQL server for development.",
    )
    services = parser.add_subparsers(dest="service", required=True, metavar="SERVICE")
    for name, help_text in (
        ("kafka", "single-node Apache Kafka broker (KRaft), default 127.0.0.1:9092"),
        ("postgres", "PostgreSQL server, default 127.0.0.1:5432 (or $LAMBDA_SALES_PG_PORT)"),
    ):
        sub = services.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("action", choices=ACTIONS)
        sub.add_argument("--port", type=int, default=None, help="TCP port to listen on")
        sub.add_argument("--data-dir", default=None, help="where the service keeps its data")
        sub.add_argument("-q", "--quiet", action="store_true", help="only print the result")
    return parser


def run(service: str, action: str, port: int | None, data_dir: str | None) -> str:
    """Perform ``action`` on ``service`` and return its one-line status.

    Raises:
        ServiceError: If the action fails.
    """
    if service == "kafka":
        from devtools import kafka

        if action == "start":
            result = kafka.start(port=port or kafka.DEFAULT_PORT, data_dir=data_dir)
        elif action == "stop":
            result = kafka.stop(data_dir=data_dir)
        else:
            result = kafka.status(data_dir=data_dir)
        return str(result)

    from devtools import postgres

    if action == "start":
        return str(postgres.start(port=port, data_dir=data_dir))
    if action == "stop":
        return str(postgres.stop(data_dir=data_dir, port=port))
    return str(postgres.status(data_dir=data_dir, port=port))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)  # kafka-python's client chatter
    try:
        print(run(args.service, args.action, args.port, args.data_dir))
    except (ServiceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
