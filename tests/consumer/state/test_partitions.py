"""Opening a partition: restore a usable checkpoint, rebuild otherwise; replay bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from consumer.settings import StateSettings
from consumer.state.partitions import Partitions
from tests.consumer.state.test_store import make_obs

TOPICS = ("a", "b", "c")
BEGIN = {"a": 0, "b": 0, "c": 0}


def test_no_checkpoint_rebuilds_from_the_beginning_and_replays_to_the_commits(
    tmp_path: Path,
) -> None:
    partitions = Partitions(StateSettings(directory=tmp_path), TOPICS)
    state, start = partitions.open(3, {"a": 10, "b": -1001, "c": 4}, {"a": 2, "b": 0, "c": 0})
    assert state.source == "rebuild"
    assert start == {"a": 2, "b": 0, "c": 0}
    assert state.targets == {"a": 10, "b": 0, "c": 4}
    assert partitions.replaying("a", 3, 9)
    assert not partitions.replaying("a", 3, 10)
    assert not state.restored
    partitions.positions.update({("a", 3): 10, ("c", 3): 4})
    assert partitions.update_restored(3)
    assert partitions.ready


def test_checkpoint_at_or_below_the_commits_is_restored(tmp_path: Path) -> None:
    partitions = Partitions(StateSettings(directory=tmp_path), TOPICS)
    partitions.open(1, {}, BEGIN)
    partitions.store(1).append("CTIO", make_obs(np.arange(5), 2_461_000.0))
    partitions.positions.update({("a", 1): 7, ("b", 1): 3, ("c", 1): 0})
    partitions.checkpoint(1)
    partitions.drop(1)
    again = Partitions(StateSettings(directory=tmp_path), TOPICS)
    state, start = again.open(1, {"a": 9, "b": 3, "c": -1001}, BEGIN)
    assert state.source == "checkpoint"
    assert len(state.store) == 5
    assert start == {"a": 7, "b": 3, "c": 0}
    assert state.targets == {"a": 9, "b": 3, "c": 0}


def test_checkpoint_ahead_of_the_commits_is_not_trusted(tmp_path: Path) -> None:
    partitions = Partitions(StateSettings(directory=tmp_path), TOPICS)
    partitions.open(0, {}, BEGIN)
    partitions.positions.update({("a", 0): 7, ("b", 0): 3, ("c", 0): 1})
    partitions.checkpoint(0)
    state, start = partitions.open(0, {"a": 5, "b": 3, "c": 1}, BEGIN)
    assert state.source == "rebuild"
    assert "ahead" in state.note
    assert start == BEGIN


def test_corrupt_checkpoint_rebuilds(tmp_path: Path) -> None:
    (tmp_path / "partition-2").mkdir()
    (tmp_path / "partition-2" / "state.ckpt").write_bytes(b"not a checkpoint")
    partitions = Partitions(StateSettings(directory=tmp_path), TOPICS)
    state, _ = partitions.open(2, {}, BEGIN)
    assert state.source == "rebuild"
    assert "unusable" in state.note


def test_checkpoints_by_rows_wait_for_the_total_and_a_row_per_thirty_records(
    tmp_path: Path,
) -> None:
    partitions = Partitions(StateSettings(directory=tmp_path), TOPICS)
    for partition in (0, 1, 2):
        partitions.open(partition, {}, BEGIN)
    # Partition 1 holds 300 records: a checkpoint by rows waits for 10 rows (300 / 30).
    partitions.store(1).append("CTIO", make_obs(np.arange(300), 2_461_000.0))
    assert partitions.store(1).records() == 300
    partitions.committed({("a", 0): 4, ("a", 1): 1}, {0: 6, 1: 9})
    assert partitions.due_for_checkpoint(20) == []  # 15 rows in all, fewer than 20
    assert partitions.due_for_checkpoint(0) == []  # by time only
    assert partitions.due_for_checkpoint(15) == [0]  # 1: 9 rows for 300 records, too few
    partitions.committed({("a", 1): 2}, {1: 1})
    assert partitions.due_for_checkpoint(15) == [0, 1]
    partitions.checkpoint(0)
    assert partitions.owned[0].rows_since_checkpoint == 0
    assert partitions.due_for_checkpoint(10) == [1]
    assert partitions.due_for_checkpoint(11) == []
