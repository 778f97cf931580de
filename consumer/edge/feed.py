"""The photometry consumer as the loop sees it: batches of usable messages, where each
topic-partition's log ends, and the aligner's view of the partitions it reads.

:class:`Feed` wraps the confluent-kafka consumer and the
:class:`~consumer.pipeline.align.Aligner` that merges what it delivers: opening the partitions
just assigned (or rewound) at their start offsets, forgetting those revoked or lost (and
resuming what was paused for them: a pause would outlive the assignment), pausing the
topic-partitions the aligner holds too many messages of and resuming them once drained, and
telling it the consumer's positions (which move past transaction markers without a message).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from consumer.edge.kafka import usable
from consumer.pipeline.align import Aligner


class Feed:
    """The consumer and the aligner of one daemon."""

    def __init__(self, consumer: Consumer, aligner: Aligner, log: Any) -> None:
        self.consumer = consumer
        self.aligner = aligner
        self.log = log

    def consume(self, messages: int, timeout_s: float) -> list[Any]:
        """Up to ``messages`` messages, without the error events (logged): those waiting
        now, or else the first to arrive within ``timeout_s`` and any that came with it.

        ``consume(n, timeout)`` alone would wait out the timeout unless ``n`` messages come:
        at survey pace that is the whole timeout added to every observation's latency."""
        batch = self.consumer.consume(messages, 0)
        if not batch:
            batch = self.consumer.consume(1, timeout_s)
            if batch and messages > 1:
                batch += self.consumer.consume(messages - 1, 0)
        return [m for m in batch if usable(m, self.log)]

    def high(self, topic: str, partition: int) -> int:
        """High watermark of the consumer's last fetch response (negative: none yet). A fresh
        ListOffsets request would queue behind the fetch long-poll (~0.5 s each)."""
        tp = TopicPartition(topic, partition)
        return int(self.consumer.get_watermark_offsets(tp, cached=True)[1])

    def positions(self) -> list[tuple[str, int, int]]:
        """The consumer's position in every topic-partition the aligner tracks (local, no
        request): past a transaction's control marker the aligner may commit although no
        message came (:meth:`~consumer.pipeline.align.Aligner.advance`)."""
        tracked = [TopicPartition(t, p) for t, p in self.aligner.fetched]
        if not tracked:
            return []
        return [(tp.topic, tp.partition, tp.offset) for tp in self.consumer.position(tracked)]

    def caught_up(self, partition: int) -> bool:
        """The partition has read everything there is, and the aligner released it all."""
        return self.aligner.caught_up(partition, self.high)

    def assign(self, assigned: list[TopicPartition], starts: dict[int, dict[str, int]]) -> None:
        """Read ``assigned`` from ``starts`` (partition -> topic -> offset; the beginning where
        none), the aligner merging them."""
        self.open(starts)
        for tp in assigned:
            tp.offset = starts.get(tp.partition, {}).get(tp.topic, OFFSET_BEGINNING)
        self.consumer.assign(assigned)

    def open(self, starts: dict[int, dict[str, int]]) -> None:
        """Have the aligner merge the partitions just opened, read from ``starts`` on."""
        for partition, start in starts.items():
            self.aligner.open(partition, start)

    def let_go(self, partition: int) -> None:
        """Forget the messages held for ``partition`` and resume what was paused for it."""
        paused = self.aligner.drop(partition)
        if paused:
            try:
                self.consumer.resume([TopicPartition(t, p) for t, p in paused])
            except Exception as error:  # librdkafka raises KafkaException after fatal errors
                self.log.warning("cannot resume partitions cleanly", error=str(error))

    def flow(self) -> None:
        """Pause topic-partitions the aligner holds too much of; resume drained ones."""
        pause, resume = self.aligner.flow()
        if pause:
            self.consumer.pause([TopicPartition(t, p) for t, p in pause])
        if resume:
            self.consumer.resume([TopicPartition(t, p) for t, p in resume])
