"""SQL text the pipeline builds itself (filters for delta-rs, a database's watermark range,
view definitions): one way to quote a string."""

from __future__ import annotations


def string_literal(text: str) -> str:
    """``text`` as a single-quoted SQL string literal (each quote doubled)."""
    return "'" + text.replace("'", "''") + "'"
