"""Reading back which stars have a committed alert (the alert-once rule's source of truth)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from consumer.edge.keys import partition_for, star_key
from consumer.settings import Settings
from consumer.state.alerted import TRIGGER_HEADER, published_alerts

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
