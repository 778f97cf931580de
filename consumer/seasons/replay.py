"""Replay an archived or simulated season through the per-site photometry topics.

Observations go out in global time order, as the survey would have produced them: all rows of
the season (inside an optional HJD window) are sorted by (HJD, site, star), cut into time
slices, and each slice is sent site by site through
:class:`consumer.edge.produce.PhotometryProducer` (murmur2 partitioning, idempotent producer,
columnar batches).

Resuming without duplicates: row *g* of the sorted season carries sequence number *g*, and
every message carries the sequence number of its last row in the ``lensnet.seq`` header plus
the replay's identity (a hash of the season's files and the window) in ``lensnet.replay``. The
idempotent producer keeps each partition's log a prefix of what was sent to it, in order, even
when the process is killed mid-flight. So on start, replay reads the last message of every
partition of the three topics; where it belongs to the same replay, every row of that
(site, partition) up to its sequence number is already in the log and is skipped.
Caveat: only the last message per partition is examined, so interleaving another producer's
writes into the same topics between an interrupted run and its resumption defeats the check.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog
from confluent_kafka import KafkaException, TopicPartition
from tqdm import tqdm

from consumer.constants import SITES
from consumer.edge.kafka import consumer_config, make_consumer, watermarks
from consumer.edge.keys import partitions_for
from consumer.edge.photometry import Observations
from consumer.edge.produce import SEQUENCE_HEADER, PhotometryProducer
from consumer.exceptions import KafkaClientError, LensNetError
from consumer.seasons.archive import ReadReport, read_season, to_observations
from consumer.settings import ConsumerSettings, Settings

REPLAY_HEADER = "lensnet.replay"
SECONDS_PER_DAY = 86_400.0

log = structlog.get_logger(__name__)


class ReplayError(LensNetError):
    """The season cannot be replayed as asked."""


@dataclass(frozen=True)
class ReplayOptions:
    """How to pace and bound a replay.

    ``speed``: survey seconds per wall-clock second (``None`` = as fast as possible);
    ``max_rate``: cap in observations per second (``None`` = no cap); ``start_hjd`` /
    ``stop_hjd``: keep observations with start <= HJD < stop; ``slice_days``: width of the time
    slices sent together when paced by ``speed`` (one slice of every site is produced before
    the next); ``window_days``: no message straddles an HJD multiple of it, as no message of
    the survey (one exposure each) does; keep it the daemon's ``trigger.evaluation_days``,
    which evaluates a message's stars in the window of its first row.
    """

    speed: float | None = None
    max_rate: float | None = None
    start_hjd: float | None = None
    stop_hjd: float | None = None
    slice_days: float = 0.02
    window_days: float = 0.25
    progress: bool = True


@dataclass
class ReplaySummary:
    """What a replay did."""

    replay_id: str
    stars: int
    observations: int
    already_delivered: int = 0
    sent: int = 0
    messages: int = 0
    seconds: float = 0.0
    per_site: dict[str, int] = field(default_factory=dict)
    first_hjd: float = float("nan")
    last_hjd: float = float("nan")
    read: ReadReport | None = None

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        sites = ", ".join(f"{site} {count}" for site, count in self.per_site.items())
        return [
            f"replay {self.replay_id}: {self.stars} stars, {self.observations} observations "
            f"(HJD {self.first_hjd:.5f} to {self.last_hjd:.5f})",
            f"sent {self.sent} in {self.messages} messages ({sites}) in {self.seconds:.1f} s, "
            f"{rate:,.0f} obs/s",
            f"skipped {self.already_delivered} already delivered by an earlier run",
            *self._read_lines(),
        ]

    def _read_lines(self) -> list[str]:
        """Files of the season read in part (extra columns ignored), the first five."""
        ignored = self.read.ignored if self.read is not None else []
        lines = [f"read in part: {path}: {what}" for path, what in ignored[:5]]
        if len(ignored) > 5:
            lines.append(f"... and {len(ignored) - 5} more files read in part")
        return lines


@dataclass(frozen=True)
class SeasonTable:
    """Every observation of a season in global time order; ``site`` indexes SITES."""

    site: npt.NDArray[np.uint8]
    observations: Observations

    def __len__(self) -> int:
        return len(self.site)


def load_season(
    season_dir: Path, start_hjd: float | None = None, stop_hjd: float | None = None
) -> tuple[SeasonTable, ReadReport, int]:
    """Read a season and sort it by (HJD, site, star id); returns (table, report, stars)."""
    stars, report = read_season(season_dir)
    parts: list[Observations] = []
    site_codes: list[npt.NDArray[np.uint8]] = []
    for star in stars:
        for site_name, obs in to_observations(star).items():
            parts.append(obs)
            site_codes.append(np.full(len(obs), SITES.index(site_name), dtype=np.uint8))
    if not parts:
        raise ReplayError(
            f"{season_dir}: no observations to replay ({report.n_files} files read, "
            f"{report.n_skipped} skipped)"
        )
    observations = Observations.concat(parts)
    site = np.concatenate(site_codes)
    keep = np.ones(len(site), dtype=bool)
    if start_hjd is not None:
        keep &= observations.hjd >= start_hjd
    if stop_hjd is not None:
        keep &= observations.hjd < stop_hjd
    observations, site = observations.take(keep), site[keep]
    order = np.lexsort((observations.star_id, site, observations.hjd))
    return SeasonTable(site[order], observations.take(order)), report, len(stars)


def replay_identity(season_dir: Path, options: ReplayOptions) -> str:
    """Hash of the season's files (relative path and size) and the HJD window."""
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(p for p in season_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(season_dir)}:{path.stat().st_size};".encode())
    digest.update(f"{options.start_hjd}:{options.stop_hjd}".encode())
    return digest.hexdigest()


def delivered_positions(settings: Settings, replay_id: str) -> dict[tuple[int, int], int]:
    """(site index, partition) -> last sequence number this replay already has in the log."""
    consumer = make_consumer(
        {
            **_reader_config(settings),
            "group.id": f"lensnet-replay-probe-{replay_id}",
            "enable.auto.commit": False,
        }
    )
    try:
        wanted: list[TopicPartition] = []
        for site in SITES:
            topic = settings.topics.photometry(site)
            for partition in range(settings.topics.partitions):
                low, high = watermarks(consumer, TopicPartition(topic, partition))
                if high > low:
                    wanted.append(TopicPartition(topic, partition, high - 1))
        positions: dict[tuple[int, int], int] = {}
        if not wanted:
            return positions
        consumer.assign(wanted)
        pending = {(tp.topic, tp.partition) for tp in wanted}
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=len(pending), timeout=1.0):
                if message.error() is not None:
                    continue
                found_topic, found_partition = message.topic(), message.partition()
                if found_topic is None or found_partition is None:
                    continue
                pending.discard((found_topic, found_partition))
                headers = dict(message.headers() or [])
                position = headers.get(SEQUENCE_HEADER)
                if headers.get(REPLAY_HEADER) == replay_id.encode() and position is not None:
                    site_name = found_topic.removeprefix(settings.topics.photometry_prefix)
                    site_index = SITES.index(site_name.upper())
                    positions[(site_index, found_partition)] = int(position)
        if pending:
            raise KafkaClientError(f"could not read the last message of {sorted(pending)}")
        return positions
    except KafkaException as error:
        raise KafkaClientError.wrap("cannot read replay positions", error) from error
    finally:
        consumer.close()


def _reader_config(settings: Settings) -> dict[str, object]:
    config = consumer_config(settings.kafka, ConsumerSettings())
    config["isolation.level"] = "read_uncommitted"  # any write counts as delivered
    return config


def _slices(
    hjd: npt.NDArray[np.float64], slice_days: float | None, max_rows: int, window_days: float
) -> Iterator[tuple[int, int]]:
    """Row ranges [start, stop) sent together; none straddles an HJD multiple of
    ``window_days``.

    With ``slice_days`` (paced replay): consecutive time slices of that width (HJD multiples),
    so sites interleave as the survey's did. Without (as fast as possible): runs of at most
    ``max_rows`` rows, large enough to fill whole messages; order within each partition is the
    same either way.
    """
    if len(hjd) == 0:
        return
    cuts = np.floor(hjd / window_days).astype(np.int64)
    if slice_days is not None:
        cuts = cuts * (int(np.ceil(window_days / slice_days)) + 1) + np.floor(
            (hjd - np.floor(hjd / window_days) * window_days) / slice_days
        ).astype(np.int64)
    edges = np.flatnonzero(np.diff(cuts)) + 1
    bounds = np.concatenate([[0], edges, [len(hjd)]]).tolist()
    for start, stop in itertools.pairwise(bounds):
        if slice_days is not None:
            yield start, stop
            continue
        for first in range(start, stop, max_rows):
            yield first, min(first + max_rows, stop)


def replay(settings: Settings, season_dir: Path, options: ReplayOptions) -> ReplaySummary:
    """Produce the season to the photometry topics; see the module docstring for guarantees."""
    if not season_dir.is_dir():
        raise ReplayError(f"{season_dir}: not a directory")
    replay_id = replay_identity(season_dir, options)
    table, report, n_stars = load_season(season_dir, options.start_hjd, options.stop_hjd)
    obs = table.observations
    summary = ReplaySummary(
        replay_id=replay_id,
        stars=n_stars,
        observations=len(table),
        first_hjd=float(obs.hjd[0]),
        last_hjd=float(obs.hjd[-1]),
        read=report,
        per_site=dict.fromkeys(SITES, 0),
    )
    sequence = np.arange(len(table), dtype=np.int64)
    partition = partitions_for(obs.star_id, settings.topics.partitions)
    done = delivered_positions(settings, replay_id)
    pending = np.ones(len(table), dtype=bool)
    for (site, part), last in done.items():
        pending &= ~((table.site == site) & (partition == part) & (sequence <= last))
    summary.already_delivered = int(len(table) - pending.sum())
    log.info(
        "replay.start",
        replay_id=replay_id,
        observations=len(table),
        already_delivered=summary.already_delivered,
    )

    headers = [(REPLAY_HEADER, replay_id.encode())]
    started = time.monotonic()
    producer = PhotometryProducer(settings.kafka, settings.topics, settings.producer, name="replay")
    bar = tqdm(
        total=len(table),
        initial=summary.already_delivered,
        unit="obs",
        unit_scale=True,
        disable=None if options.progress else True,  # None: off when not a terminal
        desc="replay",
    )
    try:
        paced = options.speed is not None
        # Unpaced: enough rows to fill a message per site and partition, but keep a rate-limited
        # replay's chunks to ~0.1 s of its budget so pacing stays smooth.
        max_rows = settings.producer.batch_observations * settings.topics.partitions * len(SITES)
        if options.max_rate:
            max_rows = max(1, min(max_rows, int(options.max_rate / 10)))
        for start, stop in _slices(
            obs.hjd, options.slice_days if paced else None, max_rows, options.window_days
        ):
            _pace(options, started, float(obs.hjd[0]), float(obs.hjd[start]), summary.sent)
            rows = np.arange(start, stop)[pending[start:stop]]
            for code, site_name in enumerate(SITES):
                site_rows = rows[table.site[rows] == code]
                if len(site_rows) == 0:
                    continue
                summary.messages += producer.send(
                    site_name, obs.take(site_rows), sequence=sequence[site_rows], headers=headers
                )
                summary.per_site[site_name] += len(site_rows)
                summary.sent += len(site_rows)
            producer.poll()
            bar.update(len(rows))
        producer.flush()
    finally:
        bar.close()
    summary.seconds = time.monotonic() - started
    log.info(
        "replay.done",
        replay_id=replay_id,
        sent=summary.sent,
        messages=summary.messages,
        seconds=round(summary.seconds, 2),
    )
    return summary


def _pace(options: ReplayOptions, started: float, first_hjd: float, hjd: float, sent: int) -> None:
    """Sleep so that neither the speed factor nor the rate limit is exceeded."""
    wait = 0.0
    elapsed = time.monotonic() - started
    if options.speed:
        wait = max(wait, (hjd - first_hjd) * SECONDS_PER_DAY / options.speed - elapsed)
    if options.max_rate:
        wait = max(wait, sent / options.max_rate - elapsed)
    if wait > 0:
        time.sleep(wait)
