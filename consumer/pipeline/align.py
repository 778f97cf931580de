"""Stage 2 of the daemon: merge the three site topics of a partition into time order.

Partition p of the CTIO, SAAO and SSO topics is one unit of state, but the consumer fetches
the three topic-partitions independently. Reading a backlog (a replayed season, catch-up after
downtime) it can deliver weeks of one site before the first message of another, and the
trigger would then judge a rise seen by SAAO against a CTIO light curve that already runs to
the end of the season: alerts come late, or never.

The aligner holds decoded messages back and releases each partition's messages as one
sequence ordered by (HJD of the message's first usable row, site, offset): a k-way merge of the
three topic-partitions, each already in time order. A message is released once no other topic
of its partition can still deliver one that sorts before it: that topic has a message waiting,
has delivered one sorting after it, or has nothing more to read (its fetch position is at the
high watermark: a site that is not observing holds nothing back). A topic written by a
transactional producer ends in a commit marker the consumer never delivers; the consumer's
position passes it (and aborted records), so the aligner takes that position as read
(:meth:`Aligner.advance`) and releases it as the position to commit. The order depends on the
data alone, not on how fetches interleave, so every run over the same input processes it in
the same order. Messages without usable rows (dead letters only) pass at once. A
topic-partition holding more than ``max_held`` messages is paused until it drains to half of
that, which bounds the memory a skewed backlog can take.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from consumer.pipeline.ingest import DeadLetter, IngestResult, Part

#: (topic, partition)
Key = tuple[str, int]


@dataclass
class Held:
    """One consumed message, decoded, waiting for its turn."""

    offset: int
    part: Part | None  # its usable rows (None: nothing usable)
    letters: list[DeadLetter] = field(default_factory=list)
    #: HJD of its first usable row: the merge key (-inf without usable rows).
    t_min: float = -math.inf


class Aligner:
    """Messages consumed but not yet released, per (topic, partition).

    ``high(topic, partition)`` returns the partition's high watermark as last seen by the
    consumer (negative when unknown).
    """

    def __init__(self, topics: tuple[str, ...], max_held: int = 5000) -> None:
        self.topics = topics
        self.rank = {topic: rank for rank, topic in enumerate(topics)}
        self.max_held = max_held
        self.held: dict[Key, deque[Held]] = {}
        #: Next offset the consumer will deliver per key (consumed, released or not).
        self.fetched: dict[Key, int] = {}
        #: Position released per key (what the caller commits).
        self.released: dict[Key, int] = {}
        #: Merge key of the newest message consumed per key (-inf: none yet).
        self.last: dict[Key, float] = {}
        self.paused: set[Key] = set()

    def open(self, partition: int, starts: dict[str, int]) -> None:
        """Start tracking ``partition`` whose topics are read from ``starts`` on."""
        for topic in self.topics:
            key = (topic, partition)
            self.held[key] = deque()
            self.fetched[key] = starts[topic]
            self.released[key] = starts[topic]
            self.last[key] = -math.inf

    def drop(self, partition: int) -> list[Key]:
        """Forget ``partition`` (revoked, lost or rewound); returns its paused keys."""
        resumed = []
        for topic in self.topics:
            key = (topic, partition)
            self.held.pop(key, None)
            self.fetched.pop(key, None)
            self.released.pop(key, None)
            self.last.pop(key, None)
            if key in self.paused:
                self.paused.discard(key)
                resumed.append(key)
        return resumed

    def add(self, messages: Iterable[Any], result: IngestResult) -> IngestResult:
        """Take consumed messages and what :func:`~consumer.pipeline.ingest.ingest` made of them;
        returns the share of partitions not tracked (to process as it is)."""
        parts = {(p.topic, p.partition, p.offset): p for p in result.parts}
        letters: dict[tuple[str, int, int], list[DeadLetter]] = {}
        for letter in result.dead_letters:
            letters.setdefault((letter.topic, letter.partition, letter.offset), []).append(letter)
        untracked = IngestResult()
        for message in messages:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            key = (topic, partition)
            part = parts.get((topic, partition, offset))
            mail = letters.get((topic, partition, offset), [])
            queue = self.held.get(key)
            if queue is None:
                untracked.messages += 1
                untracked.positions[key] = offset + 1
                untracked.parts.extend([part] if part is not None else [])
                untracked.dead_letters.extend(mail)
                continue
            t_min = float(part.observations.hjd.min()) if part is not None else -math.inf
            queue.append(Held(offset, part, mail, t_min))
            self.fetched[key] = offset + 1
            if part is not None:
                self.last[key] = max(self.last[key], t_min)
        return untracked

    def advance(self, positions: Iterable[tuple[str, int, int]]) -> None:
        """Take the consumer's positions (topic, partition, next offset): past a transaction's
        commit marker or aborted records, which it never delivers, a partition is read further
        than its last message."""
        for topic, partition, offset in positions:
            key = (topic, partition)
            if key in self.fetched and offset > self.fetched[key]:
                self.fetched[key] = offset

    def drained(self, key: Key, high: Callable[[str, int], int]) -> bool:
        """Everything the broker had for ``key`` when last asked has been consumed."""
        watermark = high(*key)
        return watermark >= 0 and self.fetched[key] >= watermark

    def release(self, high: Callable[[str, int], int]) -> IngestResult:
        """The messages that can go now: per partition, the longest prefix of the merge that
        no message still to come can precede (parts and dead letters in merge order)."""
        out = IngestResult()
        for partition in sorted({p for _, p in self.held}):
            keys = [(t, partition) for t in self.topics]
            # Fixed while releasing: neither the fetch positions nor the watermarks move.
            open_ended = {k for k in keys if not self.drained(k, high)}
            while True:
                waiting = [k for k in keys if self.held[k]]
                if not waiting:
                    break
                key = min(waiting, key=lambda k: (self.held[k][0].t_min, self.rank[k[0]]))
                head = self.held[key][0]
                order = (head.t_min, self.rank[key[0]])
                blocked = any(
                    not self.held[k] and k in open_ended and (self.last[k], self.rank[k[0]]) < order
                    for k in keys
                )
                if blocked:
                    break
                self.held[key].popleft()
                out.messages += 1
                out.positions[key] = self.released[key] = head.offset + 1
                if head.part is not None:
                    out.parts.append(head.part)
                out.dead_letters.extend(head.letters)
            for key in keys:  # read past markers with nothing left to release: commit that
                if not self.held[key] and self.fetched[key] > self.released[key]:
                    out.positions[key] = self.released[key] = self.fetched[key]
        return out

    def caught_up(self, partition: int, high: Callable[[str, int], int]) -> bool:
        """Nothing held and nothing more to read for ``partition``: the data is all in."""
        return all(
            not self.held[(t, partition)] and self.drained((t, partition), high)
            for t in self.topics
        )

    def flow(self) -> tuple[list[Key], list[Key]]:
        """Keys to pause (holding more than ``max_held``) and to resume (down to half)."""
        pause = [k for k, q in self.held.items() if len(q) > self.max_held and k not in self.paused]
        resume = [k for k in self.paused if len(self.held.get(k, ())) <= self.max_held // 2]
        self.paused.update(pause)
        self.paused.difference_update(resume)
        return pause, resume

    @property
    def holding(self) -> int:
        """Messages held back."""
        return sum(len(q) for q in self.held.values())
