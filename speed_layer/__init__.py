"""The speed layer: Kafka sales events into the master dataset and the speed increments.

A Structured Streaming query (:mod:`speed_layer.dedup`) reads the topic, parses and validates
each record once with the shared rules, and drops ids already taken (by the stream or by the
batch layer) with Spark's state store; a named ``foreachBatch`` sink
(:class:`speed_layer.sink.SpeedSink`) quarantines rejects (and publishes them to the
dead-letter topic), appends new events to the master dataset and the shared views over
exactly those events to the speed increments. Every Delta append is idempotent per
micro-batch id, so a replayed micro-batch (after a crash anywhere) writes nothing twice.
Metrics are written off the hot path (:mod:`speed_layer.metrics`). :mod:`speed_layer.job`
wires it together.
"""
