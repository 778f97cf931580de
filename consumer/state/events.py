"""What was last published about each followed event: read back from the events topic.

The update rule (:mod:`consumer.pointlens.updates`) compares a new fit with the star's last
published update, and numbers updates per event. Like the alert-once rule
(:mod:`consumer.state.alerted`), it takes its truth from the topic: on assignment the committed
updates (``read_committed``: an aborted transaction's updates do not count) of the partition's
stars are read back, the last one per star kept. :class:`PublishedEvents` reads incrementally:
a later assignment (a rebalance, a rewind) reads only what was published since.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from consumer.edge.events import EventDecoder, EventUpdate
from consumer.edge.keys import partitions_for
from consumer.exceptions import DecodeError
from consumer.pointlens.updates import Published
from consumer.settings import KafkaSettings
from consumer.state.readback import TopicReadBack


@dataclass(frozen=True)
class FollowedEvent:
    """A followed event: its id, its alert time and its last published update."""

    event_id: str
    alert_hjd: float
    last: Published


def followed_from_update(update: EventUpdate) -> FollowedEvent:
    """The ledger entry an update leaves."""
    model = update.event_model
    return FollowedEvent(
        event_id=update.event_id,
        alert_hjd=update.alert_hjd,
        last=Published(
            sequence=update.sequence,
            kind=update.kind.lower(),
            as_of=model.fitted_to_hjd,
            peak_hjd=model.peak_hjd,
            peak_hjd_err=math.nan if model.peak_hjd_err is None else model.peak_hjd_err,
            anomalous=model.anomaly is not None,
        ),
    )


class PublishedEvents:
    """The committed updates of one events topic, read incrementally; the parameters are
    :class:`~consumer.state.readback.TopicReadBack`'s."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        retry_s: float = 0.0,
        timeout_s: float = 120.0,
        group: str = "lensnet",
    ) -> None:
        self.reader = TopicReadBack(kafka, topic, retry_s, timeout_s, group)
        self.decoder = EventDecoder()
        #: Star id -> its latest update read so far.
        self.latest: dict[int, FollowedEvent] = {}
        #: Updates that could not be decoded (skipped).
        self.skipped = 0

    def read(
        self, wanted: Iterable[int], photometry_partitions: int
    ) -> dict[int, dict[int, FollowedEvent]]:
        """For each photometry partition in ``wanted``: star id -> its last committed update.
        Reads what was published since the last call first, retrying while unreachable."""
        out: dict[int, dict[int, FollowedEvent]] = {p: {} for p in set(wanted)}
        if not out:
            return out
        self.reader.catch_up(self._take)
        stars = np.fromiter(self.latest, dtype=np.int64, count=len(self.latest))
        owners = partitions_for(stars, photometry_partitions)
        for star, owner in zip(stars.tolist(), owners.tolist(), strict=True):
            if owner in out:
                out[owner][star] = self.latest[star]
        return out

    def _take(self, message: Any) -> None:
        try:
            update = self.decoder.decode(message.value(), message.headers())
        except DecodeError:
            self.skipped += 1
            return
        known = self.latest.get(update.star_id)
        if known is None or update.sequence >= known.last.sequence:
            self.latest[update.star_id] = followed_from_update(update)
