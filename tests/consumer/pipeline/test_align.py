"""The aligner: the three site topics of a partition merged into one time-ordered sequence."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.pipeline.align import Aligner
from consumer.pipeline.ingest import DeadLetter, IngestResult, Part
from tests.consumer.edge.test_photometry import make_observations

TOPICS = ("ctio", "saao", "sso")


class Message:
    """What the aligner reads of a confluent-kafka message."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def decoded(topic: str, partition: int, offset: int, hjd: float | None) -> IngestResult:
    """One message's ingest result: usable rows from ``hjd`` on, or only a dead letter."""
    result = IngestResult(messages=1, positions={(topic, partition): offset + 1})
    if hjd is None:
        result.dead_letters.append(DeadLetter(b"", "undecodable", "test", topic, partition, offset))
    else:
        times = np.asarray(hjd + np.arange(3) * 0.01, dtype=np.float64)
        rows = dataclasses.replace(make_observations(3), hjd=times)
        result.parts.append(Part(partition, topic.upper(), rows, topic, offset, -1))
    return result


def feed(aligner: Aligner, topic: str, offset: int, hjd: float | None, partition: int = 0) -> None:
    untracked = aligner.add(
        [Message(topic, partition, offset)], decoded(topic, partition, offset, hjd)
    )
    assert untracked.messages == 0


def order(result: IngestResult) -> list[tuple[str, int]]:
    return [(p.topic, p.offset) for p in result.parts]


def nothing_drained(_topic: str, _partition: int) -> int:
    return 10**9


def test_a_topic_with_nothing_read_yet_holds_the_others_back() -> None:
    aligner = Aligner(TOPICS)
    aligner.open(0, dict.fromkeys(TOPICS, 0))
    feed(aligner, "ctio", 0, 100.0)
    feed(aligner, "ctio", 1, 101.0)
    feed(aligner, "saao", 0, 100.5)
    assert aligner.release(nothing_drained).messages == 0  # SSO could still send 99.0
    feed(aligner, "sso", 0, 100.2)
    # saao@100.5 waits: SSO's next message may fall between 100.2 and 100.5.
    assert order(aligner.release(nothing_drained)) == [("ctio", 0), ("sso", 0)]
    feed(aligner, "sso", 1, 101.5)
    # ctio@101 then waits for SAAO, whose next message may fall between 100.5 and 101.
    assert order(aligner.release(nothing_drained)) == [("saao", 0)]
    assert aligner.holding == 2


def test_a_drained_topic_holds_nothing_back() -> None:
    aligner = Aligner(TOPICS)
    aligner.open(0, dict.fromkeys(TOPICS, 0))
    feed(aligner, "ctio", 0, 100.0)
    high = {("ctio", 0): 5, ("saao", 0): 0, ("sso", 0): 0}  # SAAO and SSO empty
    released = aligner.release(lambda t, p: high[(t, p)])
    assert order(released) == [("ctio", 0)]
    assert released.positions == {("ctio", 0): 1}
    assert not aligner.caught_up(0, lambda t, p: high[(t, p)])  # CTIO has 4 more to read
    high[("ctio", 0)] = 1
    assert aligner.caught_up(0, lambda t, p: high[(t, p)])


def test_a_partition_ending_in_a_commit_marker_counts_as_read_to_the_end() -> None:
    """A transactional producer wrote CTIO: offsets 0 and 1 are data, 2 its commit marker,
    which the consumer never delivers but its position passes."""
    aligner = Aligner(TOPICS)
    aligner.open(0, dict.fromkeys(TOPICS, 0))
    high = {("ctio", 0): 3, ("saao", 0): 0, ("sso", 0): 0}
    feed(aligner, "ctio", 0, 100.0)
    feed(aligner, "ctio", 1, 101.0)
    released = aligner.release(lambda t, p: high[(t, p)])
    assert order(released) == [("ctio", 0), ("ctio", 1)]
    assert not aligner.caught_up(0, lambda t, p: high[(t, p)])  # without the position: never
    aligner.advance([("ctio", 0, 3), ("saao", 0, -1001), ("sso", 0, 0), ("ctio", 7, 5)])
    assert aligner.caught_up(0, lambda t, p: high[(t, p)])
    past_marker = aligner.release(lambda t, p: high[(t, p)])
    assert past_marker.messages == 0
    assert past_marker.positions == {("ctio", 0): 3}  # committed past the marker, once
    assert aligner.release(lambda t, p: high[(t, p)]).positions == {}


def test_a_position_past_held_messages_waits_for_them() -> None:
    aligner = Aligner(TOPICS)
    aligner.open(0, dict.fromkeys(TOPICS, 0))
    feed(aligner, "ctio", 0, 100.0)
    aligner.advance([("ctio", 0, 2)])
    released = aligner.release(nothing_drained)  # SAAO and SSO still to come: ctio@0 held
    assert released.messages == 0
    assert released.positions == {}


def test_dead_letter_only_messages_pass_at_once_in_offset_order() -> None:
    aligner = Aligner(TOPICS)
    aligner.open(0, dict.fromkeys(TOPICS, 0))
    feed(aligner, "ctio", 0, None)
    feed(aligner, "ctio", 1, 100.0)
    feed(aligner, "ctio", 2, None)
    released = aligner.release(nothing_drained)
    assert [letter.offset for letter in released.dead_letters] == [0]
    assert released.positions == {("ctio", 0): 1}  # offset 1 waits, so 2 waits behind it


def test_partitions_are_independent_and_untracked_ones_pass_through() -> None:
    aligner = Aligner(TOPICS)
    aligner.open(0, dict.fromkeys(TOPICS, 0))
    aligner.open(1, dict.fromkeys(TOPICS, 0))
    for topic in TOPICS:
        feed(aligner, topic, 0, 100.0, partition=1)
    feed(aligner, "ctio", 0, 50.0, partition=0)
    assert {p.partition for p in aligner.release(nothing_drained).parts} == {1}
    untracked = aligner.add([Message("ctio", 7, 3)], decoded("ctio", 7, 3, 1.0))
    assert untracked.messages == 1
    assert untracked.positions == {("ctio", 7): 4}


def test_paused_past_max_held_and_resumed_at_half() -> None:
    aligner = Aligner(TOPICS, max_held=4)
    aligner.open(0, dict.fromkeys(TOPICS, 0))
    for offset in range(5):
        feed(aligner, "ctio", offset, 100.0 + offset)
    assert aligner.flow() == ([("ctio", 0)], [])
    assert aligner.flow() == ([], [])
    feed(aligner, "saao", 0, 102.5)
    feed(aligner, "sso", 0, 102.5)
    aligner.release(nothing_drained)  # ctio 100, 101, 102 go; 103, 104 stay
    assert aligner.flow() == ([], [("ctio", 0)])
    assert aligner.drop(0) == []


sequences = st.lists(st.one_of(st.none(), st.floats(100.0, 110.0)), min_size=0, max_size=8).map(
    lambda hjds: _sorted_with_letters(hjds)
)


def _sorted_with_letters(hjds: list[float | None]) -> list[float | None]:
    """A topic-partition's log: usable messages in time order, dead letters anywhere."""
    times = iter(sorted(h for h in hjds if h is not None))
    return [None if h is None else next(times) for h in hjds]


@settings(max_examples=300, deadline=None)
@given(
    logs=st.tuples(sequences, sequences, sequences),
    interleaving=st.lists(st.integers(0, 2), max_size=60),
    releases=st.lists(st.booleans(), max_size=60),
)
def test_release_order_depends_on_the_data_not_on_how_fetches_interleave(
    logs: tuple[list[float | None], ...], interleaving: list[int], releases: list[bool]
) -> None:
    """Whatever order the consumer delivers the three logs in, and whenever release is
    called, the partition's messages come out in one order: by (first HJD, site, offset)."""
    aligner = Aligner(TOPICS)
    aligner.open(0, dict.fromkeys(TOPICS, 0))
    high = {(t, 0): len(log) for t, log in zip(TOPICS, logs, strict=True)}
    cursor = [0, 0, 0]
    out: list[Any] = []
    schedule = [*interleaving, *[i for i in range(3) for _ in range(len(logs[i]))]]
    for step, source in enumerate(schedule):
        if cursor[source] < len(logs[source]):
            topic = TOPICS[source]
            feed(aligner, topic, cursor[source], logs[source][cursor[source]])
            cursor[source] += 1
        if step < len(releases) and releases[step]:
            out.append(aligner.release(lambda t, p: high[(t, p)]))
    out.append(aligner.release(lambda t, p: high[(t, p)]))
    assert aligner.holding == 0
    parts = [(p.topic, p.offset) for r in out for p in r.parts]
    expected = sorted(
        ((h, rank, offset), (TOPICS[rank], offset))
        for rank, log in enumerate(logs)
        for offset, h in enumerate(log)
        if h is not None
    )
    assert parts == [key for _, key in expected]
    letters = [(d.topic, d.offset) for r in out for d in r.dead_letters]
    assert sorted(letters) == sorted(
        (TOPICS[rank], offset)
        for rank, log in enumerate(logs)
        for offset, h in enumerate(log)
        if h is None
    )
