"""What reaches the sink: Kafka records validated, and every event id already taken, through one
de-duplication state.

The streaming query unions two sources and de-duplicates them together on ``event_id`` with
Spark's state store (RocksDB, kept in the checkpoint):

- the Kafka topic, parsed once and validated with the shared rules (judged against the
  micro-batch's timestamp, which Spark logs, so a replay judges alike). A valid record is
  keyed by its ``event_id``; a rejected one by its position, so rejects are never dropped;
- the master dataset as a Delta stream of the rows the **batch layer** inserted
  (*registrations*): each micro-batch reads only the master versions committed since the
  previous one, and their ids enter the state.

So the state holds every id the stream accepted and every id the batch layer inserted, however
long ago, and a micro-batch costs the same whatever the size of the master dataset. What the
state cannot see, the sink settles (:mod:`speed_layer.sink`): a Kafka copy that meets its own
registration in the same micro-batch (the state keeps whichever it meets first), and a batch
insert that commits while the micro-batch runs. Both are batch rows of an epoch newer than the
last one registered, which the master append reads (a bounded read) inside its own Delta
transaction: a batch commit after that read makes the append conflict and run again.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_core.config import KafkaSourceConf
from sales_core.handoff import BATCH_LAYER
from sales_core.rules import validate
from speed_layer.source import BATCH_TIME, kafka_envelopes, read_kafka_stream

# Columns the sink reads besides the validated event.
DEDUP_KEY = "_dedup_key"
REGISTERED = "_registered"  # true on a batch-layer registration row, null on a Kafka record
MESSAGE_TIME = "message_time"  # the Kafka record's timestamp (freshness)
EPOCH = "ingest_run"  # a registration's batch epoch tag (batch-00000042: ordered as text)
_POSITION_KEY_PREFIX = "\u0000"  # never the start of a valid event_id (stripped, non-blank)

# Settings of every speed query. The state store: RocksDB with changelog checkpointing (a
# micro-batch uploads only the keys it changed, not a snapshot of every id). No adaptive query
# execution in the sink: it runs each shuffle stage as a Spark job of its own (13 jobs per
# micro-batch instead of 6), to re-plan partitions a small micro-batch does not need. Delta's
# snapshot of a table's log (rebuilt when a micro-batch reads a table at a new version) in a few
# partitions, not the default 50 tasks for logs of a few thousand actions. (Delta computes
# commit statistics only when forced, `commitStats.force`, off by default.)
SPEED_SETTINGS = {
    "spark.sql.adaptive.enabled": "false",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.streaming.stateStore.providerClass": (
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
    ),
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
}


def kafka_events(kafka_records: DataFrame) -> DataFrame:
    """Kafka records (with ``batch_time``) parsed and validated, keyed for de-duplication.

    ``raw_record`` (the value as received) is kept on rejected records only: the quarantine
    and the dead-letter topic need it, nothing needs it of a valid one, and it is most of a
    row's bytes in the de-duplication shuffle and the micro-batch's cache.
    """
    return (
        kafka_records.withColumn(MESSAGE_TIME, F.col("timestamp"))
        .transform(kafka_envelopes(keep=(BATCH_TIME, MESSAGE_TIME)))
        .transform(validate(now=F.col(BATCH_TIME), keep=(BATCH_TIME, MESSAGE_TIME)))
        .withColumns(
            {
                DEDUP_KEY: dedup_key(),
                "raw_record": F.when(F.col("reject_reason").isNotNull(), F.col("raw_record")),
            }
        )
    )


def dedup_key() -> Column:
    """A valid record's ``event_id``; a rejected record's position (never a duplicate)."""
    position = F.concat(
        F.lit(_POSITION_KEY_PREFIX),
        F.col("source_partition").cast("string"),
        F.lit(":"),
        F.col("source_offset").cast("string"),
    )
    return F.when(F.col("reject_reason").isNull(), F.col("event_id")).otherwise(position)


def batch_registrations(spark: SparkSession, master_path: str) -> DataFrame:
    """The ids the batch layer inserted into the master dataset, as a Delta stream.

    Only added files are read (the master dataset is append-only); the first micro-batch of a
    new checkpoint reads the whole table at once, so every id inserted before it is in the
    state before any Kafka record is judged against it.
    """
    return (
        spark.readStream.format("delta")
        .option("maxFilesPerTrigger", str(2**31 - 1))
        .load(master_path)
        .where(F.col("ingest_layer") == BATCH_LAYER)
        .select(
            F.col("event_id").alias(DEDUP_KEY),
            F.col("event_id"),
            F.col(EPOCH),
            F.lit(True).alias(REGISTERED),
        )
    )


def speed_stream(spark: SparkSession, conf: KafkaSourceConf, master_path: str) -> DataFrame:
    """The speed query's input: Kafka records and batch registrations, de-duplicated together.

    Spark drops every row whose key the state has seen (in an earlier micro-batch, or earlier
    in this one); the first row of a key is kept and its key stored.
    """
    records = read_kafka_stream(spark, conf).transform(kafka_events)
    registrations = batch_registrations(spark, master_path)
    return records.unionByName(registrations, allowMissingColumns=True).dropDuplicates([DEDUP_KEY])
