"""The script that ``spark-submit``, Databricks and Airflow run: ``run.py JOB [ARGS...]``.

A thin entry point: it puts the project on ``sys.path`` (when run from a checkout) and hands
over to the same CLI a laptop uses, so every scheduler runs exactly the same code.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[1]
    if (root / "sales_core").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from jobs.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
