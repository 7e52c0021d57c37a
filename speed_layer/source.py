"""Reading the sales topic with Spark, and turning Kafka records into the shared envelope.

Kafka carries bytes. The contract wants one UTF-8 JSON object per value, so a value that is
null, empty, not UTF-8 or not a JSON object is ``malformed``. The value is cast to a string
byte for byte (Spark's binary-to-string cast does not re-encode), parsed by the shared
:func:`sales_core.events.parse_json_records`, and a value that is not valid UTF-8 is then
flagged ``malformed`` whatever the parser made of it. Keeping the exact bytes in
``raw_record`` lets the dead-letter topic receive the original value; tables store a value
that is not UTF-8 as ``base64:<bytes>`` (:func:`storable_text`).
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_core.config import KafkaSourceConf
from sales_core.events import ENVELOPE_COLUMNS, EVENT_FIELDS, parse_json_records

# The Kafka source's columns the speed layer uses, plus the micro-batch timestamp.
KAFKA_COLUMNS: tuple[str, ...] = ("key", "value", "topic", "partition", "offset", "timestamp")
BATCH_TIME = "batch_time"
NOT_UTF8_PREFIX = "base64:"

# Spark asks for the latest offsets with a Kafka admin client, whose listOffsets waits for
# the leader it first looked up until the call times out (default.api.timeout.ms, 60 s by
# default), even after the controller has elected another one. A cluster that loses a broker
# would stall the stream a minute; with 15 s, Spark's next try (fetchOffset.numRetries) finds
# the new leader. The admin client refuses a request.timeout.ms above the call's deadline.
CLIENT_TIMEOUTS = {"kafka.default.api.timeout.ms": "15000", "kafka.request.timeout.ms": "15000"}

_SASL_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def spark_kafka_options(conf: KafkaSourceConf) -> dict[str, str]:
    """Connection options for Spark's Kafka source and sink (``kafka.``-prefixed).

    The SASL password goes into the JAAS configuration only; never log these options.
    """
    options = {
        "kafka.bootstrap.servers": conf.bootstrap_servers,
        "kafka.security.protocol": conf.security_protocol,
    }
    if conf.security_protocol.upper().startswith("SASL"):
        mechanism = conf.sasl_mechanism.upper() or "PLAIN"
        module = _SASL_LOGIN_MODULES.get(mechanism)
        if module is None:
            raise ValueError(
                f"unsupported sources.kafka.sasl_mechanism '{conf.sasl_mechanism}': "
                f"choose one of {', '.join(_SASL_LOGIN_MODULES)}"
            )
        username = conf.sasl_username.replace('"', '\\"')
        password = conf.sasl_password.get().replace('"', '\\"')
        options["kafka.sasl.mechanism"] = mechanism
        options["kafka.sasl.jaas.config"] = (
            f'{module} required username="{username}" password="{password}";'
        )
    return options


def read_kafka_stream(spark: SparkSession, conf: KafkaSourceConf) -> DataFrame:
    """The sales topic as a streaming DataFrame of :data:`KAFKA_COLUMNS` plus ``batch_time``.

    ``failOnDataLoss`` is on: offsets that vanished (retention, a recreated topic) stop the
    stream loudly instead of skipping events silently. The Kafka clients' calls time out
    after 15 s (:data:`CLIENT_TIMEOUTS`), so the loss of a partition's leader pauses the
    stream that long, not a minute.
    """
    reader = (
        spark.readStream.format("kafka")
        .options(**spark_kafka_options(conf))
        .options(**CLIENT_TIMEOUTS)
        .option("subscribe", conf.topic)
        .option("startingOffsets", conf.starting_offsets)
        .option("failOnDataLoss", "true")
    )
    if conf.max_offsets_per_trigger > 0:
        reader = reader.option("maxOffsetsPerTrigger", str(conf.max_offsets_per_trigger))
    return reader.load().transform(with_batch_time)


def with_batch_time(kafka_records: DataFrame) -> DataFrame:
    """Keep :data:`KAFKA_COLUMNS` and add ``batch_time``.

    In a streaming query ``current_timestamp()`` is the micro-batch's timestamp, which Spark
    stores in its offset log: a replayed micro-batch gets the same value, so validation
    (``future_event_time``) judges a replay exactly as the first attempt.
    """
    return kafka_records.select(*KAFKA_COLUMNS, F.current_timestamp().alias(BATCH_TIME))


def kafka_envelopes(keep: tuple[str, ...] = ()) -> Callable[[DataFrame], DataFrame]:
    """Kafka records (key, value, topic, partition, offset) as envelopes of the shared parser,
    plus the columns named in ``keep`` unchanged.

    ``source_key`` and ``raw_record`` hold the key's and the value's bytes unchanged (see the
    module docstring); a value that is not valid UTF-8 is ``malformed``.
    """

    def transform(kafka_records: DataFrame) -> DataFrame:
        as_text = kafka_records.select(
            F.lit("kafka").alias("source"),
            F.col("topic").alias("source_name"),
            F.col("partition").cast("int").alias("source_partition"),
            F.col("offset").cast("long").alias("source_offset"),
            F.col("key").cast("string").alias("source_key"),
            F.col("value").cast("string").alias("value"),
            *[F.col(c) for c in keep],
        )
        envelopes = as_text.transform(parse_json_records("value", keep=keep)).withColumn(
            "_malformed",
            F.col("malformed") | ~F.coalesce(F.is_valid_utf8(F.col("raw_record")), F.lit(True)),
        )
        malformed = F.col("_malformed")  # evaluated once, not once per field
        return envelopes.select(
            *[
                malformed.alias(name)
                if name == "malformed"
                else F.when(~malformed, F.col(name)).alias(name)
                if name in EVENT_FIELDS
                else F.col(name)
                for name in ENVELOPE_COLUMNS
            ],
            *[F.col(c) for c in keep],
        )

    return transform


def storable_text(text: Column) -> Column:
    """``text`` as it can be stored in a Delta string column: as is when it is valid UTF-8,
    else ``base64:`` followed by its bytes in Base64 (lossless, and never a JSON object)."""
    # Spark may chunk base64 output into MIME lines (spark.sql.chunkBase64String.enabled).
    encoded = F.regexp_replace(F.base64(text.cast("binary")), r"[\r\n]", "")
    return F.when(text.isNull() | F.is_valid_utf8(text), text).otherwise(
        F.concat(F.lit(NOT_UTF8_PREFIX), encoded)
    )
