"""What the end-to-end benchmarks share: seasons by field mix, a local broker, ``lensnet run``
processes (this checkout's or another's) and what they read and published.

A daemon here is the product as deployed: ``python -m consumer.cli run --until-end`` in its own
process, configured through ``LENSNET_*`` variables, pinned to the CPUs it is given (librdkafka's
threads included; LensNet with one torch thread, the default). Its rate comes from its own
``batch`` log lines (each ends with the batch's wall time, ``ms``, and its ``observations``):
from the start of its first batch to the end of its last. ``code`` runs another checkout (a
baseline, e.g. ``git worktree add --detach ../base <commit>``) with the same interpreter and
packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from confluent_kafka import TopicPartition

from consumer.constants import HJD_OFFSET, SITES
from consumer.edge.alert import AlertDecoder
from consumer.edge.events import EventDecoder
from consumer.edge.kafka import make_admin, make_consumer, watermarks
from consumer.edge.photometry import PhotometryDecoder
from consumer.edge.topics import ensure_topics, required_topics
from consumer.settings import KafkaSettings, Settings, TopicSettings
from consumer.state.encoding import encode
from model.simulate import SimulationConfig, write_season

REPO: Final = Path(__file__).resolve().parent.parent
KAFKA_SH: Final = REPO / "deploy" / "local-kafka" / "kafka.sh"

#: The stars of a realistic field, by what they are. Most are constant or ordinary variables;
#: events and image artefacts are 1 % each; the other kinds of AlertFinder false positives
#: (outbursts, flares, trends, correlated noise, one-site drifts) 3 % of the rest.
REALISTIC: Final = {
    "class_fractions": (0.01, 0.01, 0.98),
    "no_subclasses": (
        ("constant", 0.85),
        ("mira", 0.015),
        ("semiregular", 0.015),
        ("osarg", 0.015),
        ("rr_lyrae", 0.015),
        ("cepheid", 0.01),
        ("eclipsing_binary", 0.015),
        ("contact_binary", 0.015),
        ("ellipsoidal", 0.01),
        ("irregular_variable", 0.01),
        ("dwarf_nova", 0.005),
        ("flare", 0.005),
        ("slow_trend", 0.005),
        ("noise_run", 0.005),
        ("airmass_trend", 0.004),
        ("sky_trend", 0.003),
        ("single_site_drift", 0.003),
    ),
}
#: ``realistic``: :data:`REALISTIC`; ``demo``: the simulator's defaults, as ``lensnet simulate``
#: and ``make demo`` (30 % events, 20 % artefacts, 50 % false positives of every kind).
MIXES: Final[dict[str, dict[str, Any]]] = {"realistic": REALISTIC, "demo": {}}
#: Stars per mix when not given: the issue's >= 2000 for the field, ``make demo``'s 200.
DEFAULT_STARS: Final = {"realistic": 2000, "demo": 200}


def season(mix: str, stars: int, seed: int, cache: Path) -> Path:
    """The simulated season of ``mix`` (written once into ``cache``, reused after)."""
    out = cache / f"season-{mix}-{stars}-{seed}"
    if not (out / "season.json").exists():
        config = SimulationConfig(n_stars=stars, seed=seed, **MIXES[mix])
        write_season(config, out, progress=False)
    return out


def season_counts(path: Path) -> dict[str, dict[str, int]]:
    """Stars per class and subclass, from the season's summary."""
    counts: dict[str, dict[str, int]] = json.loads((path / "season.json").read_text())["counts"]
    return counts


@contextmanager
def broker(bootstrap: str | None, work: Path, rebalance_delay_ms: int = 0) -> Iterator[str]:
    """``bootstrap`` as given, or a local KRaft broker in ``work`` for the duration, whose new
    consumer groups wait ``rebalance_delay_ms`` for more members before their first
    assignment (``group.initial.rebalance.delay.ms``)."""
    if bootstrap is not None:
        yield bootstrap
        return
    directory = work / "kafka"
    env = os.environ | {"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": str(rebalance_delay_ms)}
    started = subprocess.run(
        [str(KAFKA_SH), "start", str(directory)], capture_output=True, text=True, env=env
    )
    if started.returncode != 0:
        raise SystemExit(f"kafka.sh start failed: {started.stderr.strip()}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(directory)], capture_output=True)


def bench_settings(bootstrap: str, name: str, partitions: int) -> Settings:
    """Settings of fresh topics named after ``name`` (the photometry topics, alerts, dead
    letters, event updates), created on the broker."""
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=TopicSettings(
            photometry_prefix=f"{name}.photometry.",
            alerts=f"{name}.alerts",
            dead_letter=f"{name}.deadletter",
            events=f"{name}.events",
            partitions=partitions,
        ),
    )
    ensure_topics(make_admin(settings.kafka), required_topics(settings.topics))
    return settings


def with_outputs(settings: Settings, name: str) -> Settings:
    """The same photometry topics with alert, dead-letter and events topics of their own (a
    second daemon reading the same input: it reads its events topic back on assignment, so a
    shared one would change its decisions), created."""
    topics = settings.topics.model_copy(
        update={
            "alerts": f"{name}.alerts",
            "dead_letter": f"{name}.deadletter",
            "events": f"{name}.events",
        }
    )
    out = settings.model_copy(update={"topics": topics})
    ensure_topics(make_admin(out.kafka), required_topics(out.topics))
    return out


def events_topic(settings: Settings, code: Path) -> dict[str, str]:
    """The events topic's setting for a daemon of checkout ``code``: none for a baseline older
    than the events topic (its settings would reject it, and it writes no updates)."""
    source = code / "consumer" / "settings.py"
    if not source.exists() or "events: str" not in source.read_text():
        return {}
    return {"LENSNET_TOPICS__EVENTS": settings.topics.events}


class CpuClock:
    """A process's CPU time (user + system, every thread) sampled every 50 ms from
    ``/proc/<pid>/stat`` on a thread of its own until the process is gone: on a shared machine
    a rate per CPU second says what one core does, whatever else ran beside it."""

    TICK: Final = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int) -> None:
        self.samples: list[tuple[float, float]] = []  # (Unix time, CPU seconds)
        self._stat = Path(f"/proc/{pid}/stat")
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            try:
                fields = self._stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                return
            if fields[0] == "Z":  # exited, not yet reaped
                return
            self.samples.append((time.time(), (int(fields[11]) + int(fields[12])) / self.TICK))
            time.sleep(0.05)

    def between(self, start: float, end: float) -> float:
        """CPU seconds the process used from ``start`` to ``end`` (Unix times), interpolated."""
        if len(self.samples) < 2:
            return 0.0
        times, cpu = np.array(self.samples).T
        return float(np.interp(end, times, cpu) - np.interp(start, times, cpu))


@dataclass
class Daemon:
    """One ``lensnet run`` process, its log and its CPU clock."""

    process: subprocess.Popen[bytes]
    log: Path
    cpu: CpuClock

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise SystemExit(
                f"daemon did not finish within {timeout_s} s (log: {self.log})"
            ) from None

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM: finish the batch, commit, exit."""
        self.process.terminate()
        return self.wait(timeout_s)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log lines of one event, parsed."""
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{") and f'"event": "{name}"' in line:
                out.append(json.loads(line))
        return out


def start_daemon(
    settings: Settings,
    *,
    group: str,
    state: Path,
    log: Path,
    instance: str = "0",
    cpus: set[int] | None = None,
    code: Path = REPO,
    until_end: bool = True,
    extra: dict[str, str] | None = None,
    profile: Path | None = None,
) -> Daemon:
    """Start ``lensnet run`` (from checkout ``code``) in consumer group ``group``; under
    cProfile, its statistics written to ``profile`` at exit, when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
    env.update(
        {
            "PYTHONPATH": str(code),
            "LENSNET_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "LENSNET_TOPICS__PHOTOMETRY_PREFIX": settings.topics.photometry_prefix,
            "LENSNET_TOPICS__ALERTS": settings.topics.alerts,
            "LENSNET_TOPICS__DEAD_LETTER": settings.topics.dead_letter,
            "LENSNET_TOPICS__PARTITIONS": str(settings.topics.partitions),
            "LENSNET_CONSUMER__GROUP_ID": group,
            "LENSNET_STATE__DIRECTORY": str(state / f"{group}-{instance}"),
            "LENSNET_DAEMON__INSTANCE_ID": instance,
            "LENSNET_DAEMON__HTTP_PORT": "-1",
            "LENSNET_LOG__FORMAT": "json",
            **events_topic(settings, code),
            **(extra or {}),
        }
    )
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    command = [sys.executable, *profiler, "-m", "consumer.cli", "run"]
    command += ["--until-end"] if until_end else []
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=code, env=env, stdout=handle, stderr=subprocess.STDOUT, preexec_fn=pin
        )
    return Daemon(process, log, CpuClock(process.pid))


@dataclass
class Rate:
    """Observations processed by one or more daemons, over the wall time of their batches."""

    observations: int
    seconds: float
    batches: int
    first_start: float  # Unix time the first batch started
    last_end: float
    cpu_seconds: float = 0.0  # the daemons' CPU time over the same span, all together

    @property
    def per_second(self) -> float:
        return self.observations / self.seconds if self.seconds > 0 else 0.0

    @property
    def per_cpu_second(self) -> float:
        """Observations per CPU second: the rate per core on a machine not shared."""
        return self.observations / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


def rate_of(daemons: list[Daemon]) -> Rate:
    """The rate of ``daemons`` together, from their ``batch`` log lines."""
    starts, ends, observations, batches = [], [], 0, 0
    for daemon in daemons:
        for line in daemon.events("batch"):
            end = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
            starts.append(end - line["ms"] / 1000)
            ends.append(end)
            observations += int(line.get("observations", 0))
            batches += 1
    if not batches:
        return Rate(0, 0.0, 0, 0.0, 0.0)
    first, last = min(starts), max(ends)
    cpu = sum(daemon.cpu.between(first, last) for daemon in daemons)
    return Rate(observations, last - first, batches, first, last, cpu)


def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """High watermark of every photometry topic-partition."""
    consumer = make_consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "bench-ends"}
    )
    try:
        return {
            (topic, p): watermarks(consumer, TopicPartition(topic, p))[1]
            for topic in settings.topics.photometry_topics()
            for p in range(settings.topics.partitions)
        }
    finally:
        consumer.close()


def committed(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets on the photometry topics (-1001 where none)."""
    consumer = make_consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group}
    )
    try:
        wanted = [
            TopicPartition(topic, p)
            for topic in settings.topics.photometry_topics()
            for p in range(settings.topics.partitions)
        ]
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(wanted, 30)}
    finally:
        consumer.close()


def wait_committed(settings: Settings, group: str, timeout_s: float) -> None:
    """Until ``group`` committed the end of every photometry topic-partition."""
    ends = end_offsets(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        done = committed(settings, group)
        if all(done.get(key, -1) >= offset for key, offset in ends.items()):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"group {group} did not commit the input within {timeout_s} s")
        time.sleep(0.2)


def read_messages(settings: Settings, topic: str, partitions: int) -> list[Any]:
    """Every committed message of ``topic``, from the beginning."""
    consumer = make_consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"bench-read-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = [TopicPartition(topic, p, 0) for p in range(partitions)]
        ends = {tp.partition: watermarks(consumer, tp)[1] for tp in parts}
        # An empty partition's position stays unset (nothing is fetched): it is read already.
        parts = [tp for tp in parts if ends[tp.partition] > 0]
        if not parts:
            return []
        consumer.assign(parts)
        messages: list[Any] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    messages.append(message)
            if all(tp.offset >= ends[tp.partition] for tp in consumer.position(parts)):
                break
        return messages
    finally:
        consumer.close()


@dataclass(frozen=True)
class Published:
    """One alert as published: its decision and when it was produced."""

    star_id: int
    trigger_hjd: float
    p_event: float
    dchi2: float
    produced_ms: int  # the alert message's Kafka timestamp (producer create time)


def alerts_of(settings: Settings) -> list[Published]:
    """Every committed alert, in topic order per partition."""
    decoder = AlertDecoder()
    out = []
    for message in read_messages(
        settings, settings.topics.alerts, settings.topics.alert_partitions
    ):
        alert = decoder.decode(message.value(), message.headers())
        out.append(
            Published(
                alert.star_id,
                alert.trigger_hjd,
                alert.lensnet.p_event,
                alert.alertfinder.dchi2,
                message.timestamp()[1],
            )
        )
    return out


def updates_of(settings: Settings) -> list[str]:
    """Every committed event update as a comparable line (all but its publication time),
    sorted: the updates of two runs over the same input must be the same lines."""
    decoder = EventDecoder()
    out = []
    for message in read_messages(
        settings, settings.topics.events, settings.topics.alert_partitions
    ):
        update = decoder.decode(message.value(), message.headers())
        out.append(repr(replace(update, published_at=datetime.min)))
    return sorted(out)


@dataclass
class Decisions:
    """How two runs' alerts compare: per star, the first alert's trigger time and score."""

    same: int = 0
    differing: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differing


def compare(alerts: list[Published], reference: list[Published]) -> Decisions:
    """Stars alerted by one run only, or at another trigger time, or with another score."""
    mine = {a.star_id: a for a in reversed(alerts)}
    theirs = {a.star_id: a for a in reversed(reference)}
    out = Decisions()
    for star in sorted(mine.keys() | theirs.keys()):
        here, there = mine.get(star), theirs.get(star)
        if (
            here
            and there
            and (here.trigger_hjd, here.p_event) == (there.trigger_hjd, there.p_event)
        ):
            out.same += 1
            continue
        out.differing.append(f"star {star}: {there} vs {here}")
    duplicates = len(alerts) - len(mine)
    if duplicates:
        out.differing.append(f"{duplicates} duplicate alerts")
    return out


def observation_times(
    settings: Settings, wanted: set[tuple[int, int]]
) -> dict[tuple[int, int], int]:
    """For each ``wanted`` (star id, time code in seconds as the store keeps it): the Kafka
    timestamp (producer create time, ms) of the photometry message that carried it."""
    decoder = PhotometryDecoder()
    stars = np.array(sorted({star for star, _ in wanted}), dtype=np.int64)
    out: dict[tuple[int, int], int] = {}
    for site in SITES:
        topic = settings.topics.photometry(site)
        for message in read_messages(settings, topic, settings.topics.partitions):
            obs = decoder.decode(message.value()).observations
            rows = np.flatnonzero(np.isin(obs.star_id, stars))
            if len(rows) == 0:
                continue
            codes = encode(obs.take(rows)).t
            for star, code in zip(obs.star_id[rows].tolist(), codes.tolist(), strict=True):
                if (star, code) in wanted:
                    out.setdefault((star, code), message.timestamp()[1])
    return out


def trigger_code(trigger_hjd: float) -> int:
    """The store's time code (seconds since HJD 2450000) of an alert's trigger time."""
    return int(np.rint((trigger_hjd - HJD_OFFSET) * 86_400.0))
