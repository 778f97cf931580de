"""kill -9 loop: the daemon killed at random moments, restarted, and nothing lost or doubled.

A season with known events and flat stars is in the photometry topics. A daemon process
(``python -m consumer.cli run``) is started, killed with SIGKILL at a random moment after it
started processing (mid-batch, mid-transaction or mid-checkpoint, wherever it is), and
restarted, :data:`KILLS` times; a last run drains the input. A ``read_committed`` verifier then
checks against one uninterrupted daemon on a copy of the same input:

- no star alerted twice, no flat star alerted, no event the reference alerted missing (the
  other stars alerted differently are counted and printed);
- the events topic: every event's updates numbered 0, 1, 2, ... once each, the same as the
  reference's (sequence, kind and newest observation fitted);
- no open transaction left: a read_committed reader reaches the high watermark of every
  partition of the alert and dead-letter topics;
- the final per-star state equals the reference's (every buffer of every star);
- the committed offsets are exactly the end of the input.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.seasons.replay import ReplayOptions, replay
from consumer.settings import ProducerSettings, Settings
from consumer.state.store import store_differences
from model.simulate import SimulationConfig, write_season
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
    read_alerts,
    read_events,
    read_topic,
    send_flat,
    wait_until,
)

pytestmark = pytest.mark.kafka

KILLS = 20
BATCH = 4  # messages per consumed batch: many small transactions to kill in the middle of


def kill_during_processing(env: dict[str, str], rng: random.Random) -> tuple[int, int]:
    """Start a daemon, SIGKILL it a random time after its first batch; (batches, lines)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    batches = 0
    lines = 0
    try:
        deadline = time.monotonic() + 90
        for line in process.stdout:
            lines += 1
            if '"event": "batch"' in line:
                batches += 1
                break
            if time.monotonic() > deadline:
                break
        time.sleep(rng.uniform(0.0, 1.5))
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    return batches, lines


def no_open_transactions(consumer: Consumer, topic: str, partitions: int) -> bool:
    """A read_committed reader gets to the high watermark of every partition (the last stable
    offset equals it: no transaction left open)."""
    parts = [TopicPartition(topic, p, 0) for p in range(partitions)]
    highs = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    consumer.assign(parts)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        consumer.consume(500, 0.2)
        if all(tp.offset >= highs[tp.partition] for tp in consumer.position(parts)):
            return True
    return False


def test_kill_9_loop_loses_and_doubles_nothing(
    tmp_path_factory: pytest.TempPathFactory,
    topics_factory: Callable[..., Settings],
    consumer_factory: Callable[..., Consumer],
) -> None:
    season = tmp_path_factory.mktemp("kill-season")
    write_season(SimulationConfig(n_stars=40, seed=11), season, progress=False)
    small = ProducerSettings(linger_ms=5, batch_observations=300)  # many messages
    runs = {}
    for name in ("killed", "reference"):
        settings = topics_factory(partitions=4, producer=small)
        replay(settings, season, ReplayOptions(progress=False))
        send_flat(settings)
        runs[name] = settings
    killed = runs["killed"]
    state = tmp_path_factory.mktemp("kill-state")
    # Checkpoint often so kills also land mid-checkpoint.
    env = daemon_env(
        killed,
        state,
        batch_messages=BATCH,
        LENSNET_STATE__CHECKPOINT_INTERVAL_S="0.5",
        LENSNET_TRIGGER__EVALUATE_WHEN_CAUGHT_UP="false",
    )
    rng = random.Random(20261121)
    started = time.monotonic()
    processed_batches = 0
    for _ in range(KILLS):
        batches, _ = kill_during_processing(env, rng)
        processed_batches += batches
    kill_seconds = time.monotonic() - started

    end = ends(killed, consumer_factory())
    final = Running(daemon_settings(killed, state, batch_messages=BATCH, comparable=True))
    try:
        wait_until(lambda: caught_up([final], end), 300, "the final daemon to drain")
    finally:
        final.stop()
    reference = Running(
        daemon_settings(
            runs["reference"], tmp_path_factory.mktemp("ref"), batch_messages=BATCH, comparable=True
        )
    )
    try:
        wait_until(
            lambda: caught_up([reference], ends(runs["reference"], consumer_factory())),
            300,
            "the reference daemon",
        )
    finally:
        reference.stop()

    alerts = read_alerts(killed, consumer_factory())
    expected = read_alerts(runs["reference"], consumer_factory())
    per_star = Counter(a.star_id for a in alerts)
    duplicates = sum(n - 1 for n in per_star.values())
    lost = {a.star_id for a in expected} - set(per_star)
    unexpected = set(per_star) - {a.star_id for a in expected}
    differences = decision_differences(alerts, expected)
    updates = read_events(killed, consumer_factory())
    reference_updates = read_events(runs["reference"], consumer_factory())
    event_lines = event_problems(updates, alerts) + event_differences(updates, reference_updates)
    letters = read_topic(consumer_factory(), killed.topics.dead_letter, 2)
    reference_letters = read_topic(consumer_factory(), runs["reference"].topics.dead_letter, 2)
    print(
        f"\nkill -9 loop: {KILLS} kills in {kill_seconds:.0f} s, {processed_batches} batches "
        f"seen before kills; alerts {len(alerts)} (reference {len(expected)}), "
        f"duplicates {duplicates}, lost {len(lost)}, unexpected {len(unexpected)}, "
        f"at another time {len(differences) - len(lost) - len(unexpected)}, "
        f"dead letters {len(letters)} (reference {len(reference_letters)}), "
        f"event updates {len(updates)} (reference {len(reference_updates)})"
        + "".join(f"\n  {line}" for line in differences + event_lines)
    )
    assert duplicates == 0
    assert not set(per_star) & set(FLAT_IDS)
    assert differences == []  # the same stars alert, at the same trigger times
    assert len(letters) == len(reference_letters)
    assert event_lines == []  # each event's updates once, in sequence, as the reference's
    assert no_open_transactions(consumer_factory(), killed.topics.alerts, 2)
    assert no_open_transactions(consumer_factory(), killed.topics.events, 2)
    assert no_open_transactions(consumer_factory(), killed.topics.dead_letter, 2)
    group = consumer_factory(group_id=killed.consumer.group_id)
    committed = group.committed([TopicPartition(t, p) for t, p in end], timeout=10)
    assert {(tp.topic, tp.partition): tp.offset for tp in committed} == end
    assert sorted(final.stores) == sorted(reference.stores) == [0, 1, 2, 3]
    for partition, store in reference.stores.items():
        assert store_differences(final.stores[partition], store) == []
