"""Which stars already have a published alert: read back from the alert topic.

The alert topic is the record of what was published (read with ``read_committed``, so an
aborted transaction's alerts do not count). When the daemon takes a partition, its state comes
from a checkpoint that may predate the last commits, or from nothing at all (the partition
moved from another machine); the input replayed up to the committed offsets re-creates the
buffers exactly, but not which alerts went out, because evaluation windows can fall
differently across batches. So the alert-once rule takes its truth from here: every alert
carries its star in the key (:func:`consumer.edge.keys.star_key`) and its trigger time in the
:data:`TRIGGER_HEADER` header.

:class:`PublishedAlerts` keeps what it has read as a compacted index for the life of the
process: star id -> latest trigger HJD, and how far each alert partition has been read. Taking
partitions again (a rebalance, a rewind after an aborted transaction) reads only the alerts
published since the last time, not the whole history. Kafka cannot fetch keys without values,
so values are fetched, but never decoded; the first read of a process still reads the topic
from the start.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any, Final

import numpy as np
from confluent_kafka import TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from consumer.edge.kafka import base_config, make_consumer, watermarks
from consumer.edge.keys import partitions_for
from consumer.exceptions import KafkaClientError
from consumer.settings import KafkaSettings

TRIGGER_HEADER: Final = "lensnet.trigger_hjd"


class PublishedAlerts:
    """The committed alerts of one alert topic, read incrementally (see the module docstring).

    Parameters
    ----------
    kafka : connection settings.
    topic : the alert topic.
    retry_s : how long :meth:`read` retries while the broker is unreachable (e.g. restarting).
    timeout_s : longest one pass over the topic may take before it counts as a retriable error.
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
        #: Star id -> trigger HJD of its latest committed alert read so far.
        self.alerted: dict[int, float] = {}
        #: Alert partition -> next offset to read.
        self.read_to: dict[int, int] = {}

    def read(
        self, wanted: Iterable[int], photometry_partitions: int
    ) -> dict[int, dict[int, float]]:
        """For each photometry partition in ``wanted``: star id -> trigger HJD of its
        committed alerts (the latest when a star has several). Reads what was published
        since the last call first, retrying while the broker is unreachable."""
        out: dict[int, dict[int, float]] = {p: {} for p in set(wanted)}
        if not out:
            return out
        Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, KafkaClientError) and e.retriable),
            stop=stop_after_delay(self.retry_s),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            reraise=True,
        )(self.catch_up)
        stars = np.fromiter(self.alerted, dtype=np.int64, count=len(self.alerted))
        owners = partitions_for(stars, photometry_partitions)
        for star, owner in zip(stars.tolist(), owners.tolist(), strict=True):
            if owner in out:
                out[owner][star] = self.alerted[star]
        return out

    def catch_up(self) -> None:
        """Read the committed alerts published since the last pass, up to the high watermark
        every alert partition had when the pass began."""
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
                raise KafkaClientError(f"cannot read the alert topic {self.topic}", retriable=True)
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
                    star = int.from_bytes(message.key() or b"\0" * 8, "big", signed=True)
                    stamp = dict(message.headers() or []).get(TRIGGER_HEADER)
                    hjd = float(stamp) if stamp else 0.0
                    self.alerted[star] = max(self.alerted.get(star, hjd), hjd)
                # Transaction markers take offsets too; the position passes them.
                for tp in consumer.position([TopicPartition(self.topic, p) for p in pending]):
                    if tp.offset >= ends[tp.partition]:
                        pending.discard(tp.partition)
                        self.read_to[tp.partition] = tp.offset
        finally:
            consumer.close()


def published_alerts(
    kafka: KafkaSettings,
    topic: str,
    photometry_partitions: int,
    wanted: Iterable[int],
    timeout_s: float = 120.0,
) -> dict[int, dict[int, float]]:
    """For each photometry partition in ``wanted``: star id -> trigger HJD of its committed
    alerts (the latest when a star has several), read from the start of the topic once."""
    return PublishedAlerts(kafka, topic, timeout_s=timeout_s).read(wanted, photometry_partitions)
