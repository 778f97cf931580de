"""consumer.edge.kafka: which consumed events carry data and which end the consumer; reading
the committed offsets through a coordinator that is slow to answer."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.edge.kafka import committed_offsets, consumer_config, usable
from consumer.exceptions import KafkaClientError
from consumer.settings import ConsumerSettings, KafkaSettings


class Event:
    """A consumed message that carries only an error (or none)."""

    def __init__(self, error: KafkaError | None) -> None:
        self._error = error

    def error(self) -> KafkaError | None:
        return self._error


class Log:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


def test_data_passes_and_the_end_of_a_partition_is_dropped_silently() -> None:
    log = Log()
    assert usable(Event(None), log)
    assert not usable(Event(KafkaError(KafkaError._PARTITION_EOF)), log)
    assert log.warnings == []


def test_a_transient_error_is_dropped_with_a_warning() -> None:
    log = Log()
    assert not usable(Event(KafkaError(KafkaError._TRANSPORT, "broker down")), log)
    assert [event for event, _ in log.warnings] == ["consumer error"]


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError._FATAL, "static consumer fenced"),  # fatal flag unset (seen live)
        KafkaError(KafkaError._FENCED, "fenced", fatal=True),
    ],
)
def test_a_fatal_error_ends_the_consumer(error: KafkaError) -> None:
    with pytest.raises(KafkaClientError, match="consumer failed"):
        usable(Event(error), Log())


class SlowCoordinator:
    """A consumer whose ``committed`` times out ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets")
            )
        return [TopicPartition(tp.topic, tp.partition, 42) for tp in partitions]


def test_committed_offsets_wait_for_a_coordinator_that_comes_back() -> None:
    consumer = SlowCoordinator(failures=2)
    offsets = committed_offsets(consumer, [TopicPartition("t", 0)], timeout_s=30.0)  # type: ignore[arg-type]
    assert [(tp.topic, tp.partition, tp.offset) for tp in offsets] == [("t", 0, 42)]
    assert consumer.calls == 3


def test_committed_offsets_give_up_with_the_broker_trouble_error() -> None:
    consumer = SlowCoordinator(failures=10**6)
    with pytest.raises(KafkaClientError) as raised:
        committed_offsets(consumer, [TopicPartition("t", 0)], timeout_s=0.5)  # type: ignore[arg-type]
    assert raised.value.retriable
    assert raised.value.exit_code == 3  # the orchestrator restarts the daemon
    assert consumer.calls >= 1
    # The one cause a restart does not cure is named, with its remedy.
    assert "find-hanging" in str(raised.value)
    assert str(raised.value).startswith("cannot read the group's committed offsets")


def test_committed_offsets_call_on_timeout_once_after_the_first_time_out() -> None:
    consumer = SlowCoordinator(failures=3)
    calls: list[int] = []
    offsets = committed_offsets(
        consumer,  # type: ignore[arg-type]
        [TopicPartition("t", 0)],
        timeout_s=60.0,
        on_timeout=lambda: calls.append(consumer.calls),
    )
    assert [tp.offset for tp in offsets] == [42]
    assert calls == [1]  # after the first time-out, before the first retry; never again


def test_committed_offsets_never_call_on_timeout_for_other_errors() -> None:
    class Refusing:
        def committed(self, partitions: list[TopicPartition], timeout: float) -> None:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "down"))

    calls: list[int] = []
    with pytest.raises(KafkaClientError):
        committed_offsets(
            Refusing(),  # type: ignore[arg-type]
            [TopicPartition("t", 0)],
            timeout_s=0.5,
            on_timeout=lambda: calls.append(1),
        )
    assert calls == []


def test_static_membership_names_the_instance_within_its_group() -> None:
    consumer = ConsumerSettings(group_id="lensnet")
    assert "group.instance.id" not in consumer_config(KafkaSettings(), consumer)
    config = consumer_config(KafkaSettings(), consumer, instance_id="pod-0")
    assert config["group.instance.id"] == "lensnet-pod-0"
    other = consumer_config(KafkaSettings(), consumer, group_id="reader", instance_id="pod-0")
    assert other["group.instance.id"] == "reader-pod-0"
