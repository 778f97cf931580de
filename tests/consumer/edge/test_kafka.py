"""consumer.edge.kafka.usable: which consumed events carry data and which end the consumer."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from consumer.edge.kafka import usable
from consumer.exceptions import KafkaClientError


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
