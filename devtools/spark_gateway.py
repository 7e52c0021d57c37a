"""The test run's Spark session kept usable after a test is cut off inside a py4j call.

Test infrastructure (``tests/conftest.py`` calls it after each test phase): it reaches into
py4j's and PySpark's internals, which the tests themselves do not.
"""

from __future__ import annotations

import contextlib
import uuid


def forget_interrupted_call() -> None:
    """Drop this thread's py4j connection if it is out of step with the JVM.

    pytest-timeout ends a test by raising pytest's ``Failed`` (a BaseException) from a signal
    handler, inside whatever the test was doing: in a py4j call, py4j catches only
    ``Exception``, keeps the connection and leaves the answer unread; the next call on it
    (PySpark's own clean-up, already) reads the answer meant for the call before, and so on
    for every later call of the worker (seen in CI: one timed-out test, then 33 failures and
    279 errors on that worker). A round trip with a fresh number tells: if the answer is not
    that number, the connection is closed and the next call opens a new one.
    (``timeout_method = "thread"`` would end the worker instead, but pytest-xdist with
    ``--dist loadfile`` then gives the timed-out test to each replacement worker in turn.)"""
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    if jvm is None:
        return
    client = jvm._gateway_client
    get_connection = getattr(client, "get_thread_connection", None)  # pinned-thread mode only
    if get_connection is None or get_connection() is None:
        return
    probe = uuid.uuid4().int % 1_000_000_007
    try:
        in_step = jvm.java.lang.Math.abs(probe) == probe
    except Exception:
        in_step = False
    if not in_step:
        connection = get_connection()
        if connection is not None:
            with contextlib.suppress(ValueError):
                client.deque.remove(connection)
            connection.close()
        client.thread_connection.connection = None
        # and the interrupted test's Spark jobs stop taking the next tests' cores
        SparkContext._active_spark_context.cancelAllJobs()  # type: ignore[union-attr]
