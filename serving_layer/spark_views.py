"""Views read through Spark (the cluster path): the current published generation."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_core.errors import PipelineError
from sales_core.handoff import current_generation, read_batch_view
from sales_core.lakehouse import Lakehouse
from sales_core.views import get_view


def batch_view(
    spark: SparkSession, lakehouse: Lakehouse, view_name: str, filters: dict[str, Any] | None = None
) -> tuple[DataFrame, int]:
    """The current generation of a batch view, filtered; returns (rows, generation)."""
    view = get_view(view_name)
    generation = current_generation(spark, lakehouse)
    if generation is None:
        raise PipelineError("no batch views published yet: run `lambda-sales batch` first")
    rows = read_batch_view(spark, lakehouse, view.name, generation.generation)
    for column, value in (filters or {}).items():
        rows = rows.where(F.col(column) == F.lit(value))
    return rows.orderBy(*view.key_names), generation.generation
