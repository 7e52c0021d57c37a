"""Shared fixtures: one SparkSession for the whole run, built by the project's own factory."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)  # type: ignore[attr-defined]
warnings.filterwarnings("ignore", category=DeprecationWarning, module="kafka")
warnings.filterwarnings("ignore", category=FutureWarning, module="pyspark")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def spark() -> Iterator:
    from sales_core.config import load_config
    from sales_core.session import get_spark

    config = load_config(
        environ={"LAMBDA_SALES__SPARK__MASTER": "local[2]", "LAMBDA_SALES__SPARK__SHUFFLE_PARTITIONS": "2"}
    )
    session = get_spark(config.spark, app_name="lambda-sales-tests")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
