"""Ingest designs compared: decode -> per-star buffer -> rising test, in loops of its own.

Not the daemon: each implementation is a loop written here (``ours`` uses the daemon's decoder,
store and trigger kernel, but its own median cache, no aligner, windows, LensNet or
transactions). The product's own end-to-end rate is ``bench/bench_latency.py``'s.

Run by hand from the repository root::

    python bench/bench_ingest.py [--stars 20000] [--epochs 120] [--naive-stars 2000]
        [--quix-stars 300] [--bootstrap HOST:PORT] [--json PATH]

Without ``--bootstrap`` it starts a local broker with ``deploy/local-kafka/kafka.sh`` in a fresh
temporary directory and stops it at the end. A simulated season (``--stars`` stars, each seen
by the three sites once per epoch for ``--epochs`` epochs, one star in 50 rising over the last
fifth of the season) is produced in time order before anything is timed, then consumed from the
beginning by three implementations, each in its own process pinned to CPU 0 (the broker's
threads are moved to the other CPUs):

- ``ours``: the daemon's design. Columnar photometry batches (``PhotometryProducer``, 12
  co-partitioned partitions per site topic) read with ``consume(num_messages=500)``, decoded by
  ``PhotometryDecoder``, appended to one ``StarStore`` per partition; once per consumed batch
  ``rising_batch`` (``HIGH_CADENCE``, ``check=False``) on the stars that changed, reading the
  last n points (``to_trigger_arrays(last=n)``) against per-dataset median fluxes cached per
  star (:class:`BaselineCache`: numpy medians of the whole buffers at first sight, refreshed
  when the star has received > 10 % more observations).
- ``naive``: one 9-field Avro record per observation (``ingest_baselines.RECORD_SCHEMA``) on a
  topic of 12 partitions keyed by star, read with ``consume(num_messages=500)`` as well,
  ``fastavro.schemaless_reader`` per record into a dict, appended to a
  ``dict[star_id, dict[site, deque(maxlen=1500)]]`` of tuples; once per consumed batch the
  numpy rising test (``ingest_baselines.rising``: medians of each site's buffer, the last 5
  merged points all >= 3 sigma above them) on each changed star.
- ``quix``: the same records and test on Quix Streams (``bench/quix_ingest.py``, run with Quix
  Streams' own interpreter ``--quix-python``): RocksDB state per star holding each site's last
  1500 observations, the rising test on every message. Twice: with Quix Streams' changelog
  topics off (local state only, like our store between checkpoints) and on (its default).

The per-record baselines read the first ``--naive-stars`` / ``--quix-stars`` stars of the same
season (every epoch, so the per-star buffers grow exactly as in ``ours``); rates are per
observation. The time runs from the return of the first non-empty read to the processing of
the last observation; producing is not timed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

import fastavro
import numpy as np
import numpy.typing as npt
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition
from ingest_baselines import BUFFERED, CAPACITY_PER_SITE, RECORD_SCHEMA, rising

from consumer.alertfinder.api import HIGH_CADENCE, rising_batch
from consumer.constants import SITES
from consumer.edge.kafka import (
    consumer_config,
    make_admin,
    make_consumer,
    make_producer,
    producer_config,
)
from consumer.edge.keys import star_key
from consumer.edge.photometry import Observations, PhotometryDecoder
from consumer.edge.produce import PhotometryProducer
from consumer.edge.topics import TopicSpec, ensure_topics, required_topics
from consumer.exceptions import KafkaClientError
from consumer.settings import ConsumerSettings, KafkaSettings, ProducerSettings, TopicSettings
from consumer.state.store import StarStore, StoreConfig, TriggerInput

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

REPO = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO / "deploy" / "local-kafka" / "kafka.sh"
QUIX_SCRIPT = Path(__file__).with_name("quix_ingest.py")

T0 = 2_460_000.0
CADENCE_DAYS = 0.05
SITE_OFFSET_DAYS = 0.01  # the sites' frames of one epoch, a quarter of an hour apart
RISING_EVERY = 50
#: Columns of one store dataset's baseline cache: 3 sites x at most 2 field tags.
MAX_DATASETS = 6
#: consume() waits this long for a full 500 messages; short, so the last, partial read of the
#: topics adds little idle time (with a backlog every read is full either way).
CONSUME_TIMEOUT_S = 0.05
#: The consumer under test runs on this CPU; the broker on the others.
CONSUMER_CORE = 0
#: One thread everywhere: the figures are per core.
ONE_THREAD = dict.fromkeys(
    ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1"
)


class Season:
    """Simulated photometry: each star once per epoch and site, in time order.

    Star ids are large and unordered like survey ids; baselines 2e3-5e4 flux units with a
    per-star error of 20-60; one star in ``RISING_EVERY`` rises by 4 sigma more every epoch
    over the last fifth of the season. ``frame(epoch, site)`` is deterministic, so a subset of
    the stars (``n``) sees exactly the observations the full season gives them.
    """

    def __init__(self, stars: int, epochs: int, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.stars, self.epochs, self.seed = stars, epochs, seed
        self.star_id = 10**9 + 1000 * np.arange(stars) + rng.integers(0, 1000, stars)
        self.baseline = rng.uniform(2e3, 5e4, stars)
        self.flux_err = rng.uniform(20.0, 60.0, stars)
        self.rising = np.arange(stars) % RISING_EVERY == 0
        self.rise_epoch = int(0.8 * epochs)

    def frame(self, epoch: int, site: int, n: int | None = None) -> Observations:
        """One site's observation of the first ``n`` stars (default: all) at one epoch."""
        rng = np.random.default_rng([self.seed, epoch, site])
        rise = 4.0 * max(0, epoch - self.rise_epoch + 1) * self.rising * self.flux_err
        flux = self.baseline + rise + rng.normal(0.0, 1.0, self.stars) * self.flux_err
        count = self.stars if n is None else n
        scalar = np.ones(count)
        return Observations.from_columns(
            star_id=self.star_id[:count],
            field=scalar,
            chip=scalar * 0,
            ra=scalar * 268.0,
            dec=scalar * -29.0,
            x=rng.uniform(0, 9000, count),
            y=rng.uniform(0, 9000, count),
            hjd=scalar * (T0 + epoch * CADENCE_DAYS + site * SITE_OFFSET_DAYS),
            band=scalar * 0,
            flux=flux[:count],
            flux_err=self.flux_err[:count],
            sky=scalar * rng.uniform(300, 3000),
            fwhm=scalar * rng.uniform(1.0, 3.0),
            airmass=scalar * rng.uniform(1.0, 2.0),
            psf_quality=rng.uniform(50, 100, count),
        )


# -- the daemon's design ---------------------------------------------------------------------


def dataset_medians(flux: FloatArray, dataset_offsets: IntArray) -> FloatArray:
    """Median of each CSR dataset, (D,); NaN for empty ones. Two sorts for all of them."""
    lengths = np.diff(dataset_offsets)
    dataset = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    # By flux, then stably by dataset: the same order as np.lexsort((flux, dataset)), ~2x faster.
    by_flux = np.argsort(flux)
    ordered = flux[by_flux[np.argsort(dataset[by_flux], kind="stable")]]
    if len(ordered) == 0:
        return np.full(len(lengths), np.nan)
    low = np.clip(dataset_offsets[:-1] + (lengths - 1) // 2, 0, len(ordered) - 1)
    high = np.clip(dataset_offsets[:-1] + lengths // 2, 0, len(ordered) - 1)
    return np.where(lengths > 0, 0.5 * (ordered[low] + ordered[high]), np.nan)


class BaselineCache:
    """Per-dataset median flux of each star of one store, refreshed as the star grows.

    The rising test reads the last n points of each dataset against the median of all of them;
    the medians are computed from the whole buffers (``to_trigger_arrays(ids)``) when a star is
    first tested, when its datasets change (a new site or field) and when it has received more
    than ``growth`` x the observations it had at the last refresh. Sorted-array index, vectorised.
    """

    def __init__(self, growth: float = 0.1) -> None:
        self.growth = growth
        self.ids = np.empty(0, dtype=np.int64)  # (C,) sorted
        self.received = np.empty(0, dtype=np.int64)  # (C,) observations received so far
        self.at_refresh = np.empty(0, dtype=np.int64)  # (C,) received at the last refresh
        self.n_datasets = np.empty(0, dtype=np.int64)  # (C,) datasets of the cached medians
        self.medians = np.empty((0, MAX_DATASETS))  # (C, 6) in to_trigger_arrays order
        self.refreshed = 0  # star refreshes done
        self.refreshed_points = 0  # points read for them

    def receive(self, star_ids: IntArray) -> None:
        """Count the rows of one batch, (N,) star ids (any order, repeats allowed)."""
        ids, counts = np.unique(star_ids, return_counts=True)
        new = ids[~np.isin(ids, self.ids, assume_unique=True)]
        if len(new):
            order = np.argsort(np.concatenate([self.ids, new]), kind="stable")
            zeros = np.zeros(len(new), dtype=np.int64)
            self.ids = np.concatenate([self.ids, new])[order]
            self.received = np.concatenate([self.received, zeros])[order]
            self.at_refresh = np.concatenate([self.at_refresh, zeros])[order]
            self.n_datasets = np.concatenate([self.n_datasets, zeros])[order]
            blank = np.full((len(new), MAX_DATASETS), np.nan)
            self.medians = np.concatenate([self.medians, blank])[order]
        self.received[np.searchsorted(self.ids, ids)] += counts

    def baseline(self, store: StarStore, cut: TriggerInput) -> FloatArray:
        """(D,) medians for the datasets of ``cut`` (stars already counted by receive)."""
        position = np.searchsorted(self.ids, cut.star_ids)
        n_datasets = np.diff(cut.star_offsets)
        stale = (self.n_datasets[position] != n_datasets) | (
            self.received[position] > (1.0 + self.growth) * self.at_refresh[position]
        )
        if stale.any():
            rows = position[stale]
            full = store.to_trigger_arrays(cut.star_ids[stale])
            medians = dataset_medians(full.flux, full.dataset_offsets)
            per_star = np.diff(full.star_offsets)
            first = np.repeat(full.star_offsets[:-1], per_star)
            self.medians[rows] = np.nan
            self.medians[np.repeat(rows, per_star), np.arange(len(medians)) - first] = medians
            self.n_datasets[rows] = per_star
            self.at_refresh[rows] = self.received[rows]
            self.refreshed += len(rows)
            self.refreshed_points += len(full.t)
        return self.medians[position][np.arange(MAX_DATASETS) < n_datasets[:, None]]


def warm_up_ours() -> None:
    """Load the compiled kernels (numba cache) and touch every path outside the timed region."""
    season = Season(40, 12)
    store = StarStore(StoreConfig())
    cache = BaselineCache()
    for epoch in range(12):
        for site in range(3):
            batch = season.frame(epoch, site)
            result = store.append(site, batch)
            cache.receive(batch.star_id)
            cut = store.to_trigger_arrays(result.changed, last=HIGH_CADENCE.n)
            run_rising(cut, cache.baseline(store, cut))


def run_rising(cut: TriggerInput, baseline: FloatArray) -> npt.NDArray[np.bool_]:
    rule = HIGH_CADENCE
    return rising_batch(
        cut.t,
        cut.flux,
        cut.flux_err,
        cut.dataset_offsets,
        cut.star_offsets,
        k=rule.k,
        n=rule.n,
        n_sigma=rule.n_sigma,
        baseline=baseline,
        check=False,
    ).passed


class Clock:
    """Wall time from the first observation read to the last processed, and CPU time."""

    def __init__(self) -> None:
        self.first = self.last = 0.0
        self.cpu_first = self.cpu_last = 0.0
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.first, self.cpu_first = time.perf_counter(), cpu_seconds()

    def stop(self) -> None:
        self.last, self.cpu_last = time.perf_counter(), cpu_seconds()

    def result(self, observations: int) -> dict[str, Any]:
        seconds = self.last - self.first
        return {
            "observations": observations,
            "seconds": seconds,
            "cpu_s": self.cpu_last - self.cpu_first,
            "obs_per_s": observations / seconds,
        }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pin(core: int | None) -> None:
    """Run this process on one CPU (threads started later inherit it)."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


def read_all(
    args: argparse.Namespace, assignment: list[TopicPartition], name: str
) -> Iterator[list[Message]]:
    """Batches of ``consume(num_messages=500)`` from the beginning of every assigned partition."""
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap)
    group = f"{args.prefix}-{name}-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(consumer_config(kafka, ConsumerSettings(), group_id=group))
    try:
        consumer.assign(assignment)
        idle_since = time.monotonic()
        while True:
            messages = consumer.consume(num_messages=500, timeout=CONSUME_TIMEOUT_S)
            if not messages:
                if time.monotonic() - idle_since > args.idle_timeout:
                    raise KafkaClientError(f"{name}: no message for {args.idle_timeout} s")
                continue
            idle_since = time.monotonic()
            for message in messages:
                error: KafkaError | None = message.error()
                if error is not None:
                    raise KafkaClientError(
                        f"{name}: {message.topic()}[{message.partition()}]: {error.str()}"
                    )
            yield messages
    finally:
        consumer.close()


def part_ours(args: argparse.Namespace) -> dict[str, Any]:
    pin(args.core)
    warm_up_ours()
    topics = topic_settings(args)
    assignment = [
        TopicPartition(topic, partition, OFFSET_BEGINNING)
        for topic in topics.photometry_topics()
        for partition in range(args.partitions)
    ]
    decoder = PhotometryDecoder()
    stores = [StarStore(StoreConfig()) for _ in range(args.partitions)]
    caches = [BaselineCache() for _ in range(args.partitions)]
    phases = dict.fromkeys(("decode", "append", "baseline", "rising"), 0.0)
    clock = Clock()
    total = tests = passes = batches = 0
    flagged: set[int] = set()
    for messages in read_all(args, assignment, "ours"):
        clock.start()
        batches += 1
        changed: dict[int, list[IntArray]] = {}
        received: dict[int, list[IntArray]] = {}
        for message in messages:
            start = time.perf_counter()
            batch = decoder.decode(message.value() or b"")
            decoded = time.perf_counter()
            partition = message.partition() or 0
            result = stores[partition].append(batch.site, batch.observations)
            changed.setdefault(partition, []).append(result.changed)
            received.setdefault(partition, []).append(batch.observations.star_id)
            total += len(batch.observations)
            phases["decode"] += decoded - start
            phases["append"] += time.perf_counter() - decoded
        for partition, parts in changed.items():
            start = time.perf_counter()
            ids = np.unique(np.concatenate(parts))
            caches[partition].receive(np.concatenate(received[partition]))
            cut = stores[partition].to_trigger_arrays(ids, last=HIGH_CADENCE.n)
            baseline = caches[partition].baseline(stores[partition], cut)
            cached = time.perf_counter()
            passed = run_rising(cut, baseline)
            tests += len(ids)
            passes += int(passed.sum())
            flagged.update(ids[passed].tolist())
            phases["baseline"] += cached - start
            phases["rising"] += time.perf_counter() - cached
        if total >= args.expected:
            clock.stop()  # before the consumer closes, which leaving the loop does
            break
    out = clock.result(total)
    out |= {
        "rising_tests": tests,
        "passes": passes,
        "stars_flagged": len(flagged),
        "consume_batches": batches,
        "phases_s": phases,
        "baseline_refreshes": sum(cache.refreshed for cache in caches),
        "baseline_points_read": sum(cache.refreshed_points for cache in caches),
        "stars": sum(len(store) for store in stores),
    }
    return out


# -- the per-record baselines ----------------------------------------------------------------


def part_naive(args: argparse.Namespace) -> dict[str, Any]:
    pin(args.core)
    schema = fastavro.parse_schema(RECORD_SCHEMA)
    columns = itemgetter(*BUFFERED)
    assignment = [
        TopicPartition(args.naive_topic, partition, OFFSET_BEGINNING)
        for partition in range(args.partitions)
    ]
    buffers: dict[int, dict[int, deque[tuple[float, ...]]]] = {}
    clock = Clock()
    total = tests = passes = 0
    flagged: set[int] = set()
    phases = dict.fromkeys(("decode_and_buffer", "rising"), 0.0)
    for messages in read_all(args, assignment, "naive"):
        clock.start()
        start = time.perf_counter()
        changed: set[int] = set()
        for message in messages:
            payload = io.BytesIO(message.value() or b"")
            record = cast(dict[str, Any], fastavro.schemaless_reader(payload, schema, None))
            star = record["star_id"]
            sites = buffers.get(star)
            if sites is None:
                sites = buffers[star] = {}
            buffer = sites.get(record["site"])
            if buffer is None:
                buffer = sites[record["site"]] = deque(maxlen=CAPACITY_PER_SITE)
            buffer.append(columns(record))
            changed.add(star)
            total += 1
        buffered = time.perf_counter()
        for star in changed:
            series = []
            for buffer in buffers[star].values():
                rows = np.array(buffer)
                series.append((rows[:, 0], rows[:, 1], rows[:, 2]))
            tests += 1
            if rising(series):
                passes += 1
                flagged.add(star)
        phases["decode_and_buffer"] += buffered - start
        phases["rising"] += time.perf_counter() - buffered
        if total >= args.expected:
            clock.stop()
            break
    return clock.result(total) | {
        "rising_tests": tests,
        "passes": passes,
        "stars_flagged": len(flagged),
        "phases_s": phases,
        "stars": len(buffers),
    }


def part_quix(args: argparse.Namespace, changelog: bool) -> dict[str, Any]:
    """Run ``quix_ingest.py`` with Quix Streams' interpreter; its JSON line, or the error."""
    python = Path(args.quix_python)
    if not python.exists():
        return {"error": f"{python} not found (python3 -m venv it, then pip install quixstreams)"}
    state_dir = Path(tempfile.mkdtemp(prefix="bench-quix-state-"))
    config = {
        "bootstrap": args.bootstrap,
        "topic": args.quix_topic,
        "group": f"{args.prefix}-quix-{uuid.uuid4().hex[:8]}",
        "expected": args.expected,
        "state_dir": str(state_dir),
        "changelog": changelog,
        "core": args.core,
    }
    config_path = state_dir / "config.json"
    config_path.write_text(json.dumps(config))
    try:
        done = subprocess.run(
            [str(python), str(QUIX_SCRIPT), str(config_path)],
            capture_output=True,
            text=True,
            timeout=args.quix_timeout,
            env=os.environ | ONE_THREAD,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {args.quix_timeout} s"}
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-5:])
        return {"error": f"exit {done.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result | {"stars": args.quix_stars}


# -- set-up: broker, topics, data ------------------------------------------------------------


def topic_settings(args: argparse.Namespace) -> TopicSettings:
    return TopicSettings(
        photometry_prefix=f"{args.prefix}.photometry.",
        alerts=f"{args.prefix}.alerts",
        dead_letter=f"{args.prefix}.deadletter",
        events=f"{args.prefix}.events",
        partitions=args.partitions,
    )


def start_broker() -> tuple[Path, str]:
    directory = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    started = subprocess.run(
        [str(KAFKA_SH), "start", str(directory)], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise SystemExit(f"kafka.sh start failed: {started.stderr.strip()}")
    return directory, started.stdout.strip().splitlines()[-1]


def stop_broker(directory: Path) -> None:
    subprocess.run([str(KAFKA_SH), "stop", str(directory)], check=False)
    shutil.rmtree(directory, ignore_errors=True)


def pin_broker(directory: Path) -> bool:
    """Move every thread of the broker's JVM off the consumer's CPU; False where impossible."""
    others = set(range(os.cpu_count() or 1)) - {CONSUMER_CORE}
    pid_file = directory / "kafka.pid"
    if not others or not pid_file.exists() or not hasattr(os, "sched_setaffinity"):
        return False
    pid = int(pid_file.read_text())
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), others)
        except ProcessLookupError:
            continue  # the thread ended meanwhile
    return True


def produce_batches(kafka: KafkaSettings, topics: TopicSettings, season: Season) -> dict[str, Any]:
    start = time.perf_counter()
    with PhotometryProducer(kafka, topics, ProducerSettings(), name="bench-ingest") as producer:
        for epoch in range(season.epochs):
            for site, name in enumerate(SITES):
                producer.send(name, season.frame(epoch, site))
                producer.poll()
    return producer.stats() | {"seconds": time.perf_counter() - start}


def produce_records(kafka: KafkaSettings, topic: str, season: Season, n: int) -> dict[str, Any]:
    """One Avro record per observation of the first ``n`` stars, keyed by star, time order."""
    start = time.perf_counter()
    schema = fastavro.parse_schema(RECORD_SCHEMA)
    producer = make_producer(producer_config(kafka, ProducerSettings()))
    keys = [star_key(star) for star in season.star_id[:n].tolist()]
    errors: list[str] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error.str())

    sent = 0
    for epoch in range(season.epochs):
        for site in range(len(SITES)):
            obs = season.frame(epoch, site, n)
            rows = zip(
                obs.star_id.tolist(),
                *(getattr(obs, name).tolist() for name in BUFFERED),
                strict=True,
            )
            for key, (star, *values) in zip(keys, rows, strict=True):
                record = {"star_id": star, "site": site, **dict(zip(BUFFERED, values, strict=True))}
                buffer = io.BytesIO()
                fastavro.schemaless_writer(buffer, schema, record)
                while True:
                    try:
                        producer.produce(topic, buffer.getvalue(), key, on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.1)
                sent += 1
            producer.poll(0)
    if producer.flush(120.0) or errors:
        raise KafkaClientError(f"records to {topic}: undelivered or failed: {errors[:1]}")
    return {"observations": sent, "seconds": time.perf_counter() - start}


# -- report ----------------------------------------------------------------------------------


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| implementation | stars | observations | s | obs/s/core | CPU s/s | rising tests "
        "| stars flagged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | not run: {result['error']} |")
            continue
        lines.append(
            f"| {name} | {result.get('stars', '')} | {result['observations']:,} "
            f"| {result['seconds']:.1f} | {result['obs_per_s']:,.0f} "
            f"| {result['cpu_s'] / result['seconds']:.2f} | {result['rising_tests']:,} "
            f"| {result['stars_flagged']} |"
        )
    ours = results["ours"].get("obs_per_s")
    for name, result in results.items():
        if name != "ours" and ours and "obs_per_s" in result:
            lines.append(f"ours / {name}: x{ours / result['obs_per_s']:.1f}")
    return lines


def run_part(args: argparse.Namespace, part: str, expected: int) -> dict[str, Any]:
    """One implementation in a fresh process pinned to one CPU; its JSON result."""
    command = [
        sys.executable,
        __file__,
        "--part",
        part,
        "--bootstrap",
        args.bootstrap,
        "--prefix",
        args.prefix,
        "--partitions",
        str(args.partitions),
        "--expected",
        str(expected),
        "--idle-timeout",
        str(args.idle_timeout),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, env=os.environ | ONE_THREAD, check=False
    )
    if done.returncode != 0:
        return {"error": " | ".join(done.stderr.strip().splitlines()[-3:])}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--naive-stars", type=int, default=2_000)
    parser.add_argument("--quix-stars", type=int, default=300)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--bootstrap", help="use this running broker instead of starting one")
    parser.add_argument("--quix-python", default="/tmp/quix-venv/bin/python")
    parser.add_argument("--quix-timeout", type=float, default=300.0)
    parser.add_argument("--no-quix-changelog", action="store_true", help="skip that Quix run")
    parser.add_argument("--idle-timeout", type=float, default=60.0)
    parser.add_argument("--json", type=Path, help="write every figure here")
    # Internal: one implementation, run by main() in a child process.
    parser.add_argument("--part", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=f"bench-ingest-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--expected", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.core = CONSUMER_CORE if (os.cpu_count() or 1) > 1 else None
    args.naive_topic = f"{args.prefix}.records.naive"
    args.quix_topic = f"{args.prefix}.records.quix"
    if args.part:
        part = part_ours if args.part == "ours" else part_naive
        print(json.dumps(part(args), default=float))
        return

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, numpy {np.__version__}",
        flush=True,
    )
    broker_dir: Path | None = None
    if args.bootstrap is None:
        broker_dir, args.bootstrap = start_broker()
    try:
        pinned = broker_dir is not None and pin_broker(broker_dir)
        kafka = KafkaSettings(bootstrap_servers=args.bootstrap)
        topics = topic_settings(args)
        specs = required_topics(topics) + [
            TopicSpec(name, args.partitions, 1) for name in (args.naive_topic, args.quix_topic)
        ]
        ensure_topics(make_admin(kafka), specs)
        season = Season(args.stars, args.epochs)
        produced = {
            "ours": produce_batches(kafka, topics, season),
            "naive": produce_records(kafka, args.naive_topic, season, args.naive_stars),
            "quix": produce_records(kafka, args.quix_topic, season, args.quix_stars),
        }
        for name, figures in produced.items():
            print(f"produced {name}: {json.dumps(figures, default=float)}", flush=True)
        results: dict[str, dict[str, Any]] = {}
        results["ours"] = run_part(args, "ours", produced["ours"]["observations"])
        print(f"ours: {json.dumps(results['ours'], default=float)}", flush=True)
        results["naive"] = run_part(args, "naive", produced["naive"]["observations"])
        print(f"naive: {json.dumps(results['naive'], default=float)}", flush=True)
        args.expected = produced["quix"]["observations"]
        results["quix"] = part_quix(args, changelog=False)
        print(f"quix: {json.dumps(results['quix'], default=float)}", flush=True)
        if not args.no_quix_changelog:
            results["quix (changelog)"] = part_quix(args, changelog=True)
            print(f"quix (changelog): {json.dumps(results['quix (changelog)'])}", flush=True)
    finally:
        if broker_dir is not None:
            stop_broker(broker_dir)
    print("\n".join(table(results)))
    print(f"load average at the end (1, 5, 15 min): {os.getloadavg()}")
    if args.json:
        report = {
            "machine": {
                "processor": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "load_average_at_end": os.getloadavg(),
            },
            "config": {
                "stars": args.stars,
                "epochs": args.epochs,
                "naive_stars": args.naive_stars,
                "quix_stars": args.quix_stars,
                "partitions": args.partitions,
                "consumer_core": args.core,
                "broker_pinned_off_consumer_core": pinned,
            },
            "produced": produced,
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
