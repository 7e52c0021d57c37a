"""Probe: does Apache DataFusion Comet run our recompute's shape of query (a Delta scan and an
aggregation of decimals) on the pinned Spark? (Issue 16 item 3; the result is in BENCHMARKS.md.)

    curl -sSfLO https://repo1.maven.org/maven2/org/apache/datafusion/comet-spark-spark4.1_2.13/1.2.0/comet-spark-spark4.1_2.13-1.2.0.jar
    .venv/bin/python bench/comet_probe.py comet-spark-spark4.1_2.13-1.2.0.jar /tmp/comet-probe
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import SparkSession  # noqa: E402

from sales_core.packages import cached_jars  # noqa: E402

JAR, OUT = sys.argv[1], sys.argv[2]
jars = [*(cached_jars() or []), JAR]
b = (
    SparkSession.builder.master("local[2]")
    .appName("comet-probe")
    .config("spark.jars", ",".join(jars))
    .config("spark.driver.extraClassPath", JAR)
    .config(
        "spark.sql.extensions",
        "org.apache.comet.CometSparkSessionExtensions,io.delta.sql.DeltaSparkSessionExtension",
    )
    .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    .config("spark.plugins", "org.apache.spark.CometPlugin")
    .config(
        "spark.shuffle.manager",
        "org.apache.spark.sql.comet.execution.shuffle.CometShuffleManager",
    )
    .config("spark.comet.enabled", "true")
    .config("spark.comet.exec.enabled", "true")
    .config("spark.comet.exec.shuffle.enabled", "true")
    .config("spark.memory.offHeap.enabled", "true")
    .config("spark.memory.offHeap.size", "2g")
    .config("spark.comet.explainFallback.enabled", "true")
)
started = time.time()
spark = b.getOrCreate()
print("session", spark.version, round(time.time() - started, 1), "s")
df = spark.range(1_000_000).selectExpr("id % 100 as k", "cast(id as decimal(12,2)) as amount")
df.write.format("delta").mode("overwrite").save(OUT)
query = spark.read.format("delta").load(OUT).groupBy("k").agg({"amount": "sum"})
query.explain()
print("groups:", query.count())
