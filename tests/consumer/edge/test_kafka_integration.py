"""Against the real local broker: photometry out to three per-site topics, back in decoded."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.constants import SITES
from consumer.edge.kafka import make_producer, producer_config
from consumer.edge.keys import partition_for, star_key
from consumer.edge.photometry import Observations, PhotometryDecoder
from consumer.edge.produce import PhotometryProducer
from consumer.edge.topics import (
    check_copartitioning,
    ensure_topics,
    required_topics,
    wait_until_ready,
)
from consumer.exceptions import TopicLayoutError
from consumer.settings import KafkaSettings, ProducerSettings, Settings
from tests.consumer.edge.test_photometry import make_observations

pytestmark = pytest.mark.kafka


def consume_all(consumer: Consumer, expected_messages: int, timeout_s: float = 60) -> list[Message]:
    """Batched consume until ``expected_messages`` arrived (or fail after ``timeout_s``)."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < expected_messages and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=500, timeout=0.5):
            assert message.error() is None, message.error()
            messages.append(message)
    assert len(messages) == expected_messages
    return messages


def test_photometry_round_trip_keeps_each_star_on_one_partition(
    topics_factory: Callable[..., Settings], consumer_factory: Callable[..., Consumer]
) -> None:
    settings = topics_factory(partitions=4)
    n_stars, epochs = 300, 5
    star_ids = np.random.default_rng(7).choice(10**9, n_stars, replace=False)
    sent: dict[str, Observations] = {}
    producer = PhotometryProducer(
        settings.kafka,
        settings.topics,
        ProducerSettings(linger_ms=5, batch_observations=256),
        name="test",
    )
    with producer:
        for i, site in enumerate(SITES):
            obs = make_observations(n_stars * epochs, seed=i)
            columns = {name: getattr(obs, name) for name in obs.__dataclass_fields__}
            columns["star_id"] = np.repeat(star_ids, epochs)
            sent[site] = Observations.from_columns(**columns)
            producer.send(site, sent[site])
    assert producer.observations_sent == 3 * n_stars * epochs

    consumer = consumer_factory()
    consumer.subscribe(list(settings.topics.photometry_topics()))
    messages = consume_all(consumer, producer.messages_sent)

    decoder = PhotometryDecoder()
    partitions_of: dict[int, set[int]] = defaultdict(set)
    received: dict[str, list[Observations]] = defaultdict(list)
    for message in messages:
        value = message.value()
        assert value is not None
        batch = decoder.decode(value)
        assert message.topic() == settings.topics.photometry(batch.site)
        received[batch.site].append(batch.observations)
        partition = message.partition()
        assert partition is not None
        for star_id in np.unique(batch.observations.star_id):
            partitions_of[int(star_id)].add(partition)

    assert set(partitions_of) == {int(s) for s in star_ids}
    for star_id, partitions in partitions_of.items():
        assert partitions == {partition_for(star_id, 4)}, star_id
    for site in SITES:
        got = Observations.concat(received[site])
        order_sent = np.lexsort((sent[site].hjd, sent[site].star_id))
        order_got = np.lexsort((got.hjd, got.star_id))
        for name in got.__dataclass_fields__:
            np.testing.assert_array_equal(
                getattr(got, name)[order_got], getattr(sent[site], name)[order_sent], err_msg=name
            )


def test_librdkafka_murmur2_partitioner_agrees_with_ours(
    topics_factory: Callable[..., Settings], kafka_settings: KafkaSettings
) -> None:
    settings = topics_factory(partitions=7)
    topic = settings.topics.photometry("CTIO")
    producer: Producer = make_producer(producer_config(kafka_settings, ProducerSettings()))
    delivered: dict[int, int] = {}

    def on_delivery(error: object, message: Message) -> None:
        assert error is None
        key = message.key()
        assert key is not None
        partition = message.partition()
        assert partition is not None
        delivered[int.from_bytes(key, "big", signed=True)] = partition

    star_ids = [0, 1, -1, 42, 2**40 + 3, 2**63 - 1, *range(1000, 1200)]
    for star_id in star_ids:
        producer.produce(topic, value=b"x", key=star_key(star_id), on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert delivered == {s: partition_for(s, 7) for s in star_ids}


def test_range_assignor_keeps_a_partition_number_on_one_member(
    topics_factory: Callable[..., Settings], consumer_factory: Callable[..., Consumer]
) -> None:
    settings = topics_factory(partitions=6)
    topics = list(settings.topics.photometry_topics())
    group = f"test-{uuid.uuid4().hex[:8]}"
    members = [consumer_factory(group_id=group) for _ in range(2)]
    for member in members:
        member.subscribe(topics)
    deadline = time.monotonic() + 60
    assignments: list[list[TopicPartition]] = [[], []]
    while time.monotonic() < deadline:
        for i, member in enumerate(members):
            member.poll(0.2)
            assignments[i] = member.assignment()
        if sum(len(a) for a in assignments) == 18 and all(assignments):
            break
    assert sum(len(a) for a in assignments) == 18
    numbers = []
    for assignment in assignments:
        by_topic: dict[str, set[int]] = defaultdict(set)
        for tp in assignment:
            by_topic[tp.topic].add(tp.partition)
        assert set(by_topic) == set(topics)
        (same,) = {frozenset(p) for p in by_topic.values()}
        numbers.append(same)
    assert numbers[0].isdisjoint(numbers[1])
    assert numbers[0] | numbers[1] == set(range(6))


def test_copartitioning_check_refuses_disagreeing_topics(
    admin: AdminClient, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(partitions=3)
    ctio, saao, sso = settings.topics.photometry_topics()
    with pytest.raises(TopicLayoutError, match="missing"):
        check_copartitioning(admin, settings.topics)
    futures = admin.create_topics([NewTopic(ctio, 3, 1), NewTopic(saao, 3, 1), NewTopic(sso, 5, 1)])
    for future in futures.values():
        future.result()
    wait_until_ready(admin, [ctio, saao, sso], timeout_s=30)
    with pytest.raises(TopicLayoutError, match=f"{sso}=5"):
        check_copartitioning(admin, settings.topics)


def test_ensure_topics_is_idempotent(
    admin: AdminClient, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(partitions=2)
    specs = required_topics(settings.topics)
    assert sorted(ensure_topics(admin, specs)) == sorted(spec.name for spec in specs)
    assert ensure_topics(admin, specs) == []
    assert check_copartitioning(admin, settings.topics) == 2
