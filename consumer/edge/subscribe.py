"""Follow-up client: read alerts from the alert topic as typed :class:`~consumer.edge.alert.Alert`
(:class:`AlertSubscriber`), and the events topic's updates as
:class:`~consumer.edge.events.EventUpdate` (:class:`EventSubscriber`).

::

    with AlertSubscriber(settings.kafka, settings.topics.alerts, start="earliest",
                         stop_at_end=True) as alerts:
        for alert in alerts:
            schedule(alert)
            alerts.ack(alert)       # committed: a restarted subscriber resumes after it

Reads only committed transactions (``read_committed``), decodes with the schema each alert
was written with (known 1.x schemas, the one its header carries, or the registry's), in either
wire format (Avro single-object, or Confluent's with a schema registry), and never commits on its
own: :meth:`AlertSubscriber.ack` stores the alert's offset and commits it, so a subscriber that
crashes mid-alert sees that alert again. ``start`` is where a group without committed offsets
begins: ``"earliest"``, ``"latest"``, ``"committed"`` (committed offsets, else earliest), or a
:class:`datetime` (the first alert published at or after it, via offsets-for-times).

The first iteration checks that the cluster answers and the topic exists
(:func:`~consumer.edge.reach.reach`), so a dead address fails within ``kafka.connect_timeout_s``
rather than waiting forever; with ``stop_at_end`` a cluster that goes away for that long
mid-read fails the same way.
"""

from __future__ import annotations

import fnmatch
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from consumer.edge.alert import Alert, AlertDecoder
from consumer.edge.events import EventDecoder, EventUpdate
from consumer.edge.kafka import base_config, make_consumer
from consumer.edge.opinions import agreement
from consumer.edge.reach import BrokerUnreachableError, describe, reach
from consumer.edge.registry import RegistryClient
from consumer.exceptions import DecodeError, KafkaClientError, TopicLayoutError
from consumer.settings import KafkaSettings, SchemaRegistrySettings

Start = Literal["earliest", "latest", "committed"] | datetime
Item = TypeVar("Item", Alert, EventUpdate)


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts a subscriber wants; an unset criterion matches everything.

    ``star`` is a shell-style pattern on the star id (``"41*"``); ``sites`` keeps alerts whose
    triggering combination includes every one of them. ``unusual`` keeps alerts the novelty
    network flagged; ``min_agreement`` alerts whose second opinion agrees with LensNet at least
    this much (:func:`~consumer.edge.opinions.agreement`). Alerts without those records (schema
    1.0 writers, a daemon without the two models) fail both criteria when they are set.
    """

    min_score: float = 0.0
    label: str | None = None
    sites: tuple[str, ...] = ()
    field: int | None = None
    star: str | None = None
    unusual: bool = False
    min_agreement: float | None = None

    def __call__(self, alert: Alert) -> bool:
        if alert.lensnet.p_event < self.min_score:
            return False
        if self.label is not None and alert.lensnet.label != self.label.upper():
            return False
        if self.sites and not set(self.sites) <= set(alert.alertfinder.sites):
            return False
        if self.field is not None and alert.field != self.field:
            return False
        if self.unusual and (alert.novelty is None or not alert.novelty.unusual):
            return False
        if self.min_agreement is not None:
            agreed = agreement(alert.lensnet.p_event, alert.second_opinion)
            if agreed is None or agreed < self.min_agreement:
                return False
        return self.star is None or fnmatch.fnmatchcase(str(alert.star_id), self.star)


class Subscriber(Generic[Item]):
    """Iterates over the messages of an alert-like topic; see the module docstring."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        decode: Callable[[bytes, Any], Item],
        *,
        group_id: str | None = None,
        start: Start = "committed",
        stop_at_end: bool = False,
        poll_timeout_s: float = 1.0,
        topic_setting: str | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.start = start
        self.stop_at_end = stop_at_end
        self.poll_timeout_s = poll_timeout_s
        #: The setting that names ``topic``, for the error when it does not exist.
        self.topic_setting = topic_setting
        self.decode: Callable[[bytes, Any], Item] = decode  # raises DecodeError
        self._reached = False
        self._brokers_down_since: float | None = None
        self.skipped: list[tuple[int, int, str]] = []  # (partition, offset, why) undecodable
        self._positions: dict[int, tuple[int, int]] = {}  # id(item) -> (partition, offset)
        self._assigned = False
        self._ends: dict[int, int] = {}
        self._config = base_config(kafka)
        self._config.update(
            {
                "group.id": group_id or f"lensnet-subscriber-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "latest" if start == "latest" else "earliest",
                "enable.partition.eof": True,
                "error_cb": self._on_error,
            }
        )
        self._consumer: Consumer | None = None

    @property
    def consumer(self) -> Consumer:
        """The Kafka consumer, created (and subscribed) once the cluster answered."""
        if self._consumer is None:
            self._check_reachable()
            self._consumer = make_consumer(self._config)
            self._consumer.subscribe([self.topic], on_assign=self._on_assign)
        return self._consumer

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._brokers_down_since is None:
                self._brokers_down_since = time.monotonic()
        elif error.fatal():
            raise KafkaClientError.wrap("alert consumer failed (fatal)", error)

    def _check_reachable(self) -> None:
        """The cluster answers and the topic exists (once per subscriber)."""
        if self._reached:
            return
        metadata = reach(self.kafka)
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None:
            named = f" ({self.topic_setting})" if self.topic_setting else ""
            raise TopicLayoutError(
                f"no topic {self.topic}{named} at {self.kafka.bootstrap_servers}: has a daemon "
                "published alerts there (`lensnet run`, `make demo`)?"
            )
        self._reached = True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if isinstance(self.start, datetime):
            stamp = int(self.start.timestamp() * 1000)
            wanted = [TopicPartition(tp.topic, tp.partition, stamp) for tp in partitions]
            found = consumer.offsets_for_times(wanted, timeout=30)
            for tp, hit in zip(partitions, found, strict=True):
                tp.offset = hit.offset if hit.offset >= 0 else OFFSET_END
        elif self.start in ("earliest", "latest"):
            committed = consumer.committed(partitions, timeout=30)
            for tp, done in zip(partitions, committed, strict=True):
                if done.offset < 0:
                    tp.offset = OFFSET_BEGINNING if self.start == "earliest" else OFFSET_END
                else:
                    tp.offset = done.offset
        for tp in partitions:
            _, high = consumer.get_watermark_offsets(tp, timeout=30)
            self._ends[tp.partition] = high
        consumer.assign(partitions)
        self._assigned = True

    def __iter__(self) -> Iterator[Item]:
        at_end: set[int] = set()
        while True:
            messages = self.consumer.consume(100, self.poll_timeout_s)
            if messages:
                self._brokers_down_since = None
            elif self.stop_at_end:
                self._give_up_when_gone()
            message: Any
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                        continue
                    raise KafkaClientError.wrap("alert consumer failed", error)
                at_end.discard(message.partition())
                value: Any = message.value()
                headers: Any = message.headers()
                try:
                    item = self.decode(value, headers)
                except DecodeError as error:  # keep reading; report what was skipped
                    self.skipped.append((message.partition(), message.offset(), str(error)))
                    continue
                self._positions[id(item)] = (message.partition(), message.offset())
                yield item
            if self.stop_at_end and self._assigned and self._drained(at_end):
                return

    def _give_up_when_gone(self) -> None:
        """With ``stop_at_end``, a cluster gone for ``kafka.connect_timeout_s`` ends the read."""
        since = self._brokers_down_since
        if since is not None and time.monotonic() - since > self.kafka.connect_timeout_s:
            raise BrokerUnreachableError(
                f"lost Kafka at {describe(self.kafka)}: every broker down for "
                f"{self.kafka.connect_timeout_s:g} s while reading {self.topic}"
            )

    def _drained(self, at_end: set[int]) -> bool:
        assignment = self.consumer.assignment()
        if not assignment:
            return False
        positions = self.consumer.position(assignment)
        return all(
            tp.partition in at_end or tp.offset >= self._ends.get(tp.partition, 0)
            for tp in positions
        )

    def ack(self, item: Item) -> None:
        """Commit the message (and everything before it in its partition) for this group."""
        partition, offset = self._positions.pop(id(item))
        try:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, partition, offset + 1)], asynchronous=False
            )
        except KafkaException as error:
            raise KafkaClientError.wrap("cannot commit the acknowledged alert", error) from error

    def lag(self) -> dict[int, int]:
        """Offsets this group is behind, per partition of the alert topic: high watermark
        minus committed offset (the whole partition when nothing is committed). An upper
        bound on the unacknowledged alerts: each transaction's commit marker takes an offset."""
        metadata = self.consumer.list_topics(self.topic, timeout=30).topics[self.topic]
        parts = [TopicPartition(self.topic, p) for p in sorted(metadata.partitions)]
        committed = self.consumer.committed(parts, timeout=30)
        out = {}
        for tp in committed:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=30)
            out[tp.partition] = high - (tp.offset if tp.offset >= 0 else low)
        return out

    def close(self) -> None:
        """Leave the group (if it was joined)."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class AlertSubscriber(Subscriber[Alert]):
    """Iterates over alerts; see the module docstring. ``registry``: where alerts in the
    Confluent wire format find their schemas."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        registry: SchemaRegistrySettings | None = None,
        **options: Any,
    ) -> None:
        client = RegistryClient(registry) if registry is not None and registry.url else None
        super().__init__(kafka, topic, AlertDecoder(client=client).decode, **options)


class EventSubscriber(Subscriber[EventUpdate]):
    """Iterates over the events topic's updates (same options as :class:`AlertSubscriber`)."""

    def __init__(self, kafka: KafkaSettings, topic: str, **options: Any) -> None:
        super().__init__(kafka, topic, EventDecoder().decode, **options)
