"""Developer tooling: what only a developer, the demo, the tests or the benchmarks run.

- :mod:`devtools.processes`: process, port and lock helpers the services share.
- :mod:`devtools.kafka`: a real single-node Apache Kafka broker (KRaft) and its topics.
- :mod:`devtools.kafka_files`: the broker's jars (from Maven, once) and data-directory files.
- :mod:`devtools.postgres`: a real PostgreSQL server in a private data directory.
- :mod:`devtools.postgres_cluster`: the server binaries and the data directory's files.
- :mod:`devtools.generator`: seeded synthetic sales with bad records, duplicates, late events.
- :mod:`devtools.writers`: those sales as landing files, PostgreSQL rows or Kafka messages.

``python -m devtools {kafka|postgres} {start|stop|status}`` runs the services by hand.
This package is never shipped to executors (``jobs.bundle`` leaves it out) and nothing in
``sales_core`` or the three layers may import it (the import-linter contracts in
``pyproject.toml``).
"""
