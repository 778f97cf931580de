"""Stage: a window's messages into their partitions' star stores.

Each message's clean rows go to the store of its partition
(:meth:`~consumer.state.store.StarStore.append`). Rows the store will not take become dead
letters here, with the rows re-encoded as a photometry batch: a third field tag for a star
(``rejected_by_state``) or a new star past ``state.max_stars_per_partition`` (``state_full``).
Stars that appear in a rebuilt store and already have a committed alert are marked as they
appear (:meth:`~consumer.state.partitions.Partitions.mark_alerted`). Messages of partitions
not owned (any more) are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from consumer.edge.photometry import PhotometryBatch, encode_batch
from consumer.pipeline.ingest import DeadLetter, Part
from consumer.state.partitions import Partitions

IntArray = npt.NDArray[np.int64]

#: Dead-letter reasons of rows the store refuses, and what each means.
STATE_REASONS: Final = {
    "rejected_by_state": "a third field tag for the star (at most two are kept)",
    "state_full": "new star past state.max_stars_per_partition",
}


@dataclass
class Buffered:
    """What appending one window did."""

    #: partition -> per message, the sorted star ids it changed and its Kafka timestamp (ms).
    changed: dict[int, list[tuple[IntArray, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    observations: int = 0  # rows offered to the stores
    dead_letters: list[DeadLetter] = field(default_factory=list)


def buffer(window: list[Part], partitions: Partitions) -> Buffered:
    """Append the messages of one window, in order, to the stores of their partitions."""
    out = Buffered()
    for part in window:
        if part.partition not in partitions.owned:
            continue
        observations = part.observations
        appended = partitions.store(part.partition).append(part.site, observations)
        out.changed[part.partition].append((appended.changed, part.timestamp_ms))
        out.observations += len(observations)
        for rows, reason in (
            (appended.rejected_rows, "rejected_by_state"),
            (appended.refused_rows, "state_full"),
        ):
            if len(rows):
                out.dead_letters.append(state_letter(part, rows, reason))
    for partition, changes in out.changed.items():
        partitions.mark_alerted(partition, [ids for ids, _ in changes])
    return out


def state_letter(part: Part, rows: IntArray, reason: str) -> DeadLetter:
    """Dead letter for ``rows`` of ``part`` the store would not take, for ``reason`` (one of
    :data:`STATE_REASONS`)."""
    batch = PhotometryBatch(part.site, part.observations.take(rows), "dlq")
    return DeadLetter(
        encode_batch(batch),
        reason,
        STATE_REASONS[reason],
        part.topic,
        part.partition,
        part.offset,
        len(rows),
    )
