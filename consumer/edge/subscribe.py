"""Follow-up client: read alerts from the alert topic as typed :class:`~consumer.edge.alert.Alert`.

::

    with AlertSubscriber(settings.kafka, settings.topics.alerts, start="earliest",
                         stop_at_end=True) as alerts:
        for alert in alerts:
            schedule(alert)
            alerts.ack(alert)       # committed: a restarted subscriber resumes after it

Reads only committed transactions (``read_committed``), decodes with the schema each alert
was written with (known 1.x schemas, or the one its header carries), and never commits on its
own: :meth:`AlertSubscriber.ack` stores the alert's offset and commits it, so a subscriber that
crashes mid-alert sees that alert again. ``start`` is where a group without committed offsets
begins: ``"earliest"``, ``"latest"``, ``"committed"`` (committed offsets, else earliest), or a
:class:`datetime` (the first alert published at or after it, via offsets-for-times).
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from consumer.edge.alert import Alert, AlertDecoder
from consumer.edge.kafka import base_config, make_consumer
from consumer.exceptions import DecodeError, KafkaClientError
from consumer.settings import KafkaSettings

Start = Literal["earliest", "latest", "committed"] | datetime


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts a subscriber wants; an unset criterion matches everything.

    ``star`` is a shell-style pattern on the star id (``"41*"``); ``sites`` keeps alerts whose
    triggering combination includes every one of them.
    """

    min_score: float = 0.0
    label: str | None = None
    sites: tuple[str, ...] = ()
    field: int | None = None
    star: str | None = None

    def __call__(self, alert: Alert) -> bool:
        if alert.lensnet.p_event < self.min_score:
            return False
        if self.label is not None and alert.lensnet.label != self.label.upper():
            return False
        if self.sites and not set(self.sites) <= set(alert.alertfinder.sites):
            return False
        if self.field is not None and alert.field != self.field:
            return False
        return self.star is None or fnmatch.fnmatchcase(str(alert.star_id), self.star)


class AlertSubscriber:
    """Iterates over alerts; see the module docstring."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        group_id: str | None = None,
        start: Start = "committed",
        stop_at_end: bool = False,
        poll_timeout_s: float = 1.0,
    ) -> None:
        self.topic = topic
        self.start = start
        self.stop_at_end = stop_at_end
        self.poll_timeout_s = poll_timeout_s
        self.decoder = AlertDecoder()
        self.skipped: list[tuple[int, int, str]] = []  # (partition, offset, why) undecodable
        self._positions: dict[str, tuple[int, int]] = {}  # alert id -> (partition, offset)
        self._assigned = False
        self._ends: dict[int, int] = {}
        config = base_config(kafka)
        config.update(
            {
                "group.id": group_id or f"lensnet-subscriber-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "latest" if start == "latest" else "earliest",
                "enable.partition.eof": True,
            }
        )
        self.consumer: Consumer = make_consumer(config)
        self.consumer.subscribe([topic], on_assign=self._on_assign)

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

    def __iter__(self) -> Iterator[Alert]:
        at_end: set[int] = set()
        while True:
            messages = self.consumer.consume(100, self.poll_timeout_s)
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
                    alert = self.decoder.decode(value, headers)
                except DecodeError as error:  # keep reading; report what was skipped
                    self.skipped.append((message.partition(), message.offset(), str(error)))
                    continue
                self._positions[alert.alert_id] = (message.partition(), message.offset())
                yield alert
            if self.stop_at_end and self._assigned and self._drained(at_end):
                return

    def _drained(self, at_end: set[int]) -> bool:
        assignment = self.consumer.assignment()
        if not assignment:
            return False
        positions = self.consumer.position(assignment)
        return all(
            tp.partition in at_end or tp.offset >= self._ends.get(tp.partition, 0)
            for tp in positions
        )

    def ack(self, alert: Alert) -> None:
        """Commit the alert (and everything before it in its partition) for this group."""
        partition, offset = self._positions.pop(alert.alert_id)
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
        """Leave the group."""
        self.consumer.close()

    def __enter__(self) -> AlertSubscriber:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
