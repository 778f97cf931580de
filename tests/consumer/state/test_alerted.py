"""Reading back which stars have a committed alert (the alert-once rule's source of truth)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from consumer.edge.keys import partition_for, star_key
from consumer.settings import Settings
from consumer.state.alerted import TRIGGER_HEADER, PublishedAlerts, published_alerts

pytestmark = pytest.mark.kafka


def test_only_committed_alerts_of_the_wanted_partitions_count(
    topics_factory: Callable[..., Settings],
) -> None:
    settings = topics_factory(partitions=4)
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "transactional.id": f"test-alerted-{uuid.uuid4().hex[:8]}",
        }
    )
    producer.init_transactions(30)
    stars = list(range(1, 41))

    def send(star: int, hjd: float) -> None:
        producer.produce(
            settings.topics.alerts,
            key=star_key(star),
            value=b"an alert",
            headers=[(TRIGGER_HEADER, repr(hjd).encode())],
        )

    producer.begin_transaction()
    for star in stars[:30]:
        send(star, 2_461_000.5)
    send(stars[0], 2_461_002.5)  # a later alert of the same star: the latest wins
    producer.commit_transaction(30)
    producer.begin_transaction()
    for star in stars[30:]:
        send(star, 2_461_001.5)
    producer.abort_transaction(30)  # never published

    wanted = {0, 2}
    found = published_alerts(settings.kafka, settings.topics.alerts, 4, wanted)
    assert set(found) == wanted
    for partition in wanted:
        expected = {s for s in stars[:30] if partition_for(s, 4) == partition}
        assert set(found[partition]) == expected
    owner = partition_for(stars[0], 4)
    if owner in wanted:
        assert found[owner][stars[0]] == 2_461_002.5
    assert published_alerts(settings.kafka, settings.topics.alerts, 4, []) == {}


def test_a_second_read_adds_only_what_was_published_since(
    topics_factory: Callable[..., Settings],
) -> None:
    """Taking partitions again reads on from where the last read stopped, and sees the same
    as a reader starting from the beginning."""
    settings = topics_factory(partitions=4)
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "transactional.id": f"test-alerted-{uuid.uuid4().hex[:8]}",
        }
    )
    producer.init_transactions(30)

    def publish(stars: range, hjd: float) -> None:
        producer.begin_transaction()
        for star in stars:
            producer.produce(
                settings.topics.alerts,
                key=star_key(star),
                value=b"an alert",
                headers=[(TRIGGER_HEADER, repr(hjd).encode())],
            )
        producer.commit_transaction(30)

    index = PublishedAlerts(settings.kafka, settings.topics.alerts)
    publish(range(1, 21), 2_461_000.5)
    first = index.read(range(4), 4)
    assert set().union(*first.values()) == set(range(1, 21))
    read_to = dict(index.reader.read_to)
    publish(range(15, 31), 2_461_003.5)  # five stars alert again, later
    second = index.read(range(4), 4)
    assert set().union(*second.values()) == set(range(1, 31))
    assert all(index.reader.read_to[p] > offset for p, offset in read_to.items())
    assert second == published_alerts(settings.kafka, settings.topics.alerts, 4, range(4))
    owner = partition_for(15, 4)
    assert second[owner][15] == 2_461_003.5
