"""Stage 1 of the daemon: Kafka messages -> cleaned per-partition, per-site observations.

Decode every message of a consumed batch with the photometry schema, check that it belongs
where it arrived (the batch's site is the topic's site, every star hashes to the message's
partition), then clean its rows with the rules below. Nothing here stops the loop: a message
that cannot be decoded, or rows that cannot be used, become :class:`DeadLetter` entries with
the reason and the source topic/partition/offset, for the dead-letter topic.

Row rules (LensNet paper §5.2 plus values no instrument produces), each a dead-letter reason:

===================  ===========================================================================
reason               rows
===================  ===========================================================================
``non_finite``       ``hjd``, ``flux`` or ``flux_err`` NaN or infinite
``bad_flux_err``     ``flux_err <= 0``
``bad_psf_quality``  PSF quality outside 0-100 (NaN means *missing* and is kept)
``bad_fwhm``         FWHM < 0 (NaN is missing)
``bad_airmass``      airmass < 1 (NaN is missing)
``bad_sky``          sky < 0 (NaN is missing)
``bad_time``         HJD before 2450000 (1995) or after the wall-clock date plus one day
``bad_band``         band other than 0 (I) or 1 (V)
``wrong_partition``  a star whose key hashes to another partition (it would split its state)
===================  ===========================================================================

V-band rows (band 1) are valid but not used by the trigger or LensNet: they are dropped and
counted (``IngestResult.v_band``), not dead-lettered. The first matching rule names a row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt

from consumer.constants import HJD_OFFSET, SITES
from consumer.edge.keys import partition_of_id, partitions_for
from consumer.edge.photometry import Observations, PhotometryBatch, PhotometryDecoder, encode_batch
from consumer.exceptions import DecodeError

#: Julian date of the Unix epoch.
UNIX_EPOCH_JD: Final = 2_440_587.5
#: Dead-letter headers: why, and where the message came from.
REASON_HEADER: Final = "lensnet.dlq.reason"
DETAIL_HEADER: Final = "lensnet.dlq.detail"
SOURCE_TOPIC_HEADER: Final = "lensnet.dlq.topic"
SOURCE_PARTITION_HEADER: Final = "lensnet.dlq.partition"
SOURCE_OFFSET_HEADER: Final = "lensnet.dlq.offset"
ROWS_HEADER: Final = "lensnet.dlq.rows"

ROW_REASONS: Final = (
    "non_finite",
    "bad_flux_err",
    "bad_psf_quality",
    "bad_fwhm",
    "bad_airmass",
    "bad_sky",
    "bad_time",
    "bad_band",
    "wrong_partition",
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter message: the original bytes (or the rejected rows re-encoded as a
    photometry batch) and why."""

    value: bytes
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    rows: int = 0  # observations it carries; 0 for an undecodable message
    key: bytes | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers naming the reason and the source."""
        return [
            (REASON_HEADER, self.reason.encode()),
            (DETAIL_HEADER, self.detail[:1000].encode()),
            (SOURCE_TOPIC_HEADER, self.topic.encode()),
            (SOURCE_PARTITION_HEADER, str(self.partition).encode()),
            (SOURCE_OFFSET_HEADER, str(self.offset).encode()),
            (ROWS_HEADER, str(self.rows).encode()),
        ]


@dataclass(frozen=True)
class Part:
    """Clean I- and V-band-free observations of one message: one site, one partition."""

    partition: int
    site: str
    observations: Observations
    topic: str
    offset: int
    timestamp_ms: int  # the message's Kafka timestamp (producer create time), -1 if none


@dataclass
class IngestResult:
    """What :func:`ingest` made of a batch of messages."""

    parts: list[Part] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Next offset to consume per (topic, partition): exactly what this batch covers.
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    observations: dict[str, int] = field(default_factory=dict)  # decoded rows per site
    rejected: dict[str, int] = field(default_factory=dict)  # rows per reason
    v_band: int = 0
    messages: int = 0

    def merge(self, later: IngestResult) -> None:
        """Append the messages of ``later`` (which follow these in each topic-partition)."""
        self.parts.extend(later.parts)
        self.dead_letters.extend(later.dead_letters)
        self.positions.update(later.positions)
        for counts, more in (
            (self.observations, later.observations),
            (self.rejected, later.rejected),
        ):
            for name, count in more.items():
                counts[name] = counts.get(name, 0) + count
        self.v_band += later.v_band
        self.messages += later.messages

    def rows_by_partition(self) -> dict[int, int]:
        """Photometry rows per partition in this batch."""
        rows: dict[int, int] = {}
        for part in self.parts:
            rows[part.partition] = rows.get(part.partition, 0) + len(part.observations)
        return rows


def max_hjd(now_s: float | None = None) -> float:
    """Latest believable HJD: the wall-clock date plus one day."""
    now = time.time() if now_s is None else now_s
    return UNIX_EPOCH_JD + now / 86_400.0 + 1.0


def row_reasons(obs: Observations, partition: int, partitions: int, latest_hjd: float) -> Any:
    """(N,) int8: 0 for a usable row, else 1 + the index of its reason in :data:`ROW_REASONS`
    (the first rule that matches), in one compiled pass."""
    reasons = np.zeros(len(obs), dtype=np.int8)
    _row_reasons(
        obs.star_id, obs.hjd, obs.flux, obs.flux_err, obs.psf_quality, obs.fwhm, obs.airmass,
        obs.sky, obs.band, partition, partitions, HJD_OFFSET, latest_hjd, reasons,
    )  # fmt: skip
    return reasons


@numba.njit(cache=True)
def _row_reasons(  # pragma: no cover - numba
    star_id: npt.NDArray[np.int64],
    hjd: npt.NDArray[np.float64],
    flux: npt.NDArray[np.float64],
    flux_err: npt.NDArray[np.float64],
    psf_quality: npt.NDArray[np.float32],
    fwhm: npt.NDArray[np.float32],
    airmass: npt.NDArray[np.float32],
    sky: npt.NDArray[np.float32],
    band: npt.NDArray[np.uint8],
    partition: int,
    partitions: int,
    earliest_hjd: float,
    latest_hjd: float,
    reasons: npt.NDArray[np.int8],
) -> None:
    """The rules of :data:`ROW_REASONS`, in order, row by row (see :func:`row_reasons_numpy`)."""
    for i in range(len(hjd)):
        if not (np.isfinite(hjd[i]) and np.isfinite(flux[i]) and np.isfinite(flux_err[i])):
            reasons[i] = 1
        elif not flux_err[i] > 0:
            reasons[i] = 2
        elif psf_quality[i] < 0 or psf_quality[i] > 100:
            reasons[i] = 3
        elif fwhm[i] < 0:
            reasons[i] = 4
        elif airmass[i] < 1:
            reasons[i] = 5
        elif sky[i] < 0:
            reasons[i] = 6
        elif hjd[i] < earliest_hjd or hjd[i] > latest_hjd:
            reasons[i] = 7
        elif band[i] > 1:
            reasons[i] = 8
        elif partition_of_id(star_id[i], partitions) != partition:
            reasons[i] = 9


def row_reasons_numpy(obs: Observations, partition: int, partitions: int, latest_hjd: float) -> Any:
    """:func:`row_reasons` in numpy, rule by rule: the reference the compiled pass is tested
    against."""
    checks = (
        ~(np.isfinite(obs.hjd) & np.isfinite(obs.flux) & np.isfinite(obs.flux_err)),
        ~(obs.flux_err > 0),
        (obs.psf_quality < 0) | (obs.psf_quality > 100),
        obs.fwhm < 0,
        obs.airmass < 1,
        obs.sky < 0,
        (obs.hjd < HJD_OFFSET) | (obs.hjd > latest_hjd),
        obs.band > 1,
        partitions_for(obs.star_id, partitions) != partition,
    )
    reasons = np.zeros(len(obs), dtype=np.int8)
    for code in range(len(checks), 0, -1):  # the first rule wins: apply it last
        reasons[checks[code - 1]] = code
    return reasons


def ingest(
    messages: Sequence[Any],
    decoder: PhotometryDecoder,
    site_of_topic: dict[str, str],
    partitions: int,
    *,
    now_s: float | None = None,
) -> IngestResult:
    """Decode, check and clean a consumed batch.

    Parameters
    ----------
    messages : confluent-kafka messages without errors (the caller handles error events).
    decoder : the photometry decoder (holds the known writer schemas).
    site_of_topic : photometry topic -> site name.
    partitions : partition count of the photometry topics (for the partition check).
    now_s : wall-clock time (Unix seconds) for the future-time rule; default now.
    """
    result = IngestResult()
    latest = max_hjd(now_s)
    for message in messages:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        result.messages += 1
        result.positions[(topic, partition)] = offset + 1
        value = message.value() or b""
        expected_site = site_of_topic.get(topic)
        try:
            if expected_site is None:
                raise DecodeError(f"topic {topic!r} is not a photometry topic")
            batch = decoder.decode(value)
            if batch.site != expected_site:
                raise DecodeError(f"a {batch.site} batch on the {expected_site} topic")
        except DecodeError as error:
            result.dead_letters.append(
                DeadLetter(
                    value, "undecodable", str(error), topic, partition, offset, 0, message.key()
                )
            )
            continue
        obs = batch.observations
        result.observations[batch.site] = result.observations.get(batch.site, 0) + len(obs)
        reasons = row_reasons(obs, partition, partitions, latest)
        bad = reasons > 0
        if bad.any():
            for code in np.unique(reasons[bad]).tolist():
                rows = np.flatnonzero(reasons == code)
                reason = ROW_REASONS[code - 1]
                result.rejected[reason] = result.rejected.get(reason, 0) + len(rows)
                result.dead_letters.append(
                    _rows_letter(batch, rows, reason, topic, partition, offset)
                )
        keep = ~bad & (obs.band == 0)
        result.v_band += int((~bad & (obs.band == 1)).sum())
        if keep.any():
            kept = obs if keep.all() else obs.take(keep)
            kind, stamp = message.timestamp()
            result.parts.append(
                Part(partition, batch.site, kept, topic, offset, stamp if kind else -1)
            )
    return result


def _rows_letter(
    batch: PhotometryBatch,
    rows: npt.NDArray[np.int64],
    reason: str,
    topic: str,
    partition: int,
    offset: int,
) -> DeadLetter:
    sample = int(rows[0])
    obs = batch.observations
    detail = (
        f"{len(rows)} rows, e.g. row {sample}: star {int(obs.star_id[sample])} "
        f"hjd={obs.hjd[sample]!r} flux={obs.flux[sample]!r} flux_err={obs.flux_err[sample]!r}"
    )
    value = encode_batch(
        PhotometryBatch(batch.site, obs.take(rows), producer=f"dlq:{batch.producer}")
    )
    return DeadLetter(value, reason, detail, topic, partition, offset, len(rows))


def sites_by_topic(photometry_topics: Sequence[str]) -> dict[str, str]:
    """Photometry topic -> site name, from the topics in :data:`SITES` order."""
    return dict(zip(photometry_topics, SITES, strict=True))
