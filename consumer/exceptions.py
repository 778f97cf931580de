"""The project's exceptions. Everything we raise derives from :class:`LensNetError`."""

from __future__ import annotations

from typing import Any


class LensNetError(Exception):
    """Root of every error raised by the broker, the model tooling and the CLI."""

    #: Process exit code the CLI maps this error to.
    exit_code = 1


class ConfigError(LensNetError):
    """A setting is missing or invalid; the message names the setting."""

    exit_code = 2


class SchemaError(LensNetError):
    """An Avro schema cannot be loaded, parsed or resolved."""


class DecodeError(LensNetError):
    """A message cannot be decoded; the message names where it came from and why."""


class KafkaClientError(LensNetError):
    """A Kafka operation failed. Keeps librdkafka's error code and retriability."""

    exit_code = 3

    def __init__(self, message: str, *, code: int | None = None, retriable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retriable = retriable

    @classmethod
    def wrap(cls, what: str, error: Any) -> KafkaClientError:
        """Build from a ``confluent_kafka.KafkaError`` (or a KafkaException carrying one).

        Retriable when librdkafka flags it so, or when its code is a transient broker state
        (leadership moving, coordinator loading, time-outs) that librdkafka leaves unflagged
        outside the produce path.
        """
        from confluent_kafka import KafkaError

        transient = {
            KafkaError.NOT_LEADER_FOR_PARTITION,
            KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError.REQUEST_TIMED_OUT,
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError._TIMED_OUT,
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            # The broker a request waited on left the cluster's metadata (killed): another
            # replica takes over its partitions.
            KafkaError._DESTROY_BROKER,
        }
        args = getattr(error, "args", ())  # a KafkaError itself has none
        kafka_error = args[0] if args and hasattr(args[0], "code") else error
        if hasattr(kafka_error, "code") and hasattr(kafka_error, "str"):
            return cls(
                f"{what}: {kafka_error.str()} ({kafka_error.name()})",
                code=kafka_error.code(),
                retriable=bool(kafka_error.retriable()) or kafka_error.code() in transient,
            )
        return cls(f"{what}: {error}")


class TopicLayoutError(LensNetError):
    """Topics exist but disagree with what co-partitioning requires."""

    exit_code = 2
