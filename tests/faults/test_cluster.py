"""A three-broker cluster (kafka.sh --brokers 3): topics replicated three times with
min.insync.replicas=2, and the leader of the busiest partitions killed with SIGKILL while the
season is replayed and the daemon works through it. Checked like every fault test
(``verify``): the uninterrupted reference's alerts exactly once, nothing else, equal states,
offsets committed to the end, no open transaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import ConfigResource

from consumer.edge.kafka import consumer_config, make_admin, make_consumer
from consumer.edge.topics import ensure_topics, required_topics
from consumer.seasons.replay import ReplayOptions, replay
from consumer.settings import ConsumerSettings, Settings, TopicSettings
from consumer.state.store import StarStore, StoreConfig
from tests.conftest import LocalCluster
from tests.consumer.test_daemon import (
    Running,
    caught_up,
    daemon_env,
    daemon_settings,
    ends,
    send_flat,
    wait_until,
)
from tests.faults.test_storms import SMALL_MESSAGES, season, verify  # noqa: F401

pytestmark = pytest.mark.kafka


def cluster_topics(cluster: LocalCluster, name: str) -> Settings:
    """Settings of fresh topics on the cluster, with the replication the cluster's size implies."""
    suffix = f"{name}-{uuid.uuid4().hex[:6]}"
    return Settings(
        kafka=cluster.settings,
        topics=TopicSettings(
            photometry_prefix=f"{suffix}.photometry.",
            alerts=f"{suffix}.alerts",
            dead_letter=f"{suffix}.deadletter",
            events=f"{suffix}.events",
            partitions=4,
            alert_partitions=2,
        ),
        consumer=ConsumerSettings(group_id=suffix, session_timeout_ms=6000),
        producer=SMALL_MESSAGES,
    )


def cluster_consumer(cluster: LocalCluster) -> Callable[..., Consumer]:
    def build(group_id: str | None = None, **overrides: Any) -> Consumer:
        config = consumer_config(
            cluster.settings, ConsumerSettings(), group_id=group_id or f"v-{uuid.uuid4().hex}"
        )
        return make_consumer({**config, **overrides})

    return build


def test_topics_create_replicates_three_times(kafka_cluster: LocalCluster) -> None:
    settings = cluster_topics(kafka_cluster, "create")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
    env.update(
        {
            "LENSNET_KAFKA__BOOTSTRAP_SERVERS": kafka_cluster.bootstrap,
            "LENSNET_TOPICS__PHOTOMETRY_PREFIX": settings.topics.photometry_prefix,
            "LENSNET_TOPICS__ALERTS": settings.topics.alerts,
            "LENSNET_TOPICS__DEAD_LETTER": settings.topics.dead_letter,
            "LENSNET_TOPICS__EVENTS": settings.topics.events,
        }
    )
    created = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "topics", "create"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    every_topic = required_topics(settings.topics)  # photometry x3, alerts, dead letters, events
    assert created.stdout.count("(3 replicas, min.insync.replicas=2)") == len(every_topic)
    admin = make_admin(kafka_cluster.settings)
    names = [spec.name for spec in required_topics(settings.topics)]
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.brokers) == 3
    for name in names:
        assert {len(p.replicas) for p in metadata.topics[name].partitions.values()} == {3}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    for future in admin.describe_configs(resources).values():
        assert future.result()["min.insync.replicas"].value == "2"


def busiest_leader(settings: Settings) -> tuple[int, Counter[int]]:
    """The broker leading most partitions of the input, alert and dead-letter topics."""
    metadata = make_admin(settings.kafka).list_topics(timeout=10)
    names = [spec.name for spec in required_topics(settings.topics)]
    leaders = Counter(
        partition.leader
        for name in names
        for partition in metadata.topics[name].partitions.values()
    )
    return leaders.most_common(1)[0][0], leaders


def test_leader_killed_under_load(
    season: Path,  # noqa: F811
    kafka_cluster: LocalCluster,
    tmp_path: Path,
) -> None:
    """The daemon runs as Kubernetes runs it (restarted whenever it exits) while the replay
    producer writes; the broker leading most partitions is killed (SIGKILL), the cluster runs
    on two brokers (min.insync.replicas=2 still met), then the broker comes back."""
    admin = make_admin(kafka_cluster.settings)
    settings = cluster_topics(kafka_cluster, "leader")
    ensure_topics(admin, required_topics(settings.topics))
    local_consumer = cluster_consumer(kafka_cluster)
    group = local_consumer(settings.consumer.group_id)
    failures: list[BaseException] = []

    def produce() -> None:
        try:
            replay(settings, season, ReplayOptions(max_rate=6_000, progress=False))
            send_flat(settings)
        except BaseException as error:
            failures.append(error)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()

    def committed() -> int:
        if daemons[-1].poll() is not None:  # the orchestrator's job: restart what exited
            exits.append(daemons[-1].returncode)
            daemons.append(start())
        parts = [
            TopicPartition(topic, p)
            for topic in settings.topics.photometry_topics()
            for p in range(settings.topics.partitions)
        ]
        try:
            return sum(max(tp.offset, 0) for tp in group.committed(parts, timeout=5))
        except Exception:  # the coordinator is moving: no progress to report
            return -1

    env = daemon_env(
        settings,
        tmp_path / "state",
        batch_messages=20,
        LENSNET_STATE__CHECKPOINT_INTERVAL_S="0.5",
        LENSNET_TRIGGER__EVALUATE_WHEN_CAUGHT_UP="false",
        LENSNET_DAEMON__TRANSACTION_TIMEOUT_MS="10000",
    )
    log = (tmp_path / "daemon.log").open("w")
    exits: list[int] = []

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run"], env=env, stdout=log, stderr=log
        )

    daemons = [start()]
    try:
        wait_until(lambda: committed() > 0, 180, "the daemon's first commit")
        victim, leaders = busiest_leader(settings)
        before = committed()
        killed_at = time.monotonic()
        kafka_cluster.node("kill", victim)
        wait_until(lambda: committed() > before, 120, "a commit with a broker down")
        failover = time.monotonic() - killed_at
        # The broker comes back (a JVM start: ~20 s) while the work goes on.
        returned: list[float] = []

        def restart() -> None:
            kafka_cluster.node("restart", victim)
            returned.append(time.monotonic() - killed_at)

        back = threading.Thread(target=restart)
        back.start()
        producer.join(300)
        assert not producer.is_alive(), "the replay did not finish"
        assert failures == [], failures
        end = ends(settings, local_consumer())
        total = sum(end.values())
        wait_until(lambda: committed() >= total, 400, "the daemon to finish after the kill")
        done = time.monotonic() - killed_at
        back.join(300)
        assert returned, "the broker did not come back"
    finally:
        process = daemons[-1]
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert process.returncode == 0
    assert all(code == 3 for code in exits), f"exit codes {exits}"
    stores = {}
    for partition in range(settings.topics.partitions):
        restored = StarStore.restore(tmp_path / "state" / f"partition-{partition}", StoreConfig())
        assert restored is not None
        stores[partition] = restored[0]

    reference = cluster_topics(kafka_cluster, "reference")
    ensure_topics(admin, required_topics(reference.topics))
    replay(reference, season, ReplayOptions(progress=False))
    send_flat(reference)
    ref = Running(
        daemon_settings(reference, tmp_path / "reference", batch_messages=40, comparable=True)
    )
    try:
        wait_until(lambda: caught_up([ref], ends(reference, local_consumer())), 300, "reference")
    finally:
        ref.stop()
    verify(
        f"leader of {leaders[victim]} of {sum(leaders.values())} partitions (broker {victim}) "
        f"killed under load: first commit {failover:.1f} s after the kill, broker back after "
        f"{returned[0]:.1f} s, all input committed after {done:.1f} s, daemon exits {exits}",
        settings,
        stores,
        reference,
        ref.stores,
        local_consumer,
    )
