"""Shared fixtures: a real Kafka broker for the session and factories for its clients.

The broker is Apache Kafka from Maven Central jars (deploy/local-kafka/kafka.sh) in KRaft mode
on 127.0.0.1, started once per test session, unless KAFKA_BOOTSTRAP_SERVERS names an existing
cluster. Tests that use it are marked ``kafka``; unit tests never touch the network.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from consumer.edge.kafka import consumer_config, make_admin, make_consumer
from consumer.edge.topics import ensure_topics, required_topics
from consumer.settings import (
    ConsumerSettings,
    KafkaSettings,
    ProducerSettings,
    Settings,
    TopicSettings,
)

REPO = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO / "deploy" / "local-kafka" / "kafka.sh"
REGISTRY_SH = REPO / "deploy" / "local-registry" / "registry.sh"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """bootstrap.servers of a running broker: an existing one, or a local one for the session."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    state = tmp_path_factory.mktemp("kafka")
    started = subprocess.run(
        [str(KAFKA_SH), "start", str(state)], capture_output=True, text=True, timeout=300
    )
    if started.returncode != 0:
        pytest.fail(f"local Kafka did not start:\n{started.stderr}\n{started.stdout}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(state)], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Confluent API URL of a schema registry: SCHEMA_REGISTRY_URL, or Apicurio Registry
    (deploy/local-registry) started for the session on first use."""
    existing = os.environ.get("SCHEMA_REGISTRY_URL")
    if existing:
        yield existing
        return
    state = tmp_path_factory.mktemp("registry")
    started = subprocess.run(
        [str(REGISTRY_SH), "start", str(state)], capture_output=True, text=True, timeout=600
    )
    if started.returncode != 0:
        pytest.fail(f"local schema registry did not start:\n{started.stderr}\n{started.stdout}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(REGISTRY_SH), "stop", str(state)], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Connection settings for the session's broker."""
    return KafkaSettings(bootstrap_servers=kafka_bootstrap)


@pytest.fixture(scope="session")
def admin(kafka_settings: KafkaSettings) -> AdminClient:
    """Admin client of the session's broker."""
    return make_admin(kafka_settings)


@pytest.fixture
def settings_factory(kafka_settings: KafkaSettings) -> Callable[..., Settings]:
    """Builds Settings against the session broker with fresh, unique topic names."""

    def build(partitions: int = 4, **overrides: Any) -> Settings:
        suffix = uuid.uuid4().hex[:8]
        topics = TopicSettings(
            photometry_prefix=f"test-{suffix}.photometry.",
            alerts=f"test-{suffix}.alerts",
            dead_letter=f"test-{suffix}.deadletter",
            partitions=partitions,
            alert_partitions=2,
        )
        consumer = ConsumerSettings(group_id=f"test-{suffix}", session_timeout_ms=6000)
        fields: dict[str, Any] = {
            "kafka": kafka_settings,
            "topics": topics,
            "consumer": consumer,
            "producer": ProducerSettings(linger_ms=5),
        }
        fields.update(overrides)
        return Settings(**fields)

    return build


@pytest.fixture
def topics_factory(
    admin: AdminClient, settings_factory: Callable[..., Settings]
) -> Callable[..., Settings]:
    """Builds Settings like ``settings_factory`` and creates their topics on the broker."""

    def build(partitions: int = 4, **overrides: Any) -> Settings:
        settings = settings_factory(partitions, **overrides)
        ensure_topics(admin, required_topics(settings.topics))
        return settings

    return build


@pytest.fixture
def consumer_factory(kafka_settings: KafkaSettings) -> Iterator[Callable[..., Consumer]]:
    """Builds consumers in a fresh random group; all are closed after the test."""
    made: list[Consumer] = []

    def build(group_id: str | None = None, **overrides: Any) -> Consumer:
        config = consumer_config(
            kafka_settings,
            ConsumerSettings(session_timeout_ms=6000),
            group_id=group_id or f"test-{uuid.uuid4().hex[:12]}",
        )
        config.update(overrides)
        consumer = make_consumer(config)
        made.append(consumer)
        return consumer

    yield build
    for consumer in made:
        consumer.close()
