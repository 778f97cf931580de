"""The daemon end to end on the real local broker: alerts, takeover, drain, poison input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.constants import SITES
from consumer.daemon import Daemon
from consumer.edge.alert import Alert, AlertDecoder, alert_to_record
from consumer.edge.events import EventDecoder, EventUpdate, update_to_record
from consumer.edge.kafka import watermarks
from consumer.edge.photometry import Observations, PhotometryBatch, encode_batch
from consumer.edge.produce import PhotometryProducer
from consumer.pipeline.ingest import REASON_HEADER, SOURCE_OFFSET_HEADER, SOURCE_TOPIC_HEADER
from consumer.seasons.replay import ReplayOptions, replay
from consumer.settings import DaemonSettings, Settings, StateSettings
from consumer.state.store import StarStore, StoreConfig, store_differences
from model.export import load_artifact
from model.export_novelty import load_novelty
from model.simulate import SimulationConfig, read_labels, write_season

pytestmark = pytest.mark.kafka

SEASON_START = 2_461_100.0  # flat stars: 60 days from here, inside the simulated season
FLAT_IDS = range(9_000_000_000, 9_000_000_016)


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short simulated season: events, false positives and ordinary variables."""
    out = tmp_path_factory.mktemp("daemon-season")
    write_season(SimulationConfig(n_stars=40, seed=11), out, progress=False)
    return out


def flat_stars(epochs: int = 240, seed: int = 0) -> dict[str, Observations]:
    """Constant stars with Gaussian noise, one batch per site: they must never alert."""
    rng = np.random.default_rng(seed)
    out = {}
    for s, site in enumerate(SITES):
        hjd = SEASON_START + s * 0.3 + np.arange(epochs) * 0.25
        ids = np.repeat(np.array(FLAT_IDS, dtype=np.int64), epochs)
        n = len(ids)
        out[site] = Observations.from_columns(
            star_id=ids,
            field=np.full(n, 2),
            chip=np.full(n, 1),
            ra=np.full(n, 268.0),
            dec=np.full(n, -29.0),
            x=rng.uniform(0, 9000, n),
            y=rng.uniform(0, 9000, n),
            hjd=np.tile(hjd, len(FLAT_IDS)),
            band=np.zeros(n),
            flux=rng.normal(5000.0, 50.0, n),
            flux_err=np.full(n, 50.0),
            sky=np.full(n, 800.0),
            fwhm=np.full(n, 1.6),
            airmass=np.full(n, 1.2),
            psf_quality=np.full(n, 90.0),
        )
    return out


def send_flat(settings: Settings) -> int:
    with PhotometryProducer(settings.kafka, settings.topics, settings.producer) as producer:
        total = 0
        for site, obs in flat_stars().items():
            producer.send(site, obs)
            total += len(obs)
    return total


def daemon_settings(
    settings: Settings,
    state_dir: Path,
    instance: str = "0",
    batch_messages: int = 40,
    *,
    comparable: bool = False,
) -> Settings:
    """Daemon settings for a test; ``comparable``: decisions depend on the input alone
    (``trigger.evaluate_when_caught_up`` off), so runs with and without faults compare."""
    return settings.model_copy(
        update={
            "state": StateSettings(directory=state_dir),
            "daemon": DaemonSettings(instance_id=instance, http_port=-1, drain_timeout_s=60.0),
            "consumer": settings.consumer.model_copy(update={"batch_messages": batch_messages}),
            "trigger": settings.trigger.model_copy(
                update={"evaluate_when_caught_up": not comparable}
            ),
        }
    )


def daemon_env(
    settings: Settings,
    state: Path,
    *,
    batch_messages: int,
    http_port: int = -1,
    **extra: str,
) -> dict[str, str]:
    """Environment of a ``lensnet run`` subprocess with these settings (no inherited LENSNET_*);
    ``extra`` maps further variables, e.g. ``LENSNET_STATE__CHECKPOINT_INTERVAL_S="0.5"``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
    env.update(
        {
            "LENSNET_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "LENSNET_TOPICS__PHOTOMETRY_PREFIX": settings.topics.photometry_prefix,
            "LENSNET_TOPICS__ALERTS": settings.topics.alerts,
            "LENSNET_TOPICS__DEAD_LETTER": settings.topics.dead_letter,
            "LENSNET_TOPICS__EVENTS": settings.topics.events,
            "LENSNET_TOPICS__PARTITIONS": str(settings.topics.partitions),
            "LENSNET_TOPICS__ALERT_PARTITIONS": str(settings.topics.alert_partitions),
            "LENSNET_CONSUMER__GROUP_ID": settings.consumer.group_id,
            "LENSNET_CONSUMER__BATCH_MESSAGES": str(batch_messages),
            "LENSNET_CONSUMER__SESSION_TIMEOUT_MS": "6000",
            "LENSNET_STATE__DIRECTORY": str(state),
            "LENSNET_DAEMON__HTTP_PORT": str(http_port),
            "LENSNET_LOG__FORMAT": "json",
            **extra,
        }
    )
    return env


class Running:
    """A daemon on a thread; ``stores`` keeps every store it lets go of (last one wins)."""

    def __init__(self, settings: Settings) -> None:
        self.daemon = Daemon(settings)
        self.stores: dict[int, StarStore] = {}
        self.error: BaseException | None = None
        drop = self.daemon.partitions.drop

        def capture(partition: int) -> None:
            state = self.daemon.partitions.owned.get(partition)
            if state is not None:
                self.stores[partition] = state.store
            drop(partition)

        self.daemon.partitions.drop = capture  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as error:
            self.error = error

    def stop(self, timeout_s: float = 60.0) -> None:
        self.daemon.stop()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "daemon did not stop"
        if self.error is not None:
            raise self.error


def ends(settings: Settings, consumer: Consumer) -> dict[tuple[str, int], int]:
    return {
        (topic, p): watermarks(consumer, TopicPartition(topic, p))[1]
        for topic in settings.topics.photometry_topics()
        for p in range(settings.topics.partitions)
    }


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def caught_up(running: list[Running], end: dict[tuple[str, int], int]) -> bool:
    """Every partition owned by one of the daemons, restored, and processed to ``end``."""
    positions: dict[tuple[str, int], int] = {}
    for r in running:
        if r.error is not None:
            raise r.error
        if not r.daemon.partitions.ready:
            return False
        positions.update(r.daemon.partitions.positions)
    return all(positions.get(key, -1) >= offset for key, offset in end.items())


def read_topic(consumer: Consumer, topic: str, partitions: int) -> list[Any]:
    """Every committed message of a topic (read_committed), from the beginning."""
    parts = [TopicPartition(topic, p, 0) for p in range(partitions)]
    end = {tp.partition: watermarks(consumer, tp)[1] for tp in parts}
    consumer.assign(parts)
    messages: list[Any] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in consumer.consume(200, 0.5):
            assert message.error() is None
            messages.append(message)
        # The position passes transaction markers too, so it reaches the high watermark.
        if all(tp.offset >= end[tp.partition] for tp in consumer.position(parts)):
            break
    return messages


def read_alerts(settings: Settings, consumer: Consumer) -> list[Alert]:
    """Every committed alert, decoded."""
    decoder = AlertDecoder()
    alerts = []
    for message in read_topic(consumer, settings.topics.alerts, settings.topics.alert_partitions):
        value: Any = message.value()
        headers: Any = message.headers()
        alerts.append(decoder.decode(value, headers))
    return alerts


def read_events(settings: Settings, consumer: Consumer) -> list[EventUpdate]:
    """Every committed update of the events topic, decoded."""
    decoder = EventDecoder()
    updates = []
    for message in read_topic(consumer, settings.topics.events, settings.topics.alert_partitions):
        value: Any = message.value()
        headers: Any = message.headers()
        updates.append(decoder.decode(value, headers))
    return updates


def event_problems(updates: list[EventUpdate], alerts: list[Alert]) -> list[str]:
    """What breaks the events topic's promises: per star, sequence numbers 0, 1, 2, ... once
    each (none doubled, none missing), the first INITIAL and carrying the star's alert id and
    trigger time, nothing after a FINAL; no update for a star without an alert."""
    alert_of = {a.star_id: a for a in alerts}
    by_star: dict[int, list[EventUpdate]] = {}
    for update in updates:
        by_star.setdefault(update.star_id, []).append(update)
    out = []
    for star, mine in sorted(by_star.items()):
        sequences = [u.sequence for u in mine]
        if sequences != list(range(len(mine))):
            out.append(f"star {star}: sequences {sequences}")
        alert = alert_of.get(star)
        if alert is None:
            out.append(f"star {star}: updates without an alert")
            continue
        if mine[0].kind != "INITIAL" or any(u.event_id != alert.alert_id for u in mine):
            out.append(
                f"star {star}: first {mine[0].kind}, ids {sorted({u.event_id for u in mine})}"
            )
        if any(u.kind == "FINAL" for u in mine[:-1]):
            out.append(f"star {star}: updates after the FINAL one")
    return out


def event_differences(updates: list[EventUpdate], reference: list[EventUpdate]) -> list[str]:
    """How two runs' updates differ: per star, the (sequence, kind, newest point fitted), and
    then the whole record of each update but its publication time (NaN equals NaN)."""

    def key(items: list[EventUpdate]) -> dict[int, list[tuple[int, str, float]]]:
        out: dict[int, list[tuple[int, str, float]]] = {}
        for u in items:
            out.setdefault(u.star_id, []).append(
                (u.sequence, u.kind, round(u.event_model.fitted_to_hjd, 5))
            )
        return {star: sorted(v) for star, v in out.items()}

    def contents(items: list[EventUpdate]) -> dict[tuple[int, int], str]:
        return {
            (u.star_id, u.sequence): json.dumps(
                {**update_to_record(u), "published_at": None}, default=str, sort_keys=True
            )
            for u in items
        }

    mine, theirs = key(updates), key(reference)
    out = [
        f"star {star}: reference {theirs.get(star)}, here {mine.get(star)}"
        for star in sorted(mine.keys() | theirs.keys())
        if mine.get(star) != theirs.get(star)
    ]
    if not out:
        ours, their_contents = contents(updates), contents(reference)
        out = [
            f"star {star} update {sequence}: the same update with other contents"
            for star, sequence in sorted(ours.keys() & their_contents.keys())
            if ours[star, sequence] != their_contents[star, sequence]
        ]
    return out


def decision_differences(alerts: list[Alert], reference: list[Alert]) -> list[str]:
    """How two runs' alert decisions differ: stars alerted by one only, or at another trigger
    time, or the same alert with other contents (:func:`content_differences`). The first
    alert of a star counts; duplicates are checked separately."""
    mine = {a.star_id: a for a in reversed(alerts)}
    theirs = {a.star_id: a for a in reversed(reference)}
    out = []
    for star in sorted(mine.keys() | theirs.keys()):
        here, there = mine.get(star), theirs.get(star)
        if here is not None and there is not None and here.trigger_hjd == there.trigger_hjd:
            changed = content_differences(here, there)
            if changed:
                out.append(f"star {star}: the same alert with other {', '.join(changed)}")
            continue
        out.append(
            f"star {star}: "
            + (f"reference at {there.trigger_hjd:.5f}" if there else "reference none")
            + (f", here at {here.trigger_hjd:.5f}" if here else ", here none")
        )
    return out


def content_differences(alert: Alert, reference: Alert) -> list[str]:
    """What an alert carries differently from the reference's alert of the same star and
    trigger, each with its largest difference: its id, the AlertFinder summary, light curve and
    point-lens fit exactly (the same input gives the same numbers); the networks' outputs to
    :data:`TOLERANCES`. Empty when it is the same alert, its publication time aside."""
    ours, theirs = alert_to_record(alert), alert_to_record(reference)
    out = []
    for name in ("alert_id", "alertfinder", "light_curve", "event_model", *TOLERANCES):
        rel, abs_ = TOLERANCES.get(name, (0.0, 0.0))
        if not same_values(ours.get(name), theirs.get(name), rel, abs_):
            out.append(
                f"{name} (largest difference {largest_difference(ours[name], theirs[name]):.3g})"
            )
    return out


#: (relative, absolute) tolerance of what a network computes, over the same input. LensNet,
#: the novelty network and the second opinion score each candidate in a batch whose company
#: depends on how the input was consumed (issue 14: a star's scores alone and in any batch
#: agree to 1e-5, ``test_a_star_scores_the_same_alone_and_in_any_batch``). The binary flow
#: reads one alert's light curve with draws seeded by its id; 2e-3 in each summary (days for
#: t0), far below any posterior width, leaves room for CPU rounding (one or two of the 1 000
#: draws crossing a close/wide boundary move a mode's weight by 1e-3 each). The differences
#: clean-clone CI runs showed (up to 1.9) came from daemons sharing torch's generator in one
#: process (any module built in another thread draws from it), since fixed in the stage: draws
#: from a generator of its own.
TOLERANCES: dict[str, tuple[float, float]] = {
    "lensnet": (1e-5, 1e-5),
    "novelty": (1e-5, 1e-5),
    "second_opinion": (1e-5, 1e-5),
    "binary_posterior": (0.0, 2e-3),
}


def same_values(a: Any, b: Any, rel: float = 0.0, abs_: float = 0.0) -> bool:
    """Records equal, floats to within ``abs_`` or ``rel`` of the larger, NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_values(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(
            same_values(x, y, rel, abs_) for x, y in zip(a, b, strict=True)
        )
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return bool(a == b)


def largest_difference(a: Any, b: Any) -> float:
    """The largest absolute difference of two records' floats; inf where they differ
    otherwise (keys, lengths, strings, a NaN against a number)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return math.inf
        return max((largest_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return math.inf
        return max((largest_difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
        return abs(a - b)
    return 0.0 if a == b else math.inf


@pytest.fixture
def consumer(consumer_factory: Callable[..., Consumer]) -> Consumer:
    return consumer_factory()


def test_season_alerts_events_and_never_flat_stars(
    season: Path,
    topics_factory: Callable[..., Settings],
    consumer: Consumer,
    consumer_factory: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    settings = topics_factory(partitions=4)
    replay(settings, season, ReplayOptions(progress=False))
    send_flat(settings)
    end = ends(settings, consumer)
    running = Running(daemon_settings(settings, tmp_path / "state"))
    try:
        wait_until(lambda: caught_up([running], end), 240, "the daemon to drain the season")
    finally:
        running.stop()
    alerts = read_alerts(settings, consumer_factory())
    labels = read_labels(season / "labels.csv")
    events = {i for i, label in labels.items() if label.label == "YES"}
    alerted = Counter(a.star_id for a in alerts)
    print(
        f"\n{len(alerts)} alerts: {len(alerted.keys() & events)} of {len(events)} events, "
        f"labels {Counter(labels[i].label for i in alerted if i in labels)}"
    )
    assert not alerted.keys() & set(FLAT_IDS), "a flat star alerted"
    assert max(alerted.values()) == 1, "a star alerted twice"
    assert len({a.alert_id for a in alerts}) == len(alerts)
    assert len(alerted.keys() & events) >= len(events) // 2
    version = load_artifact()[1]["version"]
    novelty_version = load_novelty()[1]["version"]
    for alert in alerts:
        assert alert.lensnet.model_version == version  # the content hash of the artifact
        assert alert.lensnet.p_event >= 0.45
        assert len(alert.light_curve) >= 10
        assert alert.alertfinder.dchi2 >= 250
        # Every alert carries the novelty score and the second opinion (schema 1.2).
        assert alert.novelty is not None
        assert alert.second_opinion is not None
        assert alert.novelty.model_version == novelty_version
        assert alert.novelty.unusual == (alert.novelty.energy > alert.novelty.energy_cut)
        assert 0.0 <= alert.second_opinion.p_event <= 1.0
    # The event model: every alert carries its point-lens fit; the events topic follows them.
    updates = read_events(settings, consumer_factory())
    kinds = Counter(u.kind for u in updates)
    print(f"{len(updates)} event updates: {dict(kinds)}")
    assert all(a.event_model is not None for a in alerts)
    assert event_problems(updates, alerts) == []
    assert {u.star_id for u in updates if u.kind == "INITIAL"} == set(alerted)
    for alert in alerts:
        model = alert.event_model
        assert model is not None
        assert model.fitted_to_hjd == pytest.approx(alert.trigger_hjd)
    group = consumer_factory(group_id=settings.consumer.group_id)
    committed = group.committed([TopicPartition(t, p) for t, p in end], timeout=10)
    # Offsets committed for exactly the input, nothing more, nothing less.
    assert {(tp.topic, tp.partition): tp.offset for tp in committed} == end


def test_second_daemon_takes_over_with_identical_state(
    season: Path,
    topics_factory: Callable[..., Settings],
    consumer: Consumer,
    consumer_factory: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    settings = topics_factory(partitions=4)
    middle = SEASON_START + 60
    replay(settings, season, ReplayOptions(stop_hjd=middle, progress=False))
    send_flat(settings)
    first = Running(daemon_settings(settings, tmp_path / "a", "a"))
    try:
        wait_until(lambda: caught_up([first], ends(settings, consumer)), 240, "daemon a")
        # b joins mid-stream on another "machine" (no checkpoints): rebuilds from the topics.
        second = Running(daemon_settings(settings, tmp_path / "b", "b"))
        try:
            wait_until(
                lambda: (
                    len(first.daemon.partitions.owned) == 2
                    and len(second.daemon.partitions.owned) == 2
                ),
                120,
                "the rebalance",
            )
            replay(settings, season, ReplayOptions(start_hjd=middle, progress=False))
            end = ends(settings, consumer)
            wait_until(lambda: caught_up([first, second], end), 240, "both daemons")
        finally:
            second.stop()
        # a takes b's partitions back: restores its own (older) checkpoints and replays.
        wait_until(lambda: caught_up([first], end), 240, "daemon a alone")
    finally:
        first.stop()
    # However the partitions moved (rebuilt on b, restored and replayed on a), every star
    # alerted at most once: the alert topic, read back on assignment, is the alert-once truth.
    alerted = Counter(a.star_id for a in read_alerts(settings, consumer_factory()))
    print(f"\n{sum(alerted.values())} alerts for {len(alerted)} stars across the takeovers")
    assert alerted
    assert max(alerted.values()) == 1
    reference = Running(
        daemon_settings(
            settings.model_copy(
                update={"consumer": settings.consumer.model_copy(update={"group_id": "ref"})}
            ),
            tmp_path / "ref",
        )
    )
    try:
        wait_until(lambda: caught_up([reference], end), 240, "the reference daemon")
    finally:
        reference.stop()
    assert sorted(first.stores) == sorted(reference.stores) == [0, 1, 2, 3]
    assert second.stores, "b never owned a partition"
    for partition, store in reference.stores.items():
        assert len(store) > 0
        assert store_differences(first.stores[partition], store) == []
    for partition, store in second.stores.items():  # b's state when it left equals too
        assert len(store) == len(reference.stores[partition])


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def test_sigterm_drains_commits_and_checkpoints(
    season: Path,
    topics_factory: Callable[..., Settings],
    consumer: Consumer,
    consumer_factory: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    settings = topics_factory(partitions=2)
    replay(settings, season, ReplayOptions(progress=False))
    end = ends(settings, consumer)
    env = daemon_env(settings, tmp_path / "state", batch_messages=5, http_port=0)
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    port = None
    try:
        for line in process.stdout:
            lines.append(line)
            if '"event": "started"' in line:
                port = json.loads(line)["http_port"]
            if '"event": "batch"' in line:
                break
        assert port is not None
        assert http_get(port, "/healthz") == (200, "ok\n")
        assert http_get(port, "/readyz") == (200, "ok\n")  # fresh group: nothing to replay
        status, metrics = http_get(port, "/metrics")
        assert status == 200
        assert "lensnet_observations_total" in metrics
        assert "lensnet_transactions_total" in metrics
        version = load_artifact()[1]["version"]
        assert f'lensnet_model_info{{version="{version}"}} 1.0' in metrics
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rest, _ = process.communicate(timeout=60)
        drain_s = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines += rest.splitlines()
    log = "\n".join(lines)
    assert process.returncode == 0, log[-3000:]
    assert "signal received, draining" in log
    assert '"event": "stopped"' in log
    print(f"\ndrained and exited {drain_s:.1f} s after SIGTERM")
    for partition in range(2):
        assert (tmp_path / "state" / f"partition-{partition}" / "state.ckpt").exists()
    # What was committed is exactly what the checkpoints cover, and a restart resumes there.
    group = consumer_factory(group_id=settings.consumer.group_id)
    committed = group.committed([TopicPartition(t, p) for t, p in end], timeout=10)
    restored = {
        p: StarStore.restore(tmp_path / "state" / f"partition-{p}", StoreConfig()) for p in range(2)
    }
    progressed = 0
    for tp in committed:
        checkpoint = restored[tp.partition]
        assert checkpoint is not None
        covered = checkpoint[1][tp.topic]
        # Nothing consumed yet from a topic-partition: no commit, the checkpoint at its start.
        assert covered == (tp.offset if tp.offset >= 0 else 0)
        assert covered <= end[(tp.topic, tp.partition)]
        progressed += covered > 0
    assert progressed > 0


def test_a_daemon_killed_before_its_checkpoint_interval_restores_what_it_processed(
    season: Path, topics_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """Checkpoints by rows (``state.checkpoint_rows``): a daemon killed -9 long before its
    checkpoint interval leaves checkpoints of what it processed, so its restart restores them
    instead of rebuilding from the beginning of the topics (a crash loop makes progress)."""
    settings = topics_factory(partitions=2)
    replay(settings, season, ReplayOptions(progress=False))
    env = daemon_env(
        settings,
        tmp_path / "state",
        batch_messages=5,
        LENSNET_STATE__CHECKPOINT_INTERVAL_S="1000000",
        LENSNET_STATE__CHECKPOINT_ROWS="3000",
    )
    command = [sys.executable, "-m", "consumer.cli", "run"]
    checkpointed = set()
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as first:
        assert first.stdout is not None
        deadline = threading.Timer(120.0, first.kill)  # no checkpoint: fail, do not hang
        deadline.start()
        try:
            for line in first.stdout:
                if '"event": "checkpoint"' in line:
                    checkpointed.add(json.loads(line)["partition"])
                    if len(checkpointed) == 2:
                        break
        finally:
            deadline.cancel()
            first.kill()  # kill -9, mid-stream: no checkpoint on the way out
            first.communicate(timeout=30)
    assert checkpointed == {0, 1}
    again = subprocess.run(
        [*command, "--until-end"], env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    opened = [
        json.loads(line)
        for line in again.stdout.splitlines()
        if '"event": "partition opened"' in line
    ]
    assert sorted(o["partition"] for o in opened) == [0, 1]
    assert all(o["source"] == "checkpoint" for o in opened), opened
    assert all(sum(o["start"].values()) > 0 for o in opened), opened


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_poison_messages_go_to_the_dead_letter_topic(
    mode: str,
    topics_factory: Callable[..., Settings],
    consumer: Consumer,
    consumer_factory: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    settings = topics_factory(partitions=2)
    good = flat_stars(epochs=60)
    n_good = sum(len(obs) for obs in good.values())
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    topic = settings.topics.photometry("CTIO")
    rng = np.random.default_rng(1)
    junk = [rng.bytes(int(rng.integers(0, 300))) for _ in range(20)]
    valid = encode_batch(PhotometryBatch("CTIO", good["CTIO"].take(slice(0, 10))))
    junk += [valid[: len(valid) // 2], encode_batch(PhotometryBatch("SAAO", good["SAAO"]))]
    for value in junk:
        producer.produce(topic, value=value, partition=0)
    bad = good["SSO"].take(slice(0, 8))
    flux = bad.flux.copy()
    flux[:3] = np.nan
    err = bad.flux_err.copy()
    err[3:5] = -1.0
    hjd = bad.hjd.copy()
    hjd[5] = 2_600_000.0  # far future
    poisoned = Observations(
        **{
            **{f: getattr(bad, f) for f in bad.__dataclass_fields__},
            "flux": flux,
            "flux_err": err,
            "hjd": hjd,
        }
    )
    producer.flush(10)
    with PhotometryProducer(settings.kafka, settings.topics, settings.producer) as photometry:
        for site, obs in good.items():
            photometry.send(site, obs)
        photometry.send("SSO", poisoned)
    end = ends(settings, consumer)
    configured = daemon_settings(settings, tmp_path / "state")
    daemon = configured.daemon.model_copy(update={"mode": mode})
    running = Running(configured.model_copy(update={"daemon": daemon}))
    try:
        wait_until(lambda: caught_up([running], end), 120, "the daemon")
    finally:
        running.stop()
    reasons: Counter[str] = Counter()
    sources = set()
    letters = read_topic(
        consumer_factory(), settings.topics.dead_letter, settings.topics.alert_partitions
    )
    for message in letters:
        headers: dict[str, Any] = dict(message.headers() or [])
        reasons[headers[REASON_HEADER].decode()] += 1
        sources.add(headers[SOURCE_TOPIC_HEADER].decode())
        assert int(headers[SOURCE_OFFSET_HEADER]) >= 0
    print(f"\ndead letters by reason: {dict(reasons)}")
    assert reasons["undecodable"] == len(junk)
    assert reasons["non_finite"] == 1
    assert reasons["bad_flux_err"] == 1
    assert reasons["bad_time"] == 1
    held = sum(
        sum(store.counts(int(i))) for store in running.stores.values() for i in store.star_ids
    )
    assert held == n_good  # every valid observation is in the state (the 2 valid poisoned
    # rows repeat good ones: duplicates, ignored)
    assert topic in sources
