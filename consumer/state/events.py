"""What was last published about each followed event: read back from the events topic.

The update rule (:mod:`consumer.pointlens.updates`) compares a new fit with the star's last
published update, and numbers updates per event. Like the alert-once rule
(:mod:`consumer.state.alerted`), it takes its truth from the topic: on assignment the committed
updates (``read_committed``: an aborted transaction's updates do not count) of the partition's
stars are read back, the last one per star kept. :class:`PublishedEvents` reads incrementally:
a later assignment (a rebalance, a rewind) reads only what was published since.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from consumer.edge.events import EventDecoder, EventUpdate
from consumer.edge.kafka import base_config, make_consumer, watermarks
from consumer.edge.keys import partitions_for
from consumer.exceptions import DecodeError, KafkaClientError
from consumer.pointlens.updates import Published
from consumer.settings import KafkaSettings


@dataclass(frozen=True)
class FollowedEvent:
    """A followed event: its id, its alert time and its last published update."""

    event_id: str
    alert_hjd: float
    last: Published


def followed_from_update(update: EventUpdate) -> FollowedEvent:
    """The ledger entry an update leaves."""
    model = update.event_model
    return FollowedEvent(
        event_id=update.event_id,
        alert_hjd=update.alert_hjd,
        last=Published(
            sequence=update.sequence,
            kind=update.kind.lower(),
            as_of=model.fitted_to_hjd,
            peak_hjd=model.peak_hjd,
            peak_hjd_err=math.nan if model.peak_hjd_err is None else model.peak_hjd_err,
            anomalous=model.anomaly is not None,
        ),
    )


class PublishedEvents:
    """The committed updates of one events topic, read incrementally.

    Parameters
    ----------
    kafka : connection settings.
    topic : the events topic.
    retry_s : how long :meth:`read` retries while the broker is unreachable.
    timeout_s : longest one pass over the topic may take before it counts as retriable.
    group : prefix of the throw-away consumer group of each pass (``<group>-readback-<id>``):
        librdkafka looks the group's coordinator up even for a reader that only assigns, so a
        login with ACLs needs the group allowed; the daemon passes its own group's name,
        which its ACLs grant as a prefix.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        retry_s: float = 0.0,
        timeout_s: float = 120.0,
        group: str = "lensnet",
    ) -> None:
        self.group = group
        self.kafka = kafka
        self.topic = topic
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.decoder = EventDecoder()
        #: Star id -> its latest update read so far.
        self.latest: dict[int, FollowedEvent] = {}
        #: Events partition -> next offset to read.
        self.read_to: dict[int, int] = {}
        #: Updates that could not be decoded (skipped).
        self.skipped = 0

    def read(
        self, wanted: Iterable[int], photometry_partitions: int
    ) -> dict[int, dict[int, FollowedEvent]]:
        """For each photometry partition in ``wanted``: star id -> its last committed update.
        Reads what was published since the last call first, retrying while unreachable."""
        out: dict[int, dict[int, FollowedEvent]] = {p: {} for p in set(wanted)}
        if not out:
            return out
        Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, KafkaClientError) and e.retriable),
            stop=stop_after_delay(self.retry_s),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            reraise=True,
        )(self.catch_up)
        stars = np.fromiter(self.latest, dtype=np.int64, count=len(self.latest))
        owners = partitions_for(stars, photometry_partitions)
        for star, owner in zip(stars.tolist(), owners.tolist(), strict=True):
            if owner in out:
                out[owner][star] = self.latest[star]
        return out

    def catch_up(self) -> None:
        """Read the committed updates published since the last pass, up to the high watermark
        every partition had when the pass began."""
        config = base_config(self.kafka)
        config.update(
            {
                "group.id": f"{self.group}-readback-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        consumer = make_consumer(config)
        try:
            metadata = consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
            if metadata is None or metadata.error is not None:
                raise KafkaClientError(f"cannot read the events topic {self.topic}", retriable=True)
            ends = {
                p: watermarks(consumer, TopicPartition(self.topic, p))[1]
                for p in sorted(metadata.partitions)
            }
            pending = {p for p, end in ends.items() if end > self.read_to.get(p, 0)}
            if not pending:
                return
            consumer.assign(
                [TopicPartition(self.topic, p, self.read_to.get(p, 0)) for p in sorted(pending)]
            )
            deadline = time.monotonic() + self.timeout_s
            while pending:
                if time.monotonic() > deadline:
                    raise KafkaClientError(
                        f"reading {self.topic} back took longer than {self.timeout_s} s",
                        retriable=True,
                    )
                message: Any
                for message in consumer.consume(500, 0.5):
                    if message.error() is not None:  # e.g. not authorised to read it back
                        raise KafkaClientError.wrap(
                            f"cannot read {self.topic} back", message.error()
                        )
                    try:
                        update = self.decoder.decode(message.value(), message.headers())
                    except DecodeError:
                        self.skipped += 1
                        continue
                    known = self.latest.get(update.star_id)
                    if known is None or update.sequence >= known.last.sequence:
                        self.latest[update.star_id] = followed_from_update(update)
                for tp in consumer.position([TopicPartition(self.topic, p) for p in pending]):
                    if tp.offset >= ends[tp.partition]:
                        pending.discard(tp.partition)
                        self.read_to[tp.partition] = tp.offset
        finally:
            consumer.close()
