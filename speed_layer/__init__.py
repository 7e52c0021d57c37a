"""The speed layer: Kafka sales events into the master dataset and the speed increments.

A Structured Streaming query reads the topic; a named ``foreachBatch`` sink
(:class:`speed_layer.sink.SpeedSink`) validates each micro-batch with the shared rules,
quarantines rejects (and publishes them to the dead-letter topic), inserts new events into
the master dataset and adds the shared views over exactly those events to the speed
increments. Every Delta write is idempotent per micro-batch id, so a replayed micro-batch
(after a crash anywhere) writes nothing twice. :mod:`speed_layer.job` wires it together.
"""
