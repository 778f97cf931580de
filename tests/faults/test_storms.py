"""Faults while data flows: rebalance storm, broker restarts, a slow model, 10 000 poison
messages. Each run is checked against one uninterrupted daemon on a copy of the same input
(``verify``) and prints its figures (RELIABILITY.md summarises them)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from consumer.edge.kafka import consumer_config, make_admin, make_consumer
from consumer.edge.keys import partitions_for
from consumer.edge.output import WATCHDOG_GRACE_S
from consumer.edge.photometry import Observations, PhotometryBatch, encode_batch
from consumer.edge.produce import PhotometryProducer
from consumer.edge.schemas import frame, load_schema
from consumer.edge.topics import ensure_topics, required_topics
from consumer.pipeline.ingest import REASON_HEADER
from consumer.seasons.replay import ReplayOptions, replay
from consumer.settings import (
    ConsumerSettings,
    KafkaSettings,
    ProducerSettings,
    Settings,
    TopicSettings,
)
from consumer.state.store import StarStore, StoreConfig, store_differences
from model.simulate import SimulationConfig, write_season
from tests.conftest import KAFKA_SH
from tests.consumer.test_daemon import (
    FLAT_IDS,
    Running,
    caught_up,
    daemon_env,
    daemon_settings,
    decision_differences,
    ends,
    event_differences,
    event_problems,
    flat_stars,
    read_alerts,
    read_events,
    read_topic,
    send_flat,
    wait_until,
)
from tests.faults.lost_marker import cut_last_marker
from tests.faults.test_kill import no_open_transactions

pytestmark = pytest.mark.kafka

SMALL_MESSAGES = ProducerSettings(linger_ms=5, batch_observations=300)


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("storm-season")
    write_season(SimulationConfig(n_stars=40, seed=11), out, progress=False)
    return out


@dataclass
class Figures:
    alerts: int
    reference_alerts: int
    duplicates: int
    lost: int
    unexpected: int
    moved: int
    state_differences: int

    def __str__(self) -> str:
        return (
            f"alerts {self.alerts} (reference {self.reference_alerts}), duplicates "
            f"{self.duplicates}, lost {self.lost}, unexpected {self.unexpected}, at another "
            f"time {self.moved}, differing partitions {self.state_differences}"
        )


def verify(
    title: str,
    settings: Settings,
    stores: dict[int, StarStore],
    reference: Settings,
    reference_stores: dict[int, StarStore],
    consumer_factory: Callable[..., Consumer],
) -> Figures:
    """The verifier: every alert of the uninterrupted reference exactly once and at the same
    trigger time, nothing else; the reference's event updates, each once and in sequence;
    equal states; offsets committed to the end; no open transaction. Prints ``title`` and the
    figures before asserting."""
    alerts = read_alerts(settings, consumer_factory())
    reference_alerts = read_alerts(reference, consumer_factory())
    per_star = Counter(a.star_id for a in alerts)
    expected = {a.star_id for a in reference_alerts}
    differences = decision_differences(alerts, reference_alerts)
    differing = [
        p
        for p, store in reference_stores.items()
        if p not in stores or store_differences(stores[p], store)
    ]
    lost, unexpected = expected - set(per_star), set(per_star) - expected
    figures = Figures(
        alerts=len(alerts),
        reference_alerts=len(reference_alerts),
        duplicates=sum(n - 1 for n in per_star.values()),
        lost=len(lost),
        unexpected=len(unexpected),
        moved=len(differences) - len(lost) - len(unexpected),
        state_differences=len(differing),
    )
    updates = read_events(settings, consumer_factory())
    reference_updates = read_events(reference, consumer_factory())
    event_lines = event_problems(updates, alerts) + event_differences(updates, reference_updates)
    print(
        f"\n{title}: {figures}; event updates {len(updates)} "
        f"(reference {len(reference_updates)})"
        + "".join(f"\n  {line}" for line in differences + event_lines)
    )
    assert figures.duplicates == 0
    assert not set(per_star) & set(FLAT_IDS)
    assert differences == []
    assert differing == []
    # The events topic: each event's updates numbered 0, 1, 2, ... once, as the reference's.
    assert event_lines == []
    assert no_open_transactions(consumer_factory(), settings.topics.alerts, 2)
    assert no_open_transactions(consumer_factory(), settings.topics.events, 2)
    end = ends(settings, consumer_factory())
    group = consumer_factory(group_id=settings.consumer.group_id)
    committed = group.committed([TopicPartition(t, p) for t, p in end], timeout=10)
    assert {(tp.topic, tp.partition): tp.offset for tp in committed} == end
    return figures


def run_reference(
    season: Path,
    topics_factory: Callable[..., Settings],
    consumer_factory: Callable[..., Consumer],
    state: Path,
    **overrides: Any,
) -> tuple[Settings, dict[int, StarStore]]:
    """One uninterrupted daemon over its own copy of the input."""
    settings = topics_factory(partitions=4, producer=SMALL_MESSAGES, **overrides)
    replay(settings, season, ReplayOptions(progress=False))
    send_flat(settings)
    reference = Running(daemon_settings(settings, state, batch_messages=4, comparable=True))
    try:
        wait_until(
            lambda: caught_up([reference], ends(settings, consumer_factory())), 300, "reference"
        )
    finally:
        reference.stop()
    return settings, reference.stores


def feed(settings: Settings, season: Path, rate: float) -> threading.Thread:
    """Replay the season (and the flat stars) at ``rate`` observations/s on a thread."""

    def produce() -> None:
        replay(settings, season, ReplayOptions(max_rate=rate, progress=False))
        send_flat(settings)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    return thread


def test_rebalance_storm(
    season: Path,
    topics_factory: Callable[..., Settings],
    consumer_factory: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    settings = topics_factory(partitions=4, producer=SMALL_MESSAGES)
    producer = feed(settings, season, rate=12_000)
    members: dict[str, Running] = {}
    events: list[str] = []

    def join(name: str) -> None:
        members[name] = Running(
            daemon_settings(settings, tmp_path / name, name, 4, comparable=True)
        )
        events.append(f"+{name}")

    def leave(name: str) -> None:
        members[name].stop()
        events.append(f"-{name}")

    join("a")
    time.sleep(3)
    join("b")
    time.sleep(3)
    join("c")
    time.sleep(3)
    leave("a")
    time.sleep(2)
    join("d")
    time.sleep(2)
    leave("b")
    producer.join(120)
    end = ends(settings, consumer_factory())
    wait_until(lambda: caught_up([members["c"], members["d"]], end), 240, "c and d")
    leave("c")
    wait_until(lambda: caught_up([members["d"]], end), 240, "d alone")
    leave("d")
    reference, reference_stores = run_reference(
        season, topics_factory, consumer_factory, tmp_path / "reference"
    )
    verify(
        f"rebalance storm ({' '.join(events)})",
        settings,
        members["d"].stores,
        reference,
        reference_stores,
        consumer_factory,
    )


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A broker of this test's own, to restart without disturbing the others."""
    directory = tmp_path_factory.mktemp("restart-kafka")
    started = subprocess.run(
        [str(KAFKA_SH), "start", str(directory)], capture_output=True, text=True, timeout=300
    )
    assert started.returncode == 0, started.stderr
    try:
        yield directory, started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(directory)], capture_output=True, timeout=120)


def test_broker_restarts_clean_and_hard(
    season: Path,
    own_broker: tuple[Path, str],
    tmp_path: Path,
) -> None:
    """The broker is stopped and restarted (cleanly, then with SIGKILL) under a daemon process
    run the way Kubernetes runs it: restarted whenever it exits. librdkafka can block in
    ``send_offsets_to_transaction`` on a coordinator that went away (librdkafka#5456); the
    daemon then exits with code 3 after the transaction timeout and its restart recovers."""
    directory, bootstrap = own_broker
    kafka = KafkaSettings(bootstrap_servers=bootstrap)

    def topics(name: str) -> Settings:
        settings = Settings(
            kafka=kafka,
            topics=TopicSettings(
                photometry_prefix=f"{name}.photometry.",
                alerts=f"{name}.alerts",
                dead_letter=f"{name}.deadletter",
                events=f"{name}.events",  # not the default topic the reference run writes too
                partitions=4,
                alert_partitions=2,
            ),
            consumer=ConsumerSettings(group_id=name, session_timeout_ms=6000),
            producer=SMALL_MESSAGES,
        )
        ensure_topics(make_admin(kafka), required_topics(settings.topics))
        replay(settings, season, ReplayOptions(progress=False))
        send_flat(settings)
        return settings

    def local_consumer(group_id: str | None = None) -> Consumer:
        config = consumer_config(
            kafka, ConsumerSettings(), group_id=group_id or f"verify-{time.monotonic_ns()}"
        )
        return make_consumer(config)

    settings = topics("restarts")
    end = ends(settings, local_consumer())
    group = local_consumer(settings.consumer.group_id)

    def committed() -> int:
        if daemons[-1].poll() is not None:  # the orchestrator's job: restart what exited
            exits.append(daemons[-1].returncode)
            daemons.append(start())
        try:
            parts = group.committed([TopicPartition(t, p) for t, p in end], timeout=5)
        except Exception:  # the broker is down: no progress to report
            return -1
        return sum(max(tp.offset, 0) for tp in parts)

    transaction_timeout_ms = 10_000
    env = daemon_env(
        settings,
        tmp_path / "state",
        batch_messages=4,
        LENSNET_STATE__CHECKPOINT_INTERVAL_S="0.5",
        LENSNET_TRIGGER__EVALUATE_WHEN_CAUGHT_UP="false",
        LENSNET_DAEMON__TRANSACTION_TIMEOUT_MS=str(transaction_timeout_ms),
    )
    log_path = tmp_path / "daemon.log"
    log = log_path.open("w")
    exits: list[int] = []
    # After an outage a transactional call can hang (librdkafka#5456): it is retried for up to
    # the transaction timeout, then the last try blocks until the watchdog (timeout + grace)
    # exits the daemon; the restart's init_transactions can hang once more. Each round also
    # costs a start-up (~12 s on two busy cores; 30 s allowed); the broker takes ~20 s.
    recovery_s = 2 * (2 * transaction_timeout_ms / 1000 + WATCHDOG_GRACE_S + 30.0) + 20.0

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run"], env=env, stdout=log, stderr=log
        )

    daemons = [start()]
    outages = []
    total = sum(end.values())
    try:
        for how in ("restart", "kill"):
            before = max(committed(), 0)

            def progressed(before: int = before) -> bool:
                return committed() > before

            try:
                wait_until(progressed, recovery_s, "progress before the outage")
            except pytest.fail.Exception as failure:
                log.flush()
                raise AssertionError(
                    f"{failure}; exits {exits}; the daemon's log ends:\n{log_events(log_path)}"
                ) from None
            started = time.monotonic()
            if how == "kill":
                subprocess.run([str(KAFKA_SH), "kill", str(directory)], check=True, timeout=60)
            else:
                subprocess.run([str(KAFKA_SH), "stop", str(directory)], check=True, timeout=120)
            time.sleep(3.0)  # the daemon runs on without a broker for a while
            restarted = subprocess.run(
                [str(KAFKA_SH), "restart", str(directory)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert restarted.returncode == 0, restarted.stderr
            outages.append(f"{how} {time.monotonic() - started:.1f} s")
        deadline = time.monotonic() + 400
        while committed() < total:
            assert time.monotonic() < deadline, "the daemon did not finish after the restarts"
            time.sleep(0.5)
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
    for partition in range(4):
        restored = StarStore.restore(tmp_path / "state" / f"partition-{partition}", StoreConfig())
        assert restored is not None
        stores[partition] = restored[0]
    reference = topics("reference")
    ref = Running(
        daemon_settings(reference, tmp_path / "reference", batch_messages=4, comparable=True)
    )
    try:
        wait_until(lambda: caught_up([ref], ends(reference, local_consumer())), 300, "ref")
    finally:
        ref.stop()
    verify(
        f"broker restarts ({', '.join(outages)}), daemon exits {exits} (restarted)",
        settings,
        stores,
        reference,
        ref.stores,
        local_consumer,
    )


def test_slow_model_does_not_commit_as_a_zombie(
    season: Path,
    topics_factory: Callable[..., Settings],
    consumer_factory: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    """One LensNet pass outlasts max.poll.interval.ms: the member loses its partitions, its
    transaction must not commit, and it recovers."""
    settings = topics_factory(partitions=4, producer=SMALL_MESSAGES)
    replay(settings, season, ReplayOptions(progress=False))
    send_flat(settings)
    end = ends(settings, consumer_factory())
    configured = daemon_settings(settings, tmp_path / "state", batch_messages=4, comparable=True)
    configured = configured.model_copy(
        update={
            "consumer": configured.consumer.model_copy(
                update={"max_poll_interval_ms": 7000, "session_timeout_ms": 6000}
            )
        }
    )
    running = Running(configured)
    scorer_ready = time.monotonic() + 120
    while running.daemon.scorer is None and time.monotonic() < scorer_ready:
        time.sleep(0.05)
    assert running.daemon.scorer is not None
    decide = running.daemon.scorer.decide
    slept: list[float] = []

    def slow(stores: Any, pending: list[Any]) -> Any:
        if pending and not slept:
            slept.append(10.0)
            time.sleep(10.0)  # longer than max.poll.interval.ms
        return decide(stores, pending)

    running.daemon.scorer.decide = slow  # type: ignore[method-assign]
    try:
        wait_until(lambda: caught_up([running], end), 300, "the daemon after the slow batch")
    finally:
        running.stop()
    assert slept, "the model was never slow: no candidate reached it"
    reference, reference_stores = run_reference(
        season, topics_factory, consumer_factory, tmp_path / "reference"
    )
    aborted = running.daemon.metrics.transactions.labels(outcome="aborted")._value.get()
    verify(
        f"slow model (10 s > max.poll.interval.ms 7 s), {aborted:.0f} aborted",
        settings,
        running.stores,
        reference,
        reference_stores,
        consumer_factory,
    )
    assert aborted >= 1


def poison_messages(rng: np.random.Generator, n: int, partitions: int) -> list[tuple[bytes, str]]:
    """``n`` malformed messages for partition 0 of the CTIO topic, each with the dead-letter
    reason it must get: random bytes, truncated Avro, the wrong schema, and batches whose one
    row is NaN/inf, has a negative error, or lies far in the future."""
    base = flat_stars(epochs=4)["CTIO"]
    in_p0 = base.take(np.flatnonzero(partitions_for(base.star_id, partitions) == 0)[:1])
    valid = encode_batch(PhotometryBatch("CTIO", in_p0))
    wrong_schema = frame(load_schema("alert"), valid[10:])  # framed as an alert
    out: list[tuple[bytes, str]] = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            out.append((rng.bytes(int(rng.integers(0, 200))), "undecodable"))
        elif kind == 1:
            out.append((valid[: int(rng.integers(0, len(valid) - 1))], "undecodable"))
        elif kind == 2:
            out.append((wrong_schema, "undecodable"))
        else:
            column, value, reason = {
                3: ("flux", float(rng.choice([np.nan, np.inf, -np.inf])), "non_finite"),
                4: ("flux_err", -float(rng.uniform(0.1, 10)), "bad_flux_err"),
                5: ("hjd", 2_600_000.0 + float(rng.uniform(0, 1000)), "bad_time"),
            }[kind]
            columns = {f: getattr(in_p0, f).copy() for f in in_p0.__dataclass_fields__}
            columns[column][:] = value
            row = Observations(**columns)
            out.append((encode_batch(PhotometryBatch("CTIO", row)), reason))
    return out


def test_ten_thousand_poison_messages(
    topics_factory: Callable[..., Settings],
    consumer_factory: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    settings = topics_factory(partitions=2)
    good = flat_stars(epochs=120)
    n_good = sum(len(obs) for obs in good.values())
    poison = poison_messages(np.random.default_rng(7), 10_000, 2)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "linger.ms": 5})
    topic = settings.topics.photometry("CTIO")
    with PhotometryProducer(settings.kafka, settings.topics, settings.producer) as photometry:
        for chunk in range(10):  # valid data interleaved with the poison
            for site, obs in good.items():
                photometry.send(
                    site, obs.take(slice(chunk * len(obs) // 10, (chunk + 1) * len(obs) // 10))
                )
            photometry.flush()
            for value, _ in poison[chunk * 1000 : (chunk + 1) * 1000]:
                producer.produce(topic, value=value, partition=0)
            producer.flush(30)
    end = ends(settings, consumer_factory())
    started = time.monotonic()
    running = Running(daemon_settings(settings, tmp_path / "state", batch_messages=500))
    try:
        wait_until(lambda: caught_up([running], end), 300, "the daemon")
    finally:
        running.stop()
    seconds = time.monotonic() - started
    assert running.error is None
    letters = read_topic(consumer_factory(), settings.topics.dead_letter, 2)
    reasons: Counter[str] = Counter()
    for message in letters:
        headers: dict[str, Any] = dict(message.headers() or [])
        reasons[headers[REASON_HEADER].decode()] += 1
    expected = Counter(reason for _, reason in poison)
    held = sum(
        sum(store.counts(int(i))) for store in running.stores.values() for i in store.star_ids
    )
    print(
        f"\npoison: {len(poison)} malformed messages among {n_good} valid observations, "
        f"{seconds:.1f} s, 0 crashes; dead letters {dict(reasons)}; valid observations held "
        f"{held} of {n_good}"
    )
    assert reasons == expected
    assert held == n_good


def log_events(path: Path, last: int = 40) -> str:
    """The last ``last`` distinct events of a daemon's JSON log, one line each (time, level,
    event), for a failure message."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            lines.append(raw[:160])
            continue
        line = f"{record.get('timestamp', '')[11:23]} {record.get('level', '')} "
        line += str(record.get("event", ""))[:120]
        if not lines or lines[-1].split(" ", 1)[1] != line.split(" ", 1)[1]:
            lines.append(line)
    return "\n".join(lines[-last:])


@pytest.fixture(params=[1, pytest.param(3, marks=pytest.mark.slow)], ids=["broker", "cluster"])
def stopped_kafka(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str, list[Path]]]:
    """A broker, or a three-broker cluster, of this test's own: its folder, bootstrap servers
    and the nodes' log folders."""
    brokers = request.param
    directory = tmp_path_factory.mktemp(f"marker-kafka-{brokers}")
    started = subprocess.run(
        [str(KAFKA_SH), "start", "--brokers", str(brokers), str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert started.returncode == 0, started.stderr
    data = [directory / "data"] if brokers == 1 else sorted(directory.glob("node-*/data"))
    assert len(data) == brokers
    try:
        yield directory, started.stdout.strip().splitlines()[-1], data
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(directory)], capture_output=True, timeout=120)


def test_a_lost_offsets_marker_is_ended_by_the_daemon(
    season: Path,
    stopped_kafka: tuple[Path, str, list[Path]],
    tmp_path: Path,
) -> None:
    """The stall of RELIABILITY.md, made on purpose: a daemon finishes the season, the
    brokers are stopped and its last transaction's COMMIT marker cut off every replica of the
    group's offsets partition, so the offsets stay pending for good. The next daemon ends its
    own pending commit (as aborted) and goes on: the last stable commit's input is processed
    again, no alert or event update is repeated, and its state equals the first daemon's."""
    directory, bootstrap, data = stopped_kafka
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    settings = Settings(
        kafka=kafka,
        topics=TopicSettings(partitions=4, alert_partitions=2),
        consumer=ConsumerSettings(group_id="lost-marker", session_timeout_ms=6000),
        producer=SMALL_MESSAGES,
    )
    ensure_topics(make_admin(kafka), required_topics(settings.topics))
    replay(settings, season, ReplayOptions(progress=False))
    send_flat(settings)

    def local_consumer(group_id: str | None = None) -> Consumer:
        config = consumer_config(
            kafka, ConsumerSettings(), group_id=group_id or f"verify-{time.monotonic_ns()}"
        )
        return make_consumer(config)

    end = ends(settings, local_consumer())
    daemon = daemon_settings(settings, tmp_path / "state", batch_messages=4, comparable=True)
    first = Running(daemon)
    try:
        wait_until(lambda: caught_up([first], end), 300, "the first daemon")
    finally:
        first.stop()
    alerts = read_alerts(settings, local_consumer())

    subprocess.run([str(KAFKA_SH), "stop", str(directory)], check=True, timeout=120)
    cuts = {cut_last_marker(folder, settings.consumer.group_id) for folder in data}
    assert len(cuts) == 1, cuts  # the replicas hold the same batches
    (cut,) = cuts
    restarted = subprocess.run(
        [str(KAFKA_SH), "restart", str(directory)], capture_output=True, text=True, timeout=300
    )
    assert restarted.returncode == 0, restarted.stderr
    group = local_consumer(settings.consumer.group_id)
    parts = [TopicPartition(t, p) for t, p in end]
    with pytest.raises(KafkaException, match="Timed out"):  # the stall is there
        group.committed(parts, timeout=5)

    started = time.monotonic()
    second = Running(daemon)
    try:
        wait_until(lambda: caught_up([second], end), 300, "the second daemon")
        recovered_s = time.monotonic() - started
    finally:
        second.stop()
    committed = group.committed(parts, timeout=10)
    assert {(tp.topic, tp.partition): tp.offset for tp in committed} == end
    again = read_alerts(settings, local_consumer())
    updates = read_events(settings, local_consumer())
    print(
        f"\nlost marker at offset {cut} ({len(data)} broker(s)): caught up again "
        f"{recovered_s:.1f} s after the start; alerts {len(again)} (before {len(alerts)}), "
        f"event updates {len(updates)}"
    )
    assert sorted(a.star_id for a in again) == sorted(a.star_id for a in alerts)
    assert len({a.star_id for a in again}) == len(again)
    assert event_problems(updates, again) == []
    assert sorted(first.stores) == sorted(second.stores) == list(range(4))
    for partition, store in first.stores.items():
        assert not store_differences(second.stores[partition], store), partition
    assert no_open_transactions(local_consumer(), settings.topics.alerts, 2)
