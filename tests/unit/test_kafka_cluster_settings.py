"""What makes three local brokers one Kafka cluster: each node's server.properties, the
controller quorum, the replication, the CLI's ports and the admin requests' failover."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from devtools.kafka_cluster import ClusterStatus, NodeStatus, consecutive_ports
from devtools.kafka_files import Layout, quorum_voters, replication, server_properties
from jobs.cli import build_parser
from sales_core.config import KafkaSourceConf, load_config
from speed_layer.kafka_client import with_failover

pytestmark = pytest.mark.unit

HOST = "127.0.0.1"
PORTS = [19092, 19093, 19094]


def properties(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_quorum_voters_name_every_node_on_its_controller_port() -> None:
    assert quorum_voters(HOST, PORTS) == ("1@127.0.0.1:20092,2@127.0.0.1:20093,3@127.0.0.1:20094")
    assert quorum_voters("localhost", [9092]) == "1@localhost:10092"


@pytest.mark.parametrize(
    ("brokers", "factor", "min_insync"),
    [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)],
)
def test_replication_loses_one_broker_without_losing_or_refusing_a_write(
    brokers: int, factor: int, min_insync: int
) -> None:
    copies = replication(brokers)
    assert (copies.factor, copies.min_insync) == (factor, min_insync)


def test_replication_needs_a_broker() -> None:
    with pytest.raises(ValueError, match="at least one broker"):
        replication(0)


def test_node_two_of_three() -> None:
    layout = Layout(Path("/data/cluster/node-2"))
    voters = quorum_voters(HOST, PORTS)
    settings = properties(
        server_properties(layout, HOST, 19093, node_id=2, voters=voters, brokers=3)
    )

    assert settings["node.id"] == "2"
    assert settings["process.roles"] == "broker,controller"
    assert settings["controller.quorum.voters"] == voters
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:19093,CONTROLLER://127.0.0.1:20093"
    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19093"
    assert settings["log.dirs"] == "/data/cluster/node-2/kraft-logs"
    assert {
        key: settings[key]
        for key in (
            "default.replication.factor",
            "min.insync.replicas",
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
            "transaction.state.log.min.isr",
            "unclean.leader.election.enable",
        )
    } == {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "unclean.leader.election.enable": "false",
    }


def test_a_single_broker_keeps_its_own_settings() -> None:
    settings = properties(server_properties(Layout(Path("/data/kafka")), HOST, 9092))

    assert settings["node.id"] == "1"
    assert settings["controller.quorum.voters"] == "1@127.0.0.1:10092"
    assert settings["offsets.topic.replication.factor"] == "1"
    assert settings["transaction.state.log.min.isr"] == "1"
    assert "default.replication.factor" not in settings
    assert "min.insync.replicas" not in settings


def test_consecutive_ports() -> None:
    assert consecutive_ports(9092, 3) == [9092, 9093, 9094]
    assert consecutive_ports(9092, 1) == [9092]
    with pytest.raises(ValueError, match="at least one broker"):
        consecutive_ports(9092, 0)


def node(node_id: int, running: bool, port: int | None) -> NodeStatus:
    return NodeStatus(
        node_id=node_id,
        running=running,
        pid=1000 + node_id if running else None,
        address=None if port is None else f"{HOST}:{port}",
        data_dir=Path(f"/c/node-{node_id}"),
    )


def test_cluster_status_lists_every_broker() -> None:
    status = ClusterStatus(
        Path("/c"), (node(1, True, 19092), node(2, False, 19093), node(3, True, 19094))
    )

    assert status.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert not status.running
    assert status.node(2).address == "127.0.0.1:19093"
    assert str(status).splitlines() == [
        "kafka cluster: degraded, 2 of 3 brokers running; "
        "bootstrap 127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094, data in /c",
        "  broker 1: running (pid 1001) on 127.0.0.1:19092, data in /c/node-1",
        "  broker 2: stopped on 127.0.0.1:19093, data in /c/node-2",
        "  broker 3: running (pid 1003) on 127.0.0.1:19094, data in /c/node-3",
    ]
    with pytest.raises(KeyError):
        status.node(4)


def test_an_empty_cluster_directory() -> None:
    status = ClusterStatus(Path("/c"), ())
    assert not status.running and status.bootstrap is None
    assert str(status) == "kafka cluster: none, data in /c"


def test_the_cli_starts_one_broker_unless_told_three() -> None:
    parser = build_parser()
    assert parser.parse_args(["kafka", "start"]).brokers is None
    assert parser.parse_args(["kafka", "start", "--brokers", "3"]).brokers == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["kafka", "start", "--brokers", "2"])


class Flaky:
    """An admin request that fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"


def kafka_conf(bootstrap: str) -> KafkaSourceConf:
    return load_config(
        environ={"LAMBDA_SALES__SOURCES__KAFKA__BOOTSTRAP_SERVERS": bootstrap}
    ).sources.kafka


def test_an_admin_request_goes_to_another_broker_of_a_cluster() -> None:
    request = Flaky(2, KafkaConnectionError("111 ECONNREFUSED"))
    assert with_failover(kafka_conf("a:9092,b:9092,c:9092"), request) == "answer"
    assert request.calls == 3


def test_an_admin_request_to_a_single_broker_is_tried_once() -> None:
    request = Flaky(1, KafkaConnectionError("111 ECONNREFUSED"))
    with pytest.raises(KafkaConnectionError):
        with_failover(kafka_conf("a:9092"), request)
    assert request.calls == 1


def test_an_error_no_other_broker_can_mend_is_raised_at_once() -> None:
    request = Flaky(1, TopicAuthorizationFailedError())
    with pytest.raises(TopicAuthorizationFailedError):
        with_failover(kafka_conf("a:9092,b:9092,c:9092"), request)
    assert request.calls == 1
