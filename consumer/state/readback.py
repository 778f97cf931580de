"""Reading back what the daemon published: a topic's committed records, incrementally.

The alert-once rule (:mod:`consumer.state.alerted`) and the event-update ledger
(:mod:`consumer.state.events`) take their truth from the topics the daemon writes, read with
``read_committed`` (an aborted transaction's records do not count). :class:`TopicReadBack`
is the reading both share: each pass reads, from where the previous one stopped, up to the
high watermark every partition had when the pass began, and hands each record to the caller;
the caller keeps its own compacted index. Records are fetched whole (Kafka cannot fetch keys
alone) and handed over undecoded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from consumer.edge.kafka import base_config, make_consumer, watermarks
from consumer.exceptions import KafkaClientError
from consumer.settings import KafkaSettings


class TopicReadBack:
    """The committed records of one topic, read incrementally.

    Parameters
    ----------
    kafka : connection settings.
    topic : the topic to read back.
    retry_s : how long :meth:`catch_up` retries while the broker is unreachable (restarting).
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
        self.kafka = kafka
        self.topic = topic
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.group = group
        #: Partition -> next offset to read.
        self.read_to: dict[int, int] = {}

    def catch_up(self, take: Callable[[Any], None]) -> None:
        """Hand every committed record published since the last pass to ``take`` (a
        ``confluent_kafka.Message``), retrying retriable errors for ``retry_s``."""
        Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, KafkaClientError) and e.retriable),
            stop=stop_after_delay(self.retry_s),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            reraise=True,
        )(self._pass, take)

    def _pass(self, take: Callable[[Any], None]) -> None:
        """One pass: up to the high watermark every partition had when it began."""
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
                raise KafkaClientError(f"cannot read the topic {self.topic}", retriable=True)
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
                    take(message)
                # Transaction markers take offsets too; the position passes them.
                for tp in consumer.position([TopicPartition(self.topic, p) for p in pending]):
                    if tp.offset >= ends[tp.partition]:
                        pending.discard(tp.partition)
                        self.read_to[tp.partition] = tp.offset
        finally:
            consumer.close()
