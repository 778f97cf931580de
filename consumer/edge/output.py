"""Stage: alerts and dead letters out, and the consumed offsets committed with them.

Two modes, one interface (:class:`Output`): ``begin()``, ``alert()`` / ``event()`` /
``dead_letter()`` for each output message, then ``commit(offsets, group_metadata)`` (or
``abort()``); the loop holds each batch in :func:`transaction` and produces its output with
:func:`publish`.

``exactly_once`` (:class:`TransactionalOutput`, the default)
    Every batch is one Kafka transaction holding its alerts, event updates, dead letters and the
    consumed offsets (``send_offsets_to_transaction``), with a stable ``transactional.id`` per
    instance, so a restarted instance fences its zombie and a ``read_committed`` subscriber sees
    each alert exactly once. librdkafka's error classes are handled as they ask: a *retriable*
    error retries the same call with back-off, up to the transaction timeout; an *abortable*
    one (``txn_requires_abort``) aborts the transaction and raises
    :class:`TransactionAbortedError`, after which the caller rewinds its input to the
    transaction start and restores its state; anything else is *fatal*
    (:class:`KafkaClientError`, exit code 3) so the orchestrator restarts the process.
``at_least_once``
    Produce, wait for every delivery, then commit the offsets synchronously. A crash between
    the two republishes the batch's alerts; their ids are deterministic, so readers can
    deduplicate.

Alerts are Avro single-object messages, or with ``daemon.alert_format = confluent`` in the
Confluent wire format: :func:`make_output` registers ``alert-v1`` in the schema registry first
(``<alert topic>-value``; a registry that does not answer fails the start-up attempt, which the
daemon retries).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from consumer.edge.alert import Alert, encode_alert
from consumer.edge.events import EventUpdate, encode_update
from consumer.edge.kafka import make_producer, producer_config
from consumer.edge.keys import star_key
from consumer.edge.registry import RegistryClient
from consumer.edge.schemas import load_schema
from consumer.exceptions import KafkaClientError, LensNetError
from consumer.health import Metrics
from consumer.pipeline.ingest import DeadLetter
from consumer.pipeline.windows import Evaluated
from consumer.settings import Settings
from consumer.state.alerted import TRIGGER_HEADER

#: A transactional call still blocked this long after its own timeout ends the process.
WATCHDOG_GRACE_S = 30.0
#: Longest pause between retries of a transactional call that failed with a retriable error
#: (they are retried until the transaction timeout, then count as fatal).
RETRY_MAX_DELAY_S = 2.0


class TransactionAbortedError(LensNetError):
    """The batch's transaction was aborted: rewind the input and restore the state."""


class Output(Protocol):
    """Where a batch's alerts, dead letters and offsets go."""

    def begin(self) -> None: ...

    def alert(self, alert: Alert) -> None: ...

    def dead_letter(self, letter: DeadLetter) -> None: ...

    def event(self, update: EventUpdate) -> None: ...

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> None: ...

    def abort(self) -> None: ...

    def end_pending_offsets(
        self, partitions: list[TopicPartition], group_metadata: Any
    ) -> None: ...

    def close(self, timeout_s: float) -> None: ...


@contextmanager
def transaction(output: Output, log: Any) -> Iterator[None]:
    """One batch's output: begun on entry; the body produces and commits. When the body fails
    with anything but :class:`TransactionAbortedError` (the output aborted that one itself),
    the open transaction is aborted before the error goes on."""
    output.begin()
    try:
        yield
    except TransactionAbortedError:
        raise
    except BaseException:
        try:
            output.abort()
        except LensNetError:
            log.exception("abort failed")
        raise


def publish(output: Output, evaluated: Evaluated, metrics: Metrics, log: Any) -> int:
    """Produce a batch's alerts, event updates and dead letters into the open transaction;
    counts them in its report and the metrics, logs one line per alert and per event update;
    returns the alerts produced."""
    report = evaluated.report
    for item, alert in evaluated.alerts:
        output.alert(alert)
        report.alerts += 1
        metrics.alerts.labels(label=alert.lensnet.label).inc()
        if item.arrival_ms > 0:
            metrics.alert_latency.observe(time.time() - item.arrival_ms / 1000)
        log.info(
            "alert",
            alert_id=alert.alert_id,
            star_id=alert.star_id,
            field=alert.field,
            sites=list(alert.alertfinder.sites),
            dchi2=round(alert.alertfinder.dchi2, 1),
            p_event=round(alert.lensnet.p_event, 4),
            label=alert.lensnet.label,
        )
    for update in evaluated.events:
        output.event(update)
        log.info(
            "event update",
            event_id=update.event_id,
            sequence=update.sequence,
            kind=update.kind,
            reason=update.reason,
            peak_hjd=round(update.event_model.peak_hjd, 3),
        )
    for letter in evaluated.dead_letters:
        output.dead_letter(letter)
        report.dead_letters += 1
        metrics.dead_letters.labels(reason=letter.reason).inc()
    return report.alerts


class _Producing:
    """Produce calls shared by both modes; delivery errors are collected and raised later."""

    def __init__(
        self,
        producer: Producer,
        alerts_topic: str,
        dead_letter_topic: str,
        events_topic: str,
        schema_id: int | None = None,
    ) -> None:
        self.producer = producer
        self.alerts_topic = alerts_topic
        self.dead_letter_topic = dead_letter_topic
        self.events_topic = events_topic
        #: The alert schema's id in the registry: alerts in the Confluent wire format.
        self.schema_id = schema_id
        self.errors: list[KafkaError] = []

    def _delivered(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            self.errors.append(error)

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=self._delivered
                )
                return
            except BufferError:  # local queue full: serve delivery reports, then retry
                self.producer.poll(0.1)
            except KafkaException as error:
                raise KafkaClientError.wrap(f"cannot produce to {topic}", error) from error

    def alert(self, alert: Alert) -> None:
        value, headers = encode_alert(alert, schema_id=self.schema_id)
        headers.append((TRIGGER_HEADER, repr(alert.trigger_hjd).encode()))
        self._produce(self.alerts_topic, star_key(alert.star_id), value, headers)

    def dead_letter(self, letter: DeadLetter) -> None:
        self._produce(self.dead_letter_topic, letter.key, letter.value, letter.headers())

    def event(self, update: EventUpdate) -> None:
        value, headers = encode_update(update)
        self._produce(self.events_topic, star_key(update.star_id), value, headers)

    def close(self, timeout_s: float) -> None:
        self.producer.flush(timeout_s)


class TransactionalOutput(_Producing):
    """Exactly-once output: one transaction per batch (see the module docstring)."""

    def __init__(self, settings: Settings, schema_id: int | None = None) -> None:
        transactional_id = f"{settings.consumer.group_id}-{settings.daemon.instance_id}"
        config = producer_config(
            settings.kafka, settings.producer, transactional_id=transactional_id
        )
        config["transaction.timeout.ms"] = settings.daemon.transaction_timeout_ms
        topics = settings.topics
        super().__init__(
            make_producer(config), topics.alerts, topics.dead_letter, topics.events, schema_id
        )
        self.transactional_id = transactional_id
        self.timeout_s = settings.daemon.transaction_timeout_ms / 1000
        self._call("init_transactions", self.producer.init_transactions, self.timeout_s)

    def begin(self) -> None:
        self.errors.clear()
        self._call("begin_transaction", self.producer.begin_transaction)

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        if offsets:
            self._send_offsets(offsets, group_metadata)
        self._call("commit_transaction", self.producer.commit_transaction, self.timeout_s)

    def abort(self) -> None:
        """Abort the open transaction (after an error outside the producer, e.g. a crash of a
        stage); errors here are fatal."""
        self._call("abort_transaction", self.producer.abort_transaction, self.timeout_s)

    def end_pending_offsets(self, partitions: list[TopicPartition], group_metadata: Any) -> None:
        """End any offset commit of this transactional id still pending in the group's
        offsets partition, as aborted; call it between batches (no transaction open).

        A transaction naming the group (offsets of ``partitions``, values irrelevant) is
        begun and aborted: its ABORT marker in the group's offsets partition completes every
        pending commit of this producer id there, and the group coordinator discards them.
        That is what a marker lost in a broker restart leaves behind (RELIABILITY.md, the
        stall: the transaction coordinator counted the transaction complete, so nothing else
        ever writes its marker, and ``read_committed`` offset fetches wait for good). A commit
        still in progress is not touched: the coordinator answers
        ``CONCURRENT_TRANSACTIONS`` (retried) until its markers are written.

        Abort, not commit, because the lost marker's outcome cannot be asked for (librdkafka
        has no DescribeTransactions): the group's offsets fall back to the last stable
        commit and that input is processed again. The alert-once read-back and the update
        ledger keep alerts and event updates single; dead letters of that input may repeat.
        """
        if not partitions:
            return
        offsets = [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]
        self.begin()
        try:
            self._send_offsets(offsets, group_metadata)
        except TransactionAbortedError:
            raise  # aborted already, but the group may not have been named
        except BaseException:
            with suppress(LensNetError):
                self.abort()
            raise
        self.abort()

    def _send_offsets(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        self._call(
            "send_offsets_to_transaction",
            self.producer.send_offsets_to_transaction,
            offsets,
            group_metadata,
            self.timeout_s,
        )

    def _call(self, what: str, function: Any, *args: Any) -> None:
        """Call a transactional API, retrying retriable errors with back-off for up to the
        transaction timeout (a broker restarting), aborting on abortable ones."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.1
        while True:
            watchdog = threading.Timer(self.timeout_s + WATCHDOG_GRACE_S, _hung, (what,))
            watchdog.daemon = True
            watchdog.start()
            try:
                function(*args)
                return
            except KafkaException as exception:
                error = exception.args[0]
                if error.txn_requires_abort():
                    self._abort_after(what, error)
                if error.retriable() and time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    delay = min(2 * delay, RETRY_MAX_DELAY_S)
                    continue
                raise KafkaClientError.wrap(f"{what} failed (fatal)", exception) from exception
            finally:
                watchdog.cancel()

    def _abort_after(self, what: str, error: KafkaError) -> None:
        try:
            self.producer.abort_transaction(self.timeout_s)
        except KafkaException as exception:
            raise KafkaClientError.wrap(
                f"abort after {what} failed (fatal)", exception
            ) from exception
        raise TransactionAbortedError(
            f"{what}: {error.str()} ({error.name()}); transaction aborted"
        )


def _hung(what: str) -> None:
    """A transactional call outlived its own timeout (librdkafka can block on a coordinator
    that went away: confluentinc/librdkafka#5456, #5511). Exit with the Kafka error code so
    the orchestrator restarts the process; the restart fences and aborts the transaction."""
    structlog.get_logger("lensnet.output").error(
        f"{what} blocked past the transaction timeout; exiting for a restart"
    )
    logging.shutdown()
    os._exit(KafkaClientError.exit_code)


class AtLeastOnceOutput(_Producing):
    """Produce, flush, then commit the offsets (see the module docstring)."""

    def __init__(self, settings: Settings, consumer: Any, schema_id: int | None = None) -> None:
        super().__init__(
            make_producer(producer_config(settings.kafka, settings.producer)),
            settings.topics.alerts,
            settings.topics.dead_letter,
            settings.topics.events,
            schema_id,
        )
        self.consumer = consumer

    def begin(self) -> None:
        self.errors.clear()

    def abort(self) -> None:
        """Nothing to undo: what was produced may be delivered (at least once)."""

    def end_pending_offsets(self, partitions: list[TopicPartition], group_metadata: Any) -> None:
        """Nothing to end: this mode commits no transactions."""

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        remaining = self.producer.flush(60.0)
        if remaining or self.errors:
            detail = self.errors[0].str() if self.errors else f"{remaining} messages undelivered"
            raise KafkaClientError(f"alert delivery failed: {detail}")
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as error:
                raise KafkaClientError.wrap("offset commit failed", error) from error


def make_output(settings: Settings, consumer: Any) -> TransactionalOutput | AtLeastOnceOutput:
    """The output of the configured ``daemon.mode`` (and ``daemon.alert_format``)."""
    schema_id = (
        register_alert_schema(settings) if settings.daemon.alert_format == "confluent" else None
    )
    if settings.daemon.mode == "exactly_once":
        return TransactionalOutput(settings, schema_id)
    return AtLeastOnceOutput(settings, consumer, schema_id)


def register_alert_schema(settings: Settings) -> int:
    """Register ``alert-v1`` under the configured subject (``<alert topic>-value`` by default)
    and return its id (the registry answers with the existing id when it is there)."""
    subject = settings.schema_registry.subject or f"{settings.topics.alerts}-value"
    return RegistryClient(settings.schema_registry).register(subject, load_schema("alert"))
