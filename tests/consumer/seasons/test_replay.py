"""Replay of a simulated season into the real local broker: exactly once, in time order."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.constants import SITES
from consumer.edge.kafka import watermarks
from consumer.edge.photometry import PhotometryDecoder
from consumer.seasons.replay import ReplayOptions, _slices, load_season, replay
from consumer.settings import Settings
from model.simulate import SimulationConfig, write_season

Row = tuple[str, int, float]


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("season")
    write_season(SimulationConfig(n_stars=24, seed=3, season_days=40.0), out, progress=False)
    return out


def season_rows(season: Path) -> Counter[Row]:
    table, _, _ = load_season(season)
    obs = table.observations
    sites = [SITES[i] for i in table.site.tolist()]
    return Counter(zip(sites, obs.star_id.tolist(), obs.hjd.tolist(), strict=True))


def read_back(settings: Settings, consumer: Consumer) -> tuple[Counter[Row], bool]:
    """Every row in the photometry topics, and whether each partition's HJDs never decrease."""
    decoder = PhotometryDecoder()
    assignment = []
    for site in SITES:
        topic = settings.topics.photometry(site)
        assignment += [TopicPartition(topic, p, 0) for p in range(settings.topics.partitions)]
    ends = {(tp.topic, tp.partition): watermarks(consumer, tp)[1] for tp in assignment}
    consumer.assign(assignment)
    rows: Counter[Row] = Counter()
    last_hjd: dict[tuple[str, int], float] = defaultdict(lambda: -np.inf)
    ordered = True
    remaining = sum(ends.values())
    deadline = time.monotonic() + 60
    while remaining > 0 and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=500, timeout=0.5):
            assert message.error() is None
            value, where = message.value(), (message.topic(), message.partition())
            assert value is not None
            assert where[0] is not None
            assert where[1] is not None
            key = (where[0], where[1])
            remaining -= 1
            batch = decoder.decode(value)
            hjd = batch.observations.hjd
            if hjd[0] < last_hjd[key] or np.any(np.diff(hjd) < 0):
                ordered = False
            last_hjd[key] = float(hjd[-1])
            rows.update(
                zip(
                    [batch.site] * len(hjd),
                    batch.observations.star_id.tolist(),
                    hjd.tolist(),
                    strict=True,
                )
            )
    assert remaining == 0
    return rows, ordered


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("slice_days", [None, 0.1, 0.02])
def test_slices_cover_every_row_once_and_never_straddle_a_window(
    seed: int, slice_days: float | None
) -> None:
    rng = np.random.default_rng(seed)
    hjd = 2_461_000.0 + np.sort(rng.uniform(0, 3, int(rng.integers(1, 2000))))
    bounds = list(_slices(hjd, slice_days, 400, 0.25))
    assert bounds[0][0] == 0
    assert bounds[-1][1] == len(hjd)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    for start, stop in bounds:
        assert stop > start
        window = np.floor(hjd[start:stop] / 0.25)
        assert window.min() == window.max()
        if slice_days is None:
            assert stop - start <= 400
        else:
            assert hjd[stop - 1] - hjd[start] < slice_days


def test_load_season_is_in_global_time_order(season: Path) -> None:
    table, report, stars = load_season(season)
    assert stars == 24
    # The simulator's own side files are reported, not read as stars.
    assert {Path(path).name for path, _ in report.skipped} <= {"labels.csv", "season.json"}
    assert np.all(np.diff(table.observations.hjd) >= 0)
    window, _, _ = load_season(season, 2_461_080.0, 2_461_090.0)
    assert window.observations.hjd.min() >= 2_461_080.0
    assert window.observations.hjd.max() < 2_461_090.0


@pytest.mark.kafka
def test_replay_delivers_every_observation_once_in_time_order(
    season: Path,
    topics_factory: Callable[..., Settings],
    consumer_factory: Callable[..., Consumer],
) -> None:
    settings = topics_factory(partitions=3)
    summary = replay(settings, season, ReplayOptions(progress=False))
    expected = season_rows(season)
    assert summary.sent == summary.observations == sum(expected.values())
    rows, ordered = read_back(settings, consumer_factory())
    assert rows == expected
    assert ordered
    again = replay(settings, season, ReplayOptions(progress=False))
    assert again.sent == 0
    assert again.already_delivered == summary.observations


@pytest.mark.kafka
def test_interrupted_replay_resumes_without_duplicates(
    season: Path,
    topics_factory: Callable[..., Settings],
    consumer_factory: Callable[..., Consumer],
) -> None:
    settings = topics_factory(partitions=3)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")},
        "LENSNET_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LENSNET_TOPICS__PHOTOMETRY_PREFIX": settings.topics.photometry_prefix,
        "LENSNET_TOPICS__ALERTS": settings.topics.alerts,
        "LENSNET_TOPICS__DEAD_LETTER": settings.topics.dead_letter,
        "LENSNET_TOPICS__PARTITIONS": "3",
        "LENSNET_PRODUCER__BATCH_OBSERVATIONS": "50",
    }
    total = sum(season_rows(season).values())
    command = [sys.executable, "-m", "consumer.cli", "replay", str(season), "--no-progress"]
    slow = subprocess.Popen(
        [*command, "--rate", str(total // 6)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = consumer_factory()
    deadline = time.monotonic() + 90
    written = 0
    while time.monotonic() < deadline and slow.poll() is None:
        written = sum(
            watermarks(probe, TopicPartition(topic, p))[1]
            for topic in settings.topics.photometry_topics()
            for p in range(3)
        )
        if written >= 20:
            break
        time.sleep(0.05)
    assert slow.poll() is None, "replay finished before it could be interrupted"
    slow.send_signal(signal.SIGKILL)
    slow.wait(30)
    assert written >= 20

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    skipped = int(resumed.stdout.split("skipped ")[1].split()[0])
    assert 0 < skipped < total
    rows, ordered = read_back(settings, consumer_factory())
    assert rows == season_rows(season)
    assert ordered


def test_summary_reports_files_read_in_part() -> None:
    """Newcomer item 8: extra columns the reader ignored are reported by `lensnet replay`."""
    from consumer.seasons.archive import ReadReport
    from consumer.seasons.replay import ReplaySummary

    read = ReadReport(ignored=[(f"s/{i}/KMTC02_I.dat", "column 4 of 4 ignored") for i in range(7)])
    lines = ReplaySummary("r", 7, 10, read=read).lines()
    assert "read in part: s/0/KMTC02_I.dat: column 4 of 4 ignored" in lines
    assert lines[-1] == "... and 2 more files read in part"
