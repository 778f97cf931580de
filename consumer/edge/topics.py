"""Topic layout: create the broker's topics and check co-partitioning.

A star's observations from the three sites arrive on the same partition number of the three
photometry topics, so those topics must have one partition count; the daemon refuses to start
when they disagree (:class:`TopicLayoutError`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.exceptions import KafkaClientError, TopicLayoutError
from consumer.settings import TopicSettings


@dataclass(frozen=True)
class TopicSpec:
    """A topic the broker needs: name, partitions, replication and topic configs."""

    name: str
    partitions: int
    #: None: the cluster's default (:func:`replication`).
    replication_factor: int | None
    config: dict[str, str] = field(default_factory=dict)
    min_insync_replicas: int | None = None

    def new_topic(self, brokers: int) -> NewTopic:
        """The creation request on a cluster of ``brokers`` brokers."""
        replicas, min_insync = replication(
            brokers, self.replication_factor, self.min_insync_replicas
        )
        config = {"min.insync.replicas": str(min_insync), **self.config}
        return NewTopic(self.name, self.partitions, replicas, config=config)


def replication(brokers: int, factor: int | None, min_insync: int | None) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of a topic on a cluster of ``brokers``: the
    settings where given; else 3 copies where there are three brokers or more (1 otherwise),
    of which 2 must hold a write when there are three (one broker may be down)."""
    factor = factor if factor is not None else (3 if brokers >= 3 else 1)
    min_insync = min_insync if min_insync is not None else (2 if factor >= 3 else 1)
    return factor, min_insync


def required_topics(topics: TopicSettings) -> list[TopicSpec]:
    """The three photometry topics, the alert, events and dead-letter topics."""
    photometry_config = {
        "retention.ms": str(topics.photometry_retention_ms),
        "max.message.bytes": "1048576",
    }
    specs = [
        TopicSpec(
            name,
            topics.partitions,
            topics.replication_factor,
            photometry_config,
            topics.min_insync_replicas,
        )
        for name in topics.photometry_topics()
    ]
    for name in (topics.alerts, topics.dead_letter, topics.events):
        specs.append(
            TopicSpec(
                name,
                topics.alert_partitions,
                topics.replication_factor,
                {},
                topics.min_insync_replicas,
            )
        )
    return specs


def partition_counts(
    admin: AdminClient, names: list[str], timeout_s: float = 10.0
) -> dict[str, int]:
    """Partition count of each named topic that exists (absent names are left out)."""
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        raise KafkaClientError.wrap("cannot list topics", error) from error
    return {
        name: len(metadata.topics[name].partitions)
        for name in names
        if name in metadata.topics and metadata.topics[name].error is None
    }


def ensure_topics(admin: AdminClient, specs: list[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    Existing topics are left as they are (their partition count is checked by
    :func:`check_copartitioning`).
    """
    existing = partition_counts(admin, [spec.name for spec in specs], timeout_s)
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return []
    brokers = broker_count(admin, timeout_s)
    new = [spec.new_topic(brokers) for spec in missing]
    created = []
    for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as error:
            if error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another process won the race; fine
            raise KafkaClientError.wrap(f"cannot create topic {name}", error) from error
    wait_until_ready(admin, [topic.topic for topic in new], timeout_s)
    return created


def broker_count(admin: AdminClient, timeout_s: float = 10.0) -> int:
    """Brokers of the cluster, as its metadata lists them."""
    try:
        return len(admin.list_topics(timeout=timeout_s).brokers)
    except KafkaException as error:
        raise KafkaClientError.wrap("cannot list brokers", error) from error


def delete_topics(admin: AdminClient, names: list[str], timeout_s: float = 60.0) -> list[str]:
    """Delete those of ``names`` that exist, with their data, and wait until the cluster no longer
    lists them (so that creating them again starts them empty); returns the names deleted."""
    present = list(partition_counts(admin, names, timeout_s))
    if not present:
        return []
    for name, future in admin.delete_topics(present, operation_timeout=timeout_s).items():
        try:
            future.result()
        except KafkaException as error:
            if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaClientError.wrap(f"cannot delete topic {name}", error) from error
    deadline = time.monotonic() + timeout_s
    while partition_counts(admin, present, timeout_s):
        if time.monotonic() > deadline:
            raise KafkaClientError(f"topics deleted but still listed after {timeout_s}s: {present}")
        time.sleep(0.1)
    return present


def wait_until_ready(
    admin: AdminClient, names: list[str], timeout_s: float, consecutive: int = 5
) -> None:
    """Block until every partition of every topic has a leader, seen by ``consecutive``
    metadata requests in a row.

    Creation returns before the brokers' metadata knows the topic and before leaders are
    elected; producing or querying offsets in that window fails with retriable errors. Each
    metadata request goes to any broker, and on a cluster each broker learns new topics from
    the controller in its own time: one broker listing them does not mean the next request
    will (`lensnet topics create` then reported its own topics missing on 3 brokers).
    """
    deadline = time.monotonic() + timeout_s
    seen = 0
    while True:
        try:
            topics = admin.list_topics(timeout=timeout_s).topics
        except KafkaException as error:
            raise KafkaClientError.wrap("cannot list topics", error) from error
        unready = [
            name
            for name in names
            if name not in topics
            or topics[name].error is not None
            or any(p.leader < 0 for p in topics[name].partitions.values())
        ]
        seen = 0 if unready else seen + 1
        if seen >= consecutive:
            return
        if time.monotonic() > deadline:
            raise KafkaClientError(f"topics created but not ready after {timeout_s}s: {unready}")
        time.sleep(0.1)


def check_copartitioning(admin: AdminClient, topics: TopicSettings) -> int:
    """Partition count shared by the three photometry topics; raises when they disagree."""
    names = list(topics.photometry_topics())
    counts = partition_counts(admin, names)
    missing = [name for name in names if name not in counts]
    if missing:
        raise TopicLayoutError(
            f"photometry topics missing: {', '.join(missing)} "
            "(create them with `lensnet topics create`)"
        )
    if len(set(counts.values())) != 1:
        found = ", ".join(f"{name}={count}" for name, count in counts.items())
        raise TopicLayoutError(
            f"photometry topics must share one partition count for co-partitioning, found {found}"
        )
    return next(iter(counts.values()))
