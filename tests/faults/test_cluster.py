"""A three-broker cluster (kafka.sh --brokers 3): topics replicated three times with
min.insync.replicas=2; while the season is replayed and the daemon works through it, the leader
of the busiest partitions killed with SIGKILL, or the active controller killed and then every
other broker restarted in turn (a rolling restart). Checked like every fault test
(``verify``): the uninterrupted reference's alerts exactly once, nothing else, equal states,
offsets committed to the end, no open transaction."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class Load:
    """The daemon at work on the cluster while the season is replayed (:func:`under_load`)."""

    cluster: LocalCluster
    settings: Settings
    committed: Callable[[], int]
    producer: threading.Thread
    local_consumer: Callable[..., Consumer]

    def progress(self, what: str, timeout_s: float = 120.0) -> float:
        """Wait for a commit beyond what is committed now (or for all the input committed,
        once the replay is over); the seconds it took."""
        started, before = time.monotonic(), max(self.committed(), 0)

        def moved() -> bool:
            now = self.committed()
            if now > before:
                return True
            if self.producer.is_alive() or now < 0:
                return False
            try:
                return now >= sum(ends(self.settings, self.local_consumer()).values())
            except Exception:  # a broker down: the watermarks cannot be read yet
                return False

        wait_until(moved, timeout_s, what)
        return time.monotonic() - started


def under_load(
    season_dir: Path,
    cluster: LocalCluster,
    tmp_path: Path,
    name: str,
    fault: Callable[[Load], str],
    *,
    max_rate: float,
) -> None:
    """Run the daemon as Kubernetes runs it (restarted whenever it exits) while the replay
    producer writes at ``max_rate``; after its first commit, ``fault`` does its damage to the
    cluster (and repairs it) and says what it did; then the work is finished and verified
    against an uninterrupted reference."""
    admin = make_admin(cluster.settings)
    settings = cluster_topics(cluster, name)
    ensure_topics(admin, required_topics(settings.topics))
    local_consumer = cluster_consumer(cluster)
    group = local_consumer(settings.consumer.group_id)
    failures: list[BaseException] = []

    def produce() -> None:
        try:
            replay(settings, season_dir, ReplayOptions(max_rate=max_rate, progress=False))
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
        began = time.monotonic()
        what = fault(Load(cluster, settings, committed, producer, local_consumer))
        producer.join(300)
        assert not producer.is_alive(), "the replay did not finish"
        assert failures == [], failures
        total = sum(ends(settings, local_consumer()).values())
        wait_until(lambda: committed() >= total, 400, "the daemon to finish after the fault")
        done = time.monotonic() - began
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

    reference = cluster_topics(cluster, "reference")
    ensure_topics(admin, required_topics(reference.topics))
    replay(reference, season_dir, ReplayOptions(progress=False))
    send_flat(reference)
    ref = Running(
        daemon_settings(reference, tmp_path / "reference", batch_messages=40, comparable=True)
    )
    try:
        wait_until(lambda: caught_up([ref], ends(reference, local_consumer())), 300, "reference")
    finally:
        ref.stop()
    verify(
        f"{what}; all input committed {done:.1f} s after the fault began, daemon exits {exits}",
        settings,
        stores,
        reference,
        ref.stores,
        local_consumer,
    )


def test_leader_killed_under_load(
    season: Path,  # noqa: F811
    kafka_cluster: LocalCluster,
    tmp_path: Path,
) -> None:
    """The broker leading most partitions is killed (SIGKILL), the cluster runs on two brokers
    (min.insync.replicas=2 still met), then the broker comes back while the work goes on."""

    def kill_the_busiest_leader(load: Load) -> str:
        victim, leaders = busiest_leader(load.settings)
        killed_at = time.monotonic()
        load.cluster.node("kill", victim)
        try:
            failover = load.progress("a commit with a broker down")
        finally:  # back even if the test fails: the session's later tests need three brokers
            load.cluster.node("restart", victim)  # a JVM start, ~20 s, while the work goes on
        back = time.monotonic() - killed_at
        return (
            f"leader of {leaders[victim]} of {sum(leaders.values())} partitions (broker "
            f"{victim}) killed under load: first commit {failover:.1f} s after the kill, "
            f"broker back after {back:.1f} s"
        )

    under_load(season, kafka_cluster, tmp_path, "leader", kill_the_busiest_leader, max_rate=6_000)


def test_controller_killed_then_rolling_restart_under_load(
    season: Path,  # noqa: F811
    kafka_cluster: LocalCluster,
    tmp_path: Path,
) -> None:
    """The active controller (the KRaft quorum's leader; every node is a broker too) is killed
    with SIGKILL and brought back, then the two other brokers are restarted cleanly one after
    the other, a commit awaited between steps: every broker goes down once under load."""

    def controller_then_rolling(load: Load) -> str:
        controller = quorum_leader(load.cluster)
        steps = []
        killed_at = time.monotonic()
        load.cluster.node("kill", controller)
        try:
            failover = load.progress("a commit with the controller down")
        finally:  # back even if the test fails: the session's later tests need three brokers
            load.cluster.node("restart", controller)
        steps.append(f"controller {controller} killed: a commit after {failover:.1f} s")
        steps.append(f"back after {time.monotonic() - killed_at:.1f} s")
        for node in sorted({1, 2, 3} - {controller}):
            load.progress(f"a commit before restarting broker {node}")
            stopped_at = time.monotonic()
            load.cluster.node("stop", node)
            load.cluster.node("restart", node)
            steps.append(f"broker {node} restarted in {time.monotonic() - stopped_at:.1f} s")
        steps.append(f"then a commit after {load.progress('a commit after the restarts'):.1f} s")
        return ", ".join(steps)

    under_load(season, kafka_cluster, tmp_path, "rolling", controller_then_rolling, max_rate=2_000)


def quorum_leader(cluster: LocalCluster) -> int:
    """The node leading the KRaft controller quorum (the active controller), from a running
    node's ``quorum-state`` file."""
    for node in (1, 2, 3):
        state = (
            cluster.directory / f"node-{node}" / "data" / "__cluster_metadata-0" / "quorum-state"
        )
        if state.exists():
            leader = json.loads(state.read_text()).get("leaderId", -1)
            if leader in (1, 2, 3):
                return int(leader)
    pytest.fail(f"no quorum leader in {cluster.directory}")
