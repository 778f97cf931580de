# Quix Streams lives in its own virtual environment, not the project's: mypy there cannot see it.
# mypy: disable-error-code="import-not-found"
"""The Quix Streams baseline of ``bench/bench_ingest.py``: per-star buffers in RocksDB state.

Run by ``bench_ingest.py`` with Quix Streams' own interpreter (never the project's venv)::

    /tmp/quix-venv/bin/python bench/quix_ingest.py CONFIG.json

``CONFIG.json`` holds ``bootstrap``, ``topic``, ``group``, ``expected`` (records to consume),
``state_dir``, ``changelog`` (Quix Streams' changelog topics on or off) and ``core`` (CPU to
pin to, or null). One Avro record per observation (``ingest_baselines.RECORD_SCHEMA``, read by
Quix Streams' ``AvroDeserializer``), keyed by star; ``sdf.apply(..., stateful=True)`` keeps per
star and site the columns of the last 1500 observations (one state key per site, so a message
rewrites one site's lists) and runs the shared rising test on every message. Prints one JSON
line: records, seconds from the first to the last record, CPU seconds, rising tests passed.

Imports only Quix Streams, numpy, the standard library and ``ingest_baselines``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ingest_baselines import BUFFERED, CAPACITY_PER_SITE, RECORD_SCHEMA, rising

#: State key of each site's columns (sites are 0, 1, 2 as in ``consumer.constants.SITES``).
SITE_KEYS = ("site0", "site1", "site2")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StarBuffers:
    """The stateful step: buffer one observation in its star's state, then the rising test."""

    def __init__(self, expected: int, stop: Callable[[], None]) -> None:
        self.expected = expected
        self.stop = stop
        self.count = 0
        self.passes = 0
        self.flagged: set[int] = set()
        self.first = self.last = 0.0
        self.cpu_first = self.cpu_last = 0.0
        self.rising_s = 0.0

    def __call__(self, value: dict[str, Any], state: Any) -> None:
        if self.count == 0:
            self.first, self.cpu_first = time.perf_counter(), cpu_seconds()
        key = SITE_KEYS[value["site"]]
        columns: dict[str, list[float]] | None = state.get(key)
        if columns is None:
            columns = {name: [] for name in BUFFERED}
        for name in BUFFERED:
            columns[name].append(value[name])
        if len(columns["hjd"]) > CAPACITY_PER_SITE:
            for name in BUFFERED:
                del columns[name][0]
        state.set(key, columns)
        buffered = time.perf_counter()
        sites = []
        for site_key in SITE_KEYS:
            held = columns if site_key == key else state.get(site_key)
            if held:
                sites.append(
                    (
                        np.asarray(held["hjd"]),
                        np.asarray(held["flux"]),
                        np.asarray(held["flux_err"]),
                    )
                )
        if rising(sites):
            self.passes += 1
            self.flagged.add(value["star_id"])
        self.rising_s += time.perf_counter() - buffered  # reading the other sites' state, test
        self.count += 1
        if self.count == self.expected:
            self.last, self.cpu_last = time.perf_counter(), cpu_seconds()
            self.stop()

    def summary(self) -> dict[str, Any]:
        seconds = self.last - self.first
        return {
            "observations": self.count,
            "seconds": seconds,
            "cpu_s": self.cpu_last - self.cpu_first,
            "obs_per_s": self.count / seconds if seconds > 0 else 0.0,
            "rising_tests": self.count,
            "passes": self.passes,
            "stars_flagged": len(self.flagged),
            "phases_s": {"rising": self.rising_s},
        }


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    if config["core"] is not None:
        os.sched_setaffinity(0, {config["core"]})  # before any thread starts: they inherit it
    import quixstreams
    from quixstreams import Application
    from quixstreams.models.serializers.avro import AvroDeserializer

    app = Application(
        broker_address=config["bootstrap"],
        consumer_group=config["group"],
        auto_offset_reset="earliest",
        state_dir=config["state_dir"],
        use_changelog_topics=config["changelog"],
        loglevel="WARNING",
    )
    topic = app.topic(
        config["topic"],
        key_deserializer="bytes",
        value_deserializer=AvroDeserializer(schema=RECORD_SCHEMA),
    )
    buffers = StarBuffers(config["expected"], app.stop)
    app.dataframe(topic).apply(buffers, stateful=True)
    app.run()
    summary = buffers.summary()
    summary["quixstreams"] = quixstreams.__version__
    print(json.dumps(summary))
    if buffers.count != config["expected"]:
        sys.exit(f"quix_ingest: consumed {buffers.count} of {config['expected']} records")


if __name__ == "__main__":
    main()
