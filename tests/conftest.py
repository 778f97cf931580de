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
from dataclasses import dataclass
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


def start_local_kafka(directory: Path, *options: str, env: dict[str, str] | None = None) -> str:
    """``kafka.sh start OPTIONS DIRECTORY``; its bootstrap servers (the test fails otherwise)."""
    started = subprocess.run(
        [str(KAFKA_SH), "start", *options, str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if started.returncode != 0:
        pytest.fail(f"local Kafka ({' '.join(options)}) did not start:\n{started.stderr}")
    return started.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class LocalCluster:
    """A three-broker cluster of this session (kafka.sh --brokers 3): nodes 1, 2, 3."""

    directory: Path
    bootstrap: str

    def node(self, command: str, node: int) -> None:
        """``kafka.sh COMMAND --node NODE``: stop, kill or restart one broker."""
        done = subprocess.run(
            [str(KAFKA_SH), command, "--node", str(node), str(self.directory)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr

    @property
    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three brokers (each also a controller voter) started on first use for the session."""
    directory = tmp_path_factory.mktemp("kafka-cluster")
    bootstrap = start_local_kafka(directory, "--brokers", "3")
    try:
        yield LocalCluster(directory, bootstrap)
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(directory)], capture_output=True, timeout=120)


#: Prefixes of every name the SASL_SSL broker's ACLs grant (kafka.sh reads them at start);
#: each test adds a suffix of its own.
SECURE_NAMES = {
    "LENSNET_TOPICS__PHOTOMETRY_PREFIX": "sasl.photometry.",
    "LENSNET_TOPICS__ALERTS": "sasl.alerts",
    "LENSNET_TOPICS__DEAD_LETTER": "sasl.deadletter",
    "LENSNET_TOPICS__EVENTS": "sasl.events",
    "LENSNET_CONSUMER__GROUP_ID": "sasl-daemon",
}


@dataclass(frozen=True)
class SecureBroker:
    """A broker of this session with SASL_SSL, SCRAM-SHA-512 users and ACLs (kafka.sh
    --security sasl_ssl): admin, lensnet (the daemon), replay and reader."""

    directory: Path
    bootstrap: str

    def secrets(self, user: str) -> Path:
        """The user's secrets folder (``lensnet --secrets-dir``)."""
        return self.directory / "users" / user

    def password(self, user: str) -> str:
        return (self.secrets(user) / "lensnet_kafka__sasl_password").read_text().strip()

    @property
    def ca(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    def env(self, user: str) -> dict[str, str]:
        """LENSNET_KAFKA__* variables of ``user`` except the password (in its secrets folder)."""
        lines = (self.directory / "users" / f"{user}.env").read_text().splitlines()
        variables = dict(line.split("=", 1) for line in lines if line)
        return {**variables, "LENSNET_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap}

    def settings(self, user: str, **overrides: Any) -> KafkaSettings:
        fields: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password": self.password(user),
            "ssl_ca_location": self.ca,
        }
        fields.update(overrides)
        return KafkaSettings(**fields)


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """A SASL_SSL broker started on first use for the session."""
    directory = tmp_path_factory.mktemp("kafka-sasl-ssl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
    bootstrap = start_local_kafka(directory, "--security", "sasl_ssl", env={**env, **SECURE_NAMES})
    try:
        yield SecureBroker(directory, bootstrap)
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(directory)], capture_output=True, timeout=120)


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
            events=f"test-{suffix}.events",
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
