"""Kafka cluster ids that the storage tool's argument parser accepts."""

from __future__ import annotations

import base64

import pytest

from devtools.kafka_files import new_cluster_id

pytestmark = pytest.mark.unit


def test_an_id_starting_with_a_dash_is_drawn_again() -> None:
    # 0xF8 puts 62 in the first six bits: base64url's "-".
    dash_first = bytes([0xF8]) + bytes(15)
    plain = bytes(range(16))
    draws = iter([dash_first, dash_first, plain])

    cluster_id = new_cluster_id(lambda: next(draws))

    assert base64.urlsafe_b64encode(dash_first).decode().startswith("-")
    assert cluster_id == base64.urlsafe_b64encode(plain).decode().rstrip("=")


def test_ids_have_kafkas_uuid_shape() -> None:
    ids = {new_cluster_id() for _ in range(2000)}

    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
