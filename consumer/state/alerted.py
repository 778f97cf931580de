"""Which stars already have a published alert: read back from the alert topic.

The alert topic is the record of what was published (read with ``read_committed``, so an
aborted transaction's alerts do not count). When the daemon takes a partition, its state comes
from a checkpoint that may predate the last commits, or from nothing at all (the partition
moved from another machine); the input replayed up to the committed offsets re-creates the
buffers exactly, but not which alerts went out, because evaluation windows can fall
differently across batches. So the alert-once rule takes its truth from here: every alert
carries its star in the key (:func:`consumer.edge.keys.star_key`) and its trigger time in the
:data:`TRIGGER_HEADER` header, and the stars of the partitions being taken are collected by
reading keys and headers only (values are fetched but never decoded).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any, Final

from confluent_kafka import TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from consumer.edge.kafka import base_config, make_consumer, watermarks
from consumer.edge.keys import partition_for
from consumer.exceptions import KafkaClientError
from consumer.settings import KafkaSettings

TRIGGER_HEADER: Final = "lensnet.trigger_hjd"


class PublishedAlerts:
    """The alert topic as the alert-once rule reads it when partitions are taken.

    Reads are retried while the broker is unreachable (e.g. restarting), for up to
    ``retry_s`` seconds.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, retry_s: float) -> None:
        self.kafka = kafka
        self.topic = topic
        self.retry_s = retry_s

    def read(
        self, wanted: Iterable[int], photometry_partitions: int
    ) -> dict[int, dict[int, float]]:
        """For each photometry partition in ``wanted``: star id -> trigger HJD of its
        committed alerts (see :func:`published_alerts`)."""
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, KafkaClientError) and e.retriable),
            stop=stop_after_delay(self.retry_s),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            reraise=True,
        )
        return retrying(published_alerts, self.kafka, self.topic, photometry_partitions, wanted)


def published_alerts(
    kafka: KafkaSettings,
    topic: str,
    photometry_partitions: int,
    wanted: Iterable[int],
    timeout_s: float = 120.0,
) -> dict[int, dict[int, float]]:
    """For each photometry partition in ``wanted``: star id -> trigger HJD of its committed
    alerts (the latest when a star has several)."""
    wanted_set = set(wanted)
    out: dict[int, dict[int, float]] = {p: {} for p in wanted_set}
    if not wanted_set:
        return out
    config = base_config(kafka)
    config.update(
        {
            "group.id": f"lensnet-alerted-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer = make_consumer(config)
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise KafkaClientError(f"cannot read the alert topic {topic}", retriable=True)
        parts = [TopicPartition(topic, p, 0) for p in sorted(metadata.partitions)]
        ends = {tp.partition: watermarks(consumer, tp)[1] for tp in parts}
        pending = {p for p, end in ends.items() if end > 0}
        if not pending:
            return out
        consumer.assign([tp for tp in parts if tp.partition in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise KafkaClientError(
                    f"reading {topic} back took longer than {timeout_s} s", retriable=True
                )
            message: Any
            for message in consumer.consume(500, 0.5):
                if message.error() is not None:
                    continue
                star = int.from_bytes(message.key() or b"\0" * 8, "big", signed=True)
                partition = partition_for(star, photometry_partitions)
                if partition in wanted_set:
                    headers = dict(message.headers() or [])
                    stamp = headers.get(TRIGGER_HEADER)
                    hjd = float(stamp) if stamp else 0.0
                    out[partition][star] = max(out[partition].get(star, hjd), hjd)
            # Transaction markers take offsets too; the position passes them.
            for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
        return out
    finally:
        consumer.close()
