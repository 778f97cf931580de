"""Which stars already have a published alert: read back from the alert topic.

The alert topic is the record of what was published (read with ``read_committed``, so an
aborted transaction's alerts do not count). When the daemon takes a partition, its state comes
from a checkpoint that may predate the last commits, or from nothing at all (the partition
moved from another machine); the input replayed up to the committed offsets re-creates the
buffers exactly, but not which alerts went out, because evaluation windows can fall
differently across batches. So the alert-once rule takes its truth from here: every alert
carries its star in the key (:func:`consumer.edge.keys.star_key`) and its trigger time in the
:data:`TRIGGER_HEADER` header.

:class:`PublishedAlerts` keeps what it has read as a compacted index for the life of the
process: star id -> latest trigger HJD, and how far each alert partition has been read. Taking
partitions again (a rebalance, a rewind after an aborted transaction) reads only the alerts
published since the last time, not the whole history. Kafka cannot fetch keys without values,
so values are fetched, but never decoded; the first read of a process still reads the topic
from the start.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import numpy as np

from consumer.edge.keys import partitions_for
from consumer.settings import KafkaSettings
from consumer.state.readback import TopicReadBack

TRIGGER_HEADER: Final = "lensnet.trigger_hjd"


class PublishedAlerts:
    """The committed alerts of one alert topic, read incrementally (see the module docstring);
    the parameters are :class:`~consumer.state.readback.TopicReadBack`'s."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        retry_s: float = 0.0,
        timeout_s: float = 120.0,
        group: str = "lensnet",
    ) -> None:
        self.reader = TopicReadBack(kafka, topic, retry_s, timeout_s, group)
        #: Star id -> trigger HJD of its latest committed alert read so far.
        self.alerted: dict[int, float] = {}

    def read(
        self, wanted: Iterable[int], photometry_partitions: int
    ) -> dict[int, dict[int, float]]:
        """For each photometry partition in ``wanted``: star id -> trigger HJD of its
        committed alerts (the latest when a star has several). Reads what was published
        since the last call first, retrying while the broker is unreachable."""
        out: dict[int, dict[int, float]] = {p: {} for p in set(wanted)}
        if not out:
            return out
        self.reader.catch_up(self._take)
        stars = np.fromiter(self.alerted, dtype=np.int64, count=len(self.alerted))
        owners = partitions_for(stars, photometry_partitions)
        for star, owner in zip(stars.tolist(), owners.tolist(), strict=True):
            if owner in out:
                out[owner][star] = self.alerted[star]
        return out

    def _take(self, message: Any) -> None:
        star = int.from_bytes(message.key() or b"\0" * 8, "big", signed=True)
        stamp = dict(message.headers() or []).get(TRIGGER_HEADER)
        hjd = float(stamp) if stamp else 0.0
        self.alerted[star] = max(self.alerted.get(star, hjd), hjd)


def published_alerts(
    kafka: KafkaSettings,
    topic: str,
    photometry_partitions: int,
    wanted: Iterable[int],
    timeout_s: float = 120.0,
) -> dict[int, dict[int, float]]:
    """For each photometry partition in ``wanted``: star id -> trigger HJD of its committed
    alerts (the latest when a star has several), read from the start of the topic once."""
    return PublishedAlerts(kafka, topic, timeout_s=timeout_s).read(wanted, photometry_partitions)
