"""Photometry producer: splits observations by partition and writes columnar batches.

Used by replay, the simulator's live mode and the tests. Each message holds one site's
observations of stars that all hash to the same partition (murmur2 of the star key, the Java
client's rule), at most ``ProducerSettings.batch_observations`` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumer.edge.kafka import make_admin, make_producer, producer_config
from consumer.edge.keys import partitions_for, star_key
from consumer.edge.photometry import Observations, PhotometryBatch, encode_batch
from consumer.edge.topics import check_copartitioning
from consumer.exceptions import KafkaClientError, TopicLayoutError
from consumer.settings import KafkaSettings, ProducerSettings, TopicSettings

#: Header holding the sender's sequence position of the last row in a message (decimal ASCII).
SEQUENCE_HEADER = "lensnet.seq"


class PhotometryProducer:
    """Produces :class:`Observations` of one site at a time to that site's photometry topic.

    The librdkafka client is created on first use. Call :meth:`flush` (or leave the ``with``
    block) to wait for delivery; any failed delivery raises :class:`KafkaClientError` there.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        producer: ProducerSettings,
        *,
        name: str = "",
    ) -> None:
        self._kafka = kafka
        self._topics = topics
        self._settings = producer
        self._name = name
        self._producer: Producer | None = None
        self._errors: list[str] = []
        self.messages_sent = 0
        self.observations_sent = 0

    def _client(self) -> Producer:
        if self._producer is None:
            partitions = check_copartitioning(make_admin(self._kafka), self._topics)
            if partitions != self._topics.partitions:
                raise TopicLayoutError(
                    f"photometry topics have {partitions} partitions but "
                    f"LENSNET_TOPICS__PARTITIONS={self._topics.partitions}"
                )
            self._producer = make_producer(producer_config(self._kafka, self._settings))
        return self._producer

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}[{message.partition()}]: {error.str()}")

    def send(
        self,
        site: str,
        observations: Observations,
        *,
        sequence: npt.NDArray[np.int64] | None = None,
        headers: Sequence[tuple[str, str | bytes | None]] = (),
    ) -> int:
        """Queue one site's observations; returns the number of messages queued.

        ``sequence`` (shape (N,), increasing along the rows of each partition) is a position in
        the caller's own global order; each message then carries the position of its last row
        in the :data:`SEQUENCE_HEADER` header, which is how replay resumes without duplicates.
        ``headers`` are added to every message.
        """
        producer = self._client()
        topic = self._topics.photometry(site)
        partitions = partitions_for(observations.star_id, self._topics.partitions)
        order = np.argsort(partitions, kind="stable")
        bounds = np.searchsorted(partitions[order], np.arange(self._topics.partitions + 1))
        chunk = self._settings.batch_observations
        queued = 0
        for partition in range(self._topics.partitions):
            rows = order[bounds[partition] : bounds[partition + 1]]
            for start in range(0, len(rows), chunk):
                taken = rows[start : start + chunk]
                part = observations.take(taken)
                stars = np.unique(part.star_id)
                key = star_key(int(stars[0])) if len(stars) == 1 else None
                value = encode_batch(PhotometryBatch(site, part, producer=self._name))
                message_headers: list[tuple[str, str | bytes | None]] = list(headers)
                if sequence is not None:
                    last = str(int(sequence[taken].max())).encode()
                    message_headers.append((SEQUENCE_HEADER, last))
                self._produce(producer, topic, value, key, partition, message_headers)
                queued += 1
                self.observations_sent += len(part)
        self.messages_sent += queued
        return queued

    def _produce(
        self,
        producer: Producer,
        topic: str,
        value: bytes,
        key: bytes | None,
        partition: int,
        headers: list[tuple[str, str | bytes | None]],
    ) -> None:
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=partition,
                    headers=headers or None,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain, then retry
            except KafkaException as error:
                raise KafkaClientError.wrap(
                    f"cannot produce to {topic}[{partition}]", error
                ) from error
            finally:
                producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for every queued message; raise if any was not delivered."""
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise KafkaClientError(
                f"{remaining} photometry messages undelivered after {timeout_s}s"
            )
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaClientError(f"{len(errors)} deliveries failed, first: {errors[0]}")

    def __enter__(self) -> PhotometryProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()

    def poll(self) -> None:
        """Serve delivery callbacks without blocking (call between sends on long runs)."""
        if self._producer is not None:
            self._producer.poll(0)

    def stats(self) -> dict[str, Any]:
        """Counts for logging: messages and observations queued so far."""
        return {"messages": self.messages_sent, "observations": self.observations_sent}
