"""What a command writes on stderr (sales_core.logs) and the run summary it prints
(sales_core.runs): JSON and text log lines, progress lines, the summary table."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from sales_core.logs import JsonFormatter, Progress, configure_logging
from sales_core.runs import RunRecord, format_run_summary

pytestmark = pytest.mark.unit


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as it was (pytest's capture handlers, level) afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _record(msg: str, *args: object, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("batch_layer.publish", logging.INFO, __file__, 1, msg, args, None)
    record.created = datetime(2026, 11, 1, 2, 3, 4, 567000, tzinfo=timezone.utc).timestamp()
    if fields:
        record.fields = fields
    return record


def test_json_line_carries_time_level_logger_message_and_fields() -> None:
    line = JsonFormatter().format(_record("published generation %d", 7, generation=7))
    assert json.loads(line) == {
        "ts": "2026-11-01T02:03:04.567+00:00",
        "level": "INFO",
        "logger": "batch_layer.publish",
        "message": "published generation 7",
        "generation": 7,
    }


def test_a_message_that_is_a_json_object_is_merged_not_quoted() -> None:
    line = JsonFormatter().format(_record('{"event": "speed_micro_batch", "batch_id": 3}'))
    assert json.loads(line) == {
        "ts": "2026-11-01T02:03:04.567+00:00",
        "level": "INFO",
        "logger": "batch_layer.publish",
        "event": "speed_micro_batch",
        "batch_id": 3,
    }
    assert '"event": "speed_micro_batch"' in line  # what operators (and tests) grep for


@pytest.mark.parametrize("text", ["{not json}", "[1, 2]", '{"a": 1} trailing'])
def test_a_message_that_only_looks_like_json_stays_the_message(text: str) -> None:
    assert json.loads(JsonFormatter().format(_record(text)))["message"] == text


def test_level_and_format_are_applied(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("WARNING", "json")
    logging.getLogger("batch_layer.ingest").info("hidden at WARNING")
    logging.getLogger("batch_layer.sources.files").warning("corrupt parquet file %s", "x.parquet")
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["corrupt parquet file x.parquet"]

    configure_logging("info", "text")
    logging.getLogger("batch_layer.ingest").info("epoch %d", 1)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" INFO batch_layer.ingest: epoch 1") and not line.startswith("{")


def test_third_party_clients_stay_quiet_below_warning_and_follow_a_higher_level(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("DEBUG", "text")
    logging.getLogger("kafka.conn").info("chatter")
    assert capsys.readouterr().err == ""
    configure_logging("ERROR", "text")
    logging.getLogger("kafka.conn").warning("a warning below ERROR")
    assert capsys.readouterr().err == ""


def test_unknown_format_is_refused(root_logging: None) -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("INFO", "xml")


def test_progress_is_plain_on_text_and_a_json_line_on_json(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("WARNING", "text")
    Progress("batch")("starting Spark")
    assert capsys.readouterr().err == "[batch     0.0s] starting Spark\n"

    configure_logging("ERROR", "json")  # progress shows whatever the level: --quiet hides it
    Progress("batch")("starting Spark")
    Progress("batch", quiet=True)("not shown")
    (line,) = capsys.readouterr().err.splitlines()
    shown = json.loads(line)
    assert (shown["logger"], shown["message"], shown["job"]) == (
        "lambda_sales.progress",
        "starting Spark",
        "batch",
    )
    assert 0 <= shown["elapsed_seconds"] < 5


def test_run_summary_table() -> None:
    started = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
    record = RunRecord(
        "batch-1",
        "batch",
        started,
        status="succeeded",
        ended_at=started + timedelta(seconds=12.34),
        records_read=10,
        valid=7,
        duplicates=1,
        quarantined=2,
        quality_score=91.236,
        generation=3,
        details={"events_in_views": 7, "rejected_by_reason": {"malformed": 1, "b_reason": 1}},
    )
    assert format_run_summary(record) == (
        "item                  value\n"
        "--------------------  ---------\n"
        "run                   batch-1\n"
        "status                succeeded\n"
        "records read          10\n"
        "  valid (new events)  7\n"
        "  duplicates          1\n"
        "  quarantined         2\n"
        "quality score         91.24\n"
        "generation published  3\n"
        "events in views       7\n"
        "duration              12.3s\n"
        "  rejected b_reason   1\n"
        "  rejected malformed  1"
    )


def test_run_summary_of_a_run_still_running_leaves_unknowns_blank() -> None:
    record = RunRecord("batch-2", "batch", datetime(2026, 11, 1, tzinfo=timezone.utc))
    lines = format_run_summary(record).splitlines()
    assert lines[2:4] == ["run                   batch-2", "status                running"]
    assert lines[4:] == [
        "records read",
        "  valid (new events)",
        "  duplicates",
        "  quarantined",
        "quality score",
        "generation published",
        "events in views",
        "duration",
    ]
