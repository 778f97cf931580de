"""Daemon latency: observation produced -> alert produced, at half the measured maximum rate.

Run by hand from the repository root::

    python bench/bench_latency.py [--stars 200] [--seed 1] [--bootstrap HOST:PORT]

Without ``--bootstrap`` it starts a local broker (``deploy/local-kafka/kafka.sh``) and stops it
at the end. Two runs of the whole daemon (``consumer.daemon.Daemon``, exactly-once mode, in
this process, pinned to CPU 0 with one torch thread) on a simulated season (``lensnet
simulate``), each with fresh topics and consumer group:

1. **Maximum rate.** The season is replayed unpaced into the photometry topics first; the
   daemon then drains it. Rate = observations / (first batch started -> input drained).
2. **Latency.** The daemon runs first; the season is replayed at half that rate
   (``ReplayOptions(max_rate=...)``) while it consumes. For every alert the latency is the
   wall time from the Kafka timestamp (producer create time) of the newest photometry message
   of the alert's partition in the batch that raised it, to the alert's production: the
   ``lensnet_observation_to_alert_seconds`` metric, recorded here value by value.

Prints the rate, the number of alerts and the latency p50 / p90 / p99 / max.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from confluent_kafka import TopicPartition

from consumer.daemon import Daemon
from consumer.edge.kafka import make_admin, make_consumer, watermarks
from consumer.edge.topics import ensure_topics, required_topics
from consumer.logs import configure_logging
from consumer.pipeline.ingest import IngestResult
from consumer.pipeline.windows import BatchReport
from consumer.seasons.replay import ReplayOptions, replay
from consumer.settings import (
    ConsumerSettings,
    DaemonSettings,
    KafkaSettings,
    LogSettings,
    Settings,
    StateSettings,
    TopicSettings,
)
from model.simulate import SimulationConfig, write_season

REPO = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO / "deploy" / "local-kafka" / "kafka.sh"


def settings_for(bootstrap: str, state: Path) -> Settings:
    name = f"bench-latency-{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=TopicSettings(
            photometry_prefix=f"{name}.photometry.",
            alerts=f"{name}.alerts",
            dead_letter=f"{name}.deadletter",
            events=f"{name}.events",
            partitions=4,
        ),
        consumer=ConsumerSettings(group_id=name, session_timeout_ms=10_000),
        state=StateSettings(directory=state / name),
        daemon=DaemonSettings(http_port=-1, instance_id=name),
        log=LogSettings(level="WARNING"),
    )


class Recorded:
    """A daemon on a thread whose observation->alert latencies are kept value by value."""

    def __init__(self, settings: Settings) -> None:
        self.daemon = Daemon(settings)
        self.latencies: list[float] = []
        self.first_batch: float | None = None
        histogram = self.daemon.metrics.alert_latency
        observe = histogram.observe

        def keep(value: float, exemplar: Any = None) -> None:
            self.latencies.append(value)
            observe(value)

        histogram.observe = keep  # type: ignore[method-assign,assignment]
        process = self.daemon.process
        self.rows = 0

        def timed(result: IngestResult) -> BatchReport:
            if self.first_batch is None:
                self.first_batch = time.perf_counter()
            report = process(result)
            self.rows += report.observations
            return report

        self.daemon.process = timed  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)

    def processed(self) -> int:
        """Observations in the batches committed so far (offsets are per message; count rows)."""
        return self.rows

    def wait_drained(self, ends: dict[tuple[str, int], int], timeout_s: float) -> float:
        """Wait until the committed positions reach ``ends``; the time it happened."""
        deadline = time.monotonic() + timeout_s
        positions = self.daemon.partitions.positions
        while any(positions.get(key, -1) < offset for key, offset in ends.items()):
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit(f"daemon did not drain the input within {timeout_s} s")
            time.sleep(0.02)
        return time.perf_counter()


def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    consumer = make_consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "bench-latency-ends"}
    )
    try:
        return {
            (topic, p): watermarks(consumer, TopicPartition(topic, p))[1]
            for topic in settings.topics.photometry_topics()
            for p in range(settings.topics.partitions)
        }
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stars", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    broker_dir = None
    bootstrap = args.bootstrap
    try:
        if bootstrap is None:
            broker_dir = work / "kafka"
            started = subprocess.run(
                [str(KAFKA_SH), "start", str(broker_dir)], capture_output=True, text=True
            )
            if started.returncode != 0:
                raise SystemExit(f"kafka.sh start failed: {started.stderr.strip()}")
            bootstrap = started.stdout.strip().splitlines()[-1]
        season = work / "season"
        write_season(SimulationConfig(n_stars=args.stars, seed=args.seed), season, progress=False)

        # 1. maximum rate: everything in the topics, then drain.
        settings = settings_for(bootstrap, work)
        configure_logging(settings.log)
        ensure_topics(make_admin(settings.kafka), required_topics(settings.topics))
        replay(settings, season, ReplayOptions(progress=False))
        run = Recorded(settings)
        run.thread.start()
        end = run.wait_drained(end_offsets(settings), 900)
        assert run.first_batch is not None
        rate = run.processed() / (end - run.first_batch)
        run.daemon.stop()
        run.thread.join(60)
        print(
            f"maximum rate: {run.processed()} observations in "
            f"{end - run.first_batch:.1f} s = {rate:,.0f} obs/s (1 core), "
            f"{len(run.latencies)} alerts"
        )

        # 2. latency at half that rate, daemon consuming live.
        settings = settings_for(bootstrap, work)
        ensure_topics(make_admin(settings.kafka), required_topics(settings.topics))
        live = Recorded(settings)
        live.thread.start()
        while not live.daemon.partitions.ready:
            time.sleep(0.1)
        started_at = time.perf_counter()
        summary = replay(settings, season, ReplayOptions(max_rate=rate / 2, progress=False))
        live.wait_drained(end_offsets(settings), 900)
        elapsed = time.perf_counter() - started_at
        live.daemon.stop()
        live.thread.join(60)
        latencies = np.array(live.latencies)
        print(
            f"paced replay: {summary.sent} observations at <= {rate / 2:,.0f} obs/s "
            f"in {elapsed:.1f} s, {len(latencies)} alerts"
        )
        if len(latencies):
            p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
            print(
                f"observation -> alert latency: p50 {p50:.3f} s, p90 {p90:.3f} s, "
                f"p99 {p99:.3f} s, max {latencies.max():.3f} s"
            )
    finally:
        if broker_dir is not None:
            subprocess.run([str(KAFKA_SH), "stop", str(broker_dir)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
