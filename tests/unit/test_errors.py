"""The one line a user sees for a failure (sales_core.errors.one_line)."""

from __future__ import annotations

import pytest

from sales_core.errors import one_line, root_cause_class

pytestmark = pytest.mark.unit

SPARK_READ_FAILURE = """An error occurred while calling o1059.collectToPython.
: org.apache.spark.SparkException: [FAILED_READ_FILE.FILE_NOT_EXIST] Encountered error while reading file file:///landing/x.jsonl. File does not exist.
\tat org.apache.spark.sql.errors.QueryExecutionErrors$.fileNotExistError(QueryExecutionErrors.scala:902)
Caused by: java.io.FileNotFoundException: /landing/x.jsonl (Permission denied)
\tat java.base/java.io.FileInputStream.open0(Native Method)
"""

SINK_FAILURE = """[STREAM_FAILED] Query [id = 1] terminated with exception: An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):
  File "/x/speed_layer/sink.py", line 3, in call
sales_core.errors.SourceError: the master dataset was replaced
\tat org.apache.spark.sql.execution.streaming.StreamExecution.run(StreamExecution.scala:1)
"""


def test_a_spark_failure_shows_its_deepest_jvm_cause() -> None:
    failure = RuntimeError(SPARK_READ_FAILURE)
    assert one_line(failure) == "FileNotFoundException: /landing/x.jsonl (Permission denied)"
    assert root_cause_class(failure) == "java.io.FileNotFoundException"


def test_without_a_cause_the_top_jvm_exception_is_shown_not_the_py4j_call() -> None:
    failure = RuntimeError(
        "An error occurred while calling o1.save.\n: org.apache.spark.SparkException: boom\n\tat a.B(B.scala:1)"
    )
    assert one_line(failure) == "SparkException: boom"


def test_a_python_exception_raised_in_a_sink_wins_over_the_jvm_trace() -> None:
    assert one_line(RuntimeError(SINK_FAILURE)) == "SourceError: the master dataset was replaced"


def test_plain_messages_are_kept() -> None:
    assert one_line(ValueError("unknown view 'x'")) == "unknown view 'x'"
    assert one_line(KeyError()) == "KeyError"
    assert root_cause_class(ValueError("no jvm here")) is None
