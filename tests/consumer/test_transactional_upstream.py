"""Photometry written by a transactional producer: every partition ends in a commit marker the
consumer never delivers, and an aborted transaction leaves records a read_committed consumer
skips. The daemon must still count each partition as read to the end (the aligner takes the
consumer's position past the markers), stop with ``stop_at_end``, commit the offsets past the
last marker, and never see the aborted rows."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.edge.kafka import make_producer, producer_config
from consumer.edge.produce import PhotometryProducer
from consumer.settings import ProducerSettings, Settings
from tests.consumer.test_daemon import (
    FLAT_IDS,
    Running,
    daemon_settings,
    ends,
    flat_stars,
    wait_until,
)

pytestmark = pytest.mark.kafka


class TransactionalReplay(PhotometryProducer):
    """The photometry producer with a transactional.id, in one open transaction at a time."""

    def _client(self) -> Producer:
        if self._producer is None:
            config = producer_config(
                self._kafka, self._settings, transactional_id=f"replay-{uuid.uuid4().hex[:8]}"
            )
            self._producer = make_producer(config)
            self._producer.init_transactions(30)
            self._producer.begin_transaction()
        return self._producer

    def end(self, *, commit: bool) -> None:
        """Deliver what was sent, then commit or abort the transaction and open the next."""
        self.flush()
        producer = self._client()
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
        producer.begin_transaction()


def test_partitions_ending_in_commit_markers_are_read_to_the_end(
    topics_factory: Callable[..., Settings],
    consumer_factory: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    settings = topics_factory(partitions=2, producer=ProducerSettings(linger_ms=5))
    replay = TransactionalReplay(settings.kafka, settings.topics, settings.producer)
    for site, observations in flat_stars().items():
        half = len(observations) // 2
        replay.send(site, observations.take(slice(0, half)))
        replay.end(commit=True)  # a commit marker in the middle of the partition
        aborted = dataclasses.replace(observations, star_id=observations.star_id + 1000)
        replay.send(site, aborted)
        replay.end(commit=False)  # records in the log, then an abort marker
        replay.send(site, observations.take(slice(half, None)))
        replay.end(commit=True)  # and a commit marker at the end
    end = ends(settings, consumer_factory())
    configured = daemon_settings(settings, tmp_path / "state")
    configured = configured.model_copy(
        update={"daemon": configured.daemon.model_copy(update={"stop_at_end": True})}
    )
    running = Running(configured)
    wait_until(lambda: not running.thread.is_alive(), 120, "the daemon to stop at the end")
    running.stop()
    stored = {int(star) for store in running.stores.values() for star in store.star_ids}
    assert stored == set(FLAT_IDS)  # the aborted rows never reached the state
    group = consumer_factory(group_id=settings.consumer.group_id)
    committed = group.committed([TopicPartition(t, p) for t, p in end], timeout=10)
    # Committed past the last commit marker: the high watermark of every partition.
    assert {(tp.topic, tp.partition): tp.offset for tp in committed} == end
