"""Kafka client construction from settings.

Clients are built by these functions when a stage needs one, never at import time, so
constructing a stage makes no network call. Every producer uses the murmur2 partitioner (see
:mod:`consumer.edge.keys`); every consumer reads only committed transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from consumer.edge.keys import PARTITIONER
from consumer.exceptions import KafkaClientError
from consumer.logs import LIBRDKAFKA_LOGGER
from consumer.settings import ConsumerSettings, KafkaSettings, ProducerSettings


def base_config(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection settings plus librdkafka's log routed through stdlib ``logging``."""
    config = kafka.client_config()
    config["logger"] = logging.getLogger(LIBRDKAFKA_LOGGER)
    return config


def producer_config(
    kafka: KafkaSettings,
    producer: ProducerSettings,
    *,
    transactional_id: str | None = None,
) -> dict[str, Any]:
    """librdkafka producer config: idempotent, murmur2-partitioned, optionally transactional."""
    config = base_config(kafka)
    config.update(
        {
            "partitioner": PARTITIONER,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": producer.linger_ms,
            "compression.type": producer.compression_type,
            # Photometry batches and alerts (with their light curves) exceed the 1 MB default
            # only in pathological cases; allow some head-room below the broker's own limit.
            "message.max.bytes": 900_000,
        }
    )
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
    return config


def consumer_config(
    kafka: KafkaSettings,
    consumer: ConsumerSettings,
    *,
    group_id: str | None = None,
    instance_id: str | None = None,
) -> dict[str, Any]:
    """librdkafka consumer configuration for at-least-once or transactional processing.

    Offsets are never auto-committed: a stage commits exactly what it processed. The range
    assignor keeps partition p of every photometry topic on one member (co-partitioning).
    ``instance_id``: static group membership as ``<group>-<instance_id>`` (a restarted member
    gets its partitions back without a rebalance).
    """
    config = base_config(kafka)
    config.update(
        {
            "group.id": group_id or consumer.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": consumer.auto_offset_reset,
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "range",
            "session.timeout.ms": consumer.session_timeout_ms,
            "max.poll.interval.ms": consumer.max_poll_interval_ms,
        }
    )
    if instance_id is not None:
        config["group.instance.id"] = f"{config['group.id']}-{instance_id}"
    return config


def watermarks(
    consumer: Consumer, partition: TopicPartition, timeout_s: float = 10.0
) -> tuple[int, int]:
    """(low, high) offsets of a partition, retrying retriable errors (e.g. leader moving)."""

    @retry(
        retry=retry_if_exception(lambda e: isinstance(e, KafkaClientError) and e.retriable),
        stop=stop_after_delay(timeout_s),
        wait=wait_exponential(multiplier=0.05, max=1.0),
        reraise=True,
    )
    def query() -> tuple[int, int]:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=timeout_s)
        except KafkaException as error:
            raise KafkaClientError.wrap(
                f"cannot read offsets of {partition.topic}[{partition.partition}]", error
            ) from error
        return int(low), int(high)

    return query()


def committed_offsets(
    consumer: Consumer,
    partitions: list[TopicPartition],
    timeout_s: float = 60.0,
    on_timeout: Callable[[], None] | None = None,
) -> list[TopicPartition]:
    """The group's committed offsets of ``partitions`` (negative: none), retrying retriable
    errors for up to ``timeout_s``: after a broker restart the group coordinator can take a
    while to answer (librdkafka then raises ``_TIMED_OUT``), and an exception escaping the
    rebalance callback this runs in would end the daemon with a traceback rather than the
    broker-trouble exit code.

    A ``read_committed`` consumer asks for *stable* offsets, which the coordinator withholds
    while a transaction's offset commit is pending. ``on_timeout`` is called once, after the
    first attempt (10 s at most) times out, before the retries go on: the daemon ends its own
    producer's pending commit there (:meth:`TransactionalOutput.end_pending_offsets
    <consumer.edge.output.TransactionalOutput.end_pending_offsets>`), which is what a
    transaction marker lost in a broker restart leaves behind (RELIABILITY.md, the stall).

    Raises
    ------
    KafkaClientError
        Still failing after ``timeout_s`` (retriable: the orchestrator restarts the daemon).
        A time-out names the one cause a restart cannot cure: another producer's hanging
        transaction holding the group's offsets unstable, and how to end it.
    """
    attempt_s = min(10.0, timeout_s)
    pending = [on_timeout] if on_timeout is not None else []

    def timed_out_once(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if pending and isinstance(error, KafkaClientError) and error.code == KafkaError._TIMED_OUT:
            pending.pop()()

    @retry(
        retry=retry_if_exception(lambda e: isinstance(e, KafkaClientError) and e.retriable),
        stop=stop_after_delay(max(timeout_s - attempt_s, 0.0)),
        wait=wait_exponential(multiplier=0.2, max=5.0),
        before_sleep=timed_out_once,
        reraise=True,
    )
    def query() -> list[TopicPartition]:
        try:
            return list(consumer.committed(partitions, timeout=attempt_s))
        except KafkaException as error:
            raise KafkaClientError.wrap(
                "cannot read the group's committed offsets", error
            ) from error

    try:
        return query()
    except KafkaClientError as error:
        if error.code != KafkaError._TIMED_OUT:
            raise
        raise KafkaClientError(
            f"{error}; {HANGING_HINT}", code=error.code, retriable=True
        ) from error


#: What a daemon that cannot read its group's offsets says, besides librdkafka's time-out.
HANGING_HINT = (
    "if the brokers answer otherwise, a transaction of another transactional id whose marker "
    "never reached the group's offsets partition may hold its offsets unstable (this daemon "
    "ends its own; seen after a broker restart: RELIABILITY.md, the stall); list it with "
    "`kafka-transactions.sh --bootstrap-server HOST:PORT find-hanging --broker-id N` and end "
    "it with `kafka-transactions.sh ... abort --topic __consumer_offsets --partition P "
    "--start-offset S`"
)


def usable(message: Any, log: Any) -> bool:
    """Whether a consumed message carries data: error events are dropped (end of partition
    silently, others with a warning on ``log``); a fatal error raises
    :class:`~consumer.exceptions.KafkaClientError`."""
    error = message.error()
    if error is None:
        return True
    if error.code() == KafkaError._PARTITION_EOF:
        return False
    # A fenced static member reports ERR__FATAL in an error event whose fatal flag is unset;
    # either way the consumer is dead and only a restart helps.
    if error.fatal() or error.code() == KafkaError._FATAL:
        raise KafkaClientError.wrap("consumer failed (fatal)", error)
    log.warning("consumer error", error=error.str(), code=error.name())
    return False


def make_producer(config: dict[str, Any]) -> Producer:
    """A librdkafka producer; configuration errors become :class:`KafkaClientError`."""
    try:
        return Producer(config)
    except KafkaException as error:
        raise KafkaClientError.wrap("cannot create producer", error) from error


def make_consumer(config: dict[str, Any]) -> Consumer:
    """A librdkafka consumer; configuration errors become :class:`KafkaClientError`."""
    try:
        return Consumer(config)
    except KafkaException as error:
        raise KafkaClientError.wrap("cannot create consumer", error) from error


def make_admin(kafka: KafkaSettings) -> AdminClient:
    """An admin client for topic management."""
    try:
        return AdminClient(base_config(kafka))
    except KafkaException as error:
        raise KafkaClientError.wrap("cannot create admin client", error) from error
