"""Per-partition state ownership: open on assign, checkpoint on revoke, restore after aborts.

Partition p of the three photometry topics is one unit (co-partitioning): one
:class:`~consumer.state.store.StarStore`, one checkpoint
``<state.directory>/partition-<p>/state.ckpt`` holding the store and the offsets of the three
topic-partitions it covers.

Opening a partition (:meth:`Partitions.open`) decides where consumption starts:

- a checkpoint whose offsets are at or below the group's committed offsets: restore it and
  start at its offsets;
- no checkpoint (the partition moved to a new machine), or one that cannot be used (corrupt,
  another format, or ahead of the committed offsets, i.e. holding uncommitted input): an empty
  store, starting at the beginning of the topic.

Either way the input from the start to the committed offsets is *replayed*: appended to the
state with the trigger and output (alerts, dead letters, offset commits) skipped, because that
output was already committed (the windows it closed were evaluated by whoever committed it; the
window still open at the committed offsets is evaluated when it closes). A partition is
*restored* once all three of its topic-partitions reached their committed offsets; the daemon
is ready when all its partitions are. The store then equals what one uninterrupted consumer
would hold (the store's content depends on the observations offered, not on their order or
batching), and the stars with a committed alert on the alert topic (:mod:`consumer.state.alerted`,
read when the partition is opened) are marked alerted, so the alert-once rule holds across
restarts and machines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
from confluent_kafka import Consumer, TopicPartition

from consumer.edge.kafka import committed_offsets, watermarks
from consumer.exceptions import LensNetError
from consumer.settings import StateSettings
from consumer.state.alerted import PublishedAlerts
from consumer.state.checkpoint import CheckpointError
from consumer.state.events import FollowedEvent, PublishedEvents
from consumer.state.store import StarStore, StoreConfig

TopicPartitionKey = tuple[str, int]

#: A checkpoint by rows (``state.checkpoint_rows``) waits for at least one row processed per
#: this many records held: writing a record costs ~30 ns, processing a row ~9 us (a 300-star
#: store and bench_latency's realistic drain on the 2-core machine), so checkpoints take at
#: most about a tenth of the work whatever the store's size.
RECORDS_PER_ROW_CHECKPOINTED = 30


@dataclass
class PartitionState:
    """One owned partition: its store, where replay ends, and how it was opened."""

    partition: int
    store: StarStore
    #: Committed offset per photometry topic when assigned: below it, output is suppressed.
    targets: dict[str, int]
    source: Literal["checkpoint", "rebuild"]
    #: star id -> trigger HJD of its committed alerts, marked in the store once restored.
    alerted: dict[int, float] = field(default_factory=dict)
    #: star id -> the last committed update of its followed event (the events topic's truth,
    #: then what this process published since).
    events: dict[int, FollowedEvent] = field(default_factory=dict)
    #: The evaluation window (``floor(HJD / trigger.evaluation_days)``) the newest data fell
    #: in, and what changed it: per message, the star ids it changed and its Kafka timestamp
    #: (ms, -1 unknown). Evaluated once the window closes.
    open_window: int | None = None
    unevaluated: list[tuple[Any, int]] = field(default_factory=list)
    #: Photometry rows processed (replayed or not) since the store's last checkpoint.
    rows_since_checkpoint: int = 0
    opened_at: float = field(default_factory=time.monotonic)
    restored_at: float | None = None
    note: str = ""

    @property
    def restored(self) -> bool:
        return self.restored_at is not None


class Partitions:
    """The partitions this process owns and their stores."""

    def __init__(
        self,
        settings: StateSettings,
        topics: tuple[str, ...],
        window_days: float = 0.25,
        *,
        published: PublishedAlerts | None = None,
        published_events: PublishedEvents | None = None,
        log: Any = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.window_days = window_days
        #: Where :meth:`assign` learns which stars already alerted (None: none did); it keeps
        #: what it read, so a later assignment reads only the alerts published since.
        self.published = published
        #: Where :meth:`assign` learns the last update of each followed event (None: none).
        self.published_events = published_events
        self.log = log if log is not None else structlog.get_logger("lensnet.partitions")
        self.owned: dict[int, PartitionState] = {}
        #: Next offset to process per (topic, partition); covers exactly what the stores hold.
        self.positions: dict[TopicPartitionKey, int] = {}

    def directory(self, partition: int) -> Path:
        """Checkpoint folder of one partition."""
        return self.settings.directory / f"partition-{partition}"

    def store_config(self, partition: int) -> StoreConfig:
        """The store settings of one partition (arena files beside its checkpoint if mapped)."""
        return StoreConfig(
            capacity_per_site=self.settings.capacity_per_site,
            max_stars=self.settings.max_stars_per_partition,
            directory=self.directory(partition) / "arena" if self.settings.memory_mapped else None,
            hot_points_per_site=self.settings.hot_points_per_site,
        )

    def open(
        self,
        partition: int,
        committed: Mapping[str, int],
        beginning: Mapping[str, int],
        alerted: Mapping[int, float] | None = None,
    ) -> tuple[PartitionState, dict[str, int]]:
        """Own ``partition``: restore or create its store; returns it and the offset to start
        consuming each photometry topic at.

        Parameters
        ----------
        committed : topic -> the group's committed offset (negative: none).
        beginning : topic -> the partition's low watermark (where a rebuild starts).
        alerted : star id -> trigger HJD of the partition's committed alerts.
        """
        config = self.store_config(partition)
        note = ""
        try:
            restored = StarStore.restore(self.directory(partition), config)
        except CheckpointError as error:
            restored, note = None, f"checkpoint unusable, rebuilding: {error}"
        if restored is not None:
            store, offsets = restored
            ahead = [t for t in self.topics if offsets.get(t, 0) > max(committed.get(t, -1), 0)]
            missing = [t for t in self.topics if t not in offsets]
            if ahead or missing:
                note = (
                    f"checkpoint ahead of the committed offsets on {ahead}, rebuilding"
                    if ahead
                    else f"checkpoint lacks offsets of {missing}, rebuilding"
                )
                restored = None
        if restored is None:
            store = StarStore(config)
            start = {t: beginning[t] for t in self.topics}
            source: Literal["checkpoint", "rebuild"] = "rebuild"
        else:
            start = {t: max(offsets[t], beginning[t]) for t in self.topics}
            source = "checkpoint"
        targets = {t: max(committed.get(t, -1), start[t]) for t in self.topics}
        state = PartitionState(
            partition, store, targets, source, alerted=dict(alerted or {}), note=note
        )
        if source == "checkpoint":
            self._reopen_window(state)
        self.owned[partition] = state
        self.apply_alerted(partition, keep_unknown=True)  # stars already in a restored store
        for topic in self.topics:
            self.positions[(topic, partition)] = start[topic]
        self.update_restored(partition)
        return state, start

    def _reopen_window(self, state: PartitionState) -> None:
        """A checkpoint does not keep which stars the open window changed: take every star
        with an observation in the window of the newest one held (a star evaluated twice on
        the same rows decides the same, it is not missed)."""
        newest = state.store.latest()
        if len(newest) == 0 or not np.isfinite(newest.max()):
            return
        key = math.floor(float(newest.max()) / self.window_days)
        state.open_window = key
        state.unevaluated = [(state.store.star_ids[newest >= key * self.window_days], -1)]

    def update_restored(self, partition: int) -> bool:
        """Mark ``partition`` restored once every topic reached its target; True if it just
        became so."""
        state = self.owned[partition]
        if state.restored:
            return False
        if all(self.positions[(t, partition)] >= state.targets[t] for t in self.topics):
            self.apply_alerted(partition)
            state.restored_at = time.monotonic()
            return True
        return False

    def mark_alerted(self, partition: int, changed: list[Any]) -> None:
        """Mark the stars among ``changed`` (arrays of star ids just appended) that have a
        committed alert; called as stars appear in a rebuilt store."""
        state = self.owned[partition]
        if not state.alerted:
            return
        for ids in changed:
            known = [star for star in ids.tolist() if star in state.alerted]
            if known:
                stars = state.store.stars
                stars.alerted_hjd[stars.rows(known)] = [state.alerted.pop(s) for s in known]

    def apply_alerted(self, partition: int, *, keep_unknown: bool = False) -> None:
        """Mark the partition's stars in the store that have a committed alert; the others
        are kept for :meth:`mark_alerted` when ``keep_unknown`` (else forgotten)."""
        state = self.owned[partition]
        known = [star for star in state.alerted if star in state.store]
        if known:
            stars = state.store.stars
            stars.alerted_hjd[stars.rows(known)] = [state.alerted.pop(s) for s in known]
        if not keep_unknown:
            state.alerted = {}

    def replaying(self, topic: str, partition: int, offset: int) -> bool:
        """True when the message at ``offset`` was already processed and committed."""
        state = self.owned.get(partition)
        return state is not None and offset < state.targets[topic]

    def checkpoint(self, partition: int) -> Path:
        """Write the partition's checkpoint with the offsets its store covers."""
        started = time.perf_counter()
        state = self.owned[partition]
        offsets = {t: self.positions[(t, partition)] for t in self.topics}
        path = state.store.checkpoint(self.directory(partition), offsets)
        state.rows_since_checkpoint = 0
        self.log.info(
            "checkpoint",
            partition=partition,
            path=str(path),
            stars=len(state.store),
            ms=round(1000 * (time.perf_counter() - started), 1),
        )
        return path

    def revoke(self, partition: int) -> bool:
        """The group took ``partition`` away in order: checkpoint it, then forget it; False
        when it was not owned (nothing to checkpoint)."""
        if partition not in self.owned:
            return False
        self.checkpoint(partition)
        self.drop(partition)
        self.log.info("partition revoked", partition=partition)
        return True

    def lose(self, partition: int) -> None:
        """The group took ``partition`` away without a revoke (session lost): forget it with
        no checkpoint; what it processed since the last commit is replayed by its next owner."""
        self.drop(partition)
        self.log.warning("partition lost (no checkpoint, nothing committed)", partition=partition)

    def drop(self, partition: int) -> None:
        """Forget a partition (after a checkpoint on revoke, or without one when lost)."""
        self.owned.pop(partition, None)
        for topic in self.topics:
            self.positions.pop((topic, partition), None)

    def store(self, partition: int) -> StarStore:
        """The store of an owned partition."""
        try:
            return self.owned[partition].store
        except KeyError as error:
            raise LensNetError(f"partition {partition} is not owned by this process") from error

    # -- at the edges of a batch: assignment, rewind, commit ---------------------------------

    def assign(
        self,
        consumer: Consumer,
        partitions: list[int],
        photometry_partitions: int,
        end_pending: Callable[[list[TopicPartition]], None] | None = None,
    ) -> dict[int, dict[str, int]]:
        """Own ``partitions`` (assigned, or rewound): restore or rebuild each store with the
        stars that already alerted; returns where to start consuming each of their topics.

        ``photometry_partitions`` is the partition count of the photometry topics (which
        partition an alert's star belongs to). ``end_pending`` is called with the
        topic-partitions once if their committed offsets stay unstable past a first attempt
        (:func:`~consumer.edge.kafka.committed_offsets`)."""
        wanted = [TopicPartition(t, p) for p in partitions for t in self.topics]
        committed = committed_offsets(
            consumer,
            wanted,
            on_timeout=None if end_pending is None else lambda: end_pending(wanted),
        )
        committed_by = {(tp.topic, tp.partition): tp.offset for tp in committed}
        published: dict[int, dict[int, float]] = {p: {} for p in partitions}
        if self.published is not None:
            published = self.published.read(partitions, photometry_partitions)
        followed: dict[int, dict[int, FollowedEvent]] = {p: {} for p in partitions}
        if self.published_events is not None:
            followed = self.published_events.read(partitions, photometry_partitions)
        starts: dict[int, dict[str, int]] = {}
        for partition in partitions:
            beginning = {
                t: watermarks(consumer, TopicPartition(t, partition))[0] for t in self.topics
            }
            state, start = self.open(
                partition,
                {t: committed_by.get((t, partition), -1) for t in self.topics},
                beginning,
                published[partition],
            )
            state.events = followed[partition]
            starts[partition] = start
            self.log.info(
                "partition opened",
                partition=partition,
                source=state.source,
                stars=len(state.store),
                alerted=len(state.alerted),
                start=start,
                replay_until=state.targets,
                note=state.note or None,
            )
        return starts

    def rewind(
        self,
        consumer: Consumer,
        partitions: list[int],
        photometry_partitions: int,
        end_pending: Callable[[list[TopicPartition]], None] | None = None,
    ) -> dict[int, dict[str, int]]:
        """After an aborted transaction: reopen the owned ones of ``partitions`` from their
        checkpoint (or a rebuild) and seek the consumer back to where each starts, replaying
        up to the committed offsets; returns the starts as :meth:`assign` does."""
        owned = [p for p in partitions if p in self.owned]
        for partition in owned:
            self.drop(partition)
        starts = self.assign(consumer, owned, photometry_partitions, end_pending)
        for partition, start in starts.items():
            for topic, offset in start.items():
                consumer.seek(TopicPartition(topic, partition, offset))
        return starts

    def finish_replays(
        self, positions: Mapping[TopicPartitionKey, int], replayed: set[int]
    ) -> set[int]:
        """Owned partitions whose replay is complete once a batch reaching ``positions``
        commits; those it completes (``replayed``: the batch replayed some of their input)
        get their committed alerts marked."""
        done = set()
        for partition, state in self.owned.items():
            reached = state.restored or all(
                max(self.positions[(t, partition)], positions.get((t, partition), -1))
                >= state.targets[t]
                for t in self.topics
            )
            if reached:
                done.add(partition)
                if partition in replayed:
                    self.apply_alerted(partition)
        return done

    def offsets_to_commit(self, positions: Mapping[TopicPartitionKey, int]) -> list[TopicPartition]:
        """The consumed ``positions`` of a batch to commit with it: owned partitions, past the
        input committed before (a replay commits nothing new)."""
        return [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in sorted(positions.items())
            if partition in self.owned and offset >= self.owned[partition].targets[topic]
        ]

    def committed(
        self, positions: Mapping[TopicPartitionKey, int], rows: Mapping[int, int] | None = None
    ) -> list[PartitionState]:
        """A batch reaching ``positions`` committed: the stores now cover them (``rows``:
        partition -> photometry rows the batch brought it). Returns the partitions it completed
        the replay of."""
        for key, offset in positions.items():
            if key[1] in self.owned:
                self.positions[key] = offset
        for partition, count in (rows or {}).items():
            if partition in self.owned:
                self.owned[partition].rows_since_checkpoint += count
        restored = []
        for partition in {p for _, p in positions}:
            if partition in self.owned and self.update_restored(partition):
                state = self.owned[partition]
                seconds = (state.restored_at or 0.0) - state.opened_at
                self.log.info("partition restored", partition=partition, seconds=round(seconds, 3))
                restored.append(state)
        return restored

    def readiness(self) -> tuple[bool, str]:
        """Whether alerts can be counted on from this process, and if not why."""
        if self.ready:
            return True, ""
        if not self.owned:
            return False, "no partitions assigned"
        pending = sorted(p for p, s in self.owned.items() if not s.restored)
        return False, f"replaying partitions {pending}"

    def lag(self, high: Callable[[str, int], int]) -> dict[TopicPartitionKey, int | None]:
        """Messages not yet processed per owned (topic, partition), given ``high``, its high
        watermark (negative: unknown, and so is the lag)."""
        out: dict[TopicPartitionKey, int | None] = {}
        for (topic, partition), position in self.positions.items():
            watermark = high(topic, partition)
            out[(topic, partition)] = max(watermark - position, 0) if watermark >= 0 else None
        return out

    def due_for_checkpoint(self, rows: int) -> list[int]:
        """Once the owned partitions took at least ``rows`` photometry rows since their last
        checkpoints, all together: those that took any and at least one per
        :data:`RECORDS_PER_ROW_CHECKPOINTED` records their store holds (none when ``rows`` is
        0)."""
        if rows <= 0 or sum(s.rows_since_checkpoint for s in self.owned.values()) < rows:
            return []
        return sorted(
            p
            for p, s in self.owned.items()
            if s.rows_since_checkpoint > 0
            and s.rows_since_checkpoint * RECORDS_PER_ROW_CHECKPOINTED >= s.store.records()
        )

    @property
    def ready(self) -> bool:
        """Every owned partition restored (and at least one owned)."""
        return bool(self.owned) and all(s.restored for s in self.owned.values())
