"""Evaluation windows: how a batch's messages are grouped before the trigger looks at them."""

from __future__ import annotations

from consumer.pipeline.windows import windows
from tests.consumer.pipeline.test_align import decoded


def test_windows_group_messages_by_first_row_and_keep_each_partitions_order() -> None:
    """The daemon's evaluation windows: a message belongs to the window of its first row;
    windows come out ascending, but a partition's late message is not moved ahead."""
    parts = [
        decoded("ctio", 0, 0, 100.05).parts[0],  # window 400 (0.25 d)
        decoded("saao", 1, 0, 100.30).parts[0],  # window 401
        decoded("ctio", 0, 1, 100.60).parts[0],  # window 402
        decoded("sso", 0, 0, 100.10).parts[0],  # partition 0, window 400 again: late
        decoded("saao", 1, 1, 100.35).parts[0],  # window 401
    ]
    groups = [
        (key, [(p.topic, p.partition, p.offset) for p in group])
        for key, group in windows(parts, 0.25)
    ]
    assert groups == [
        (400, [("ctio", 0, 0)]),
        (401, [("saao", 1, 0), ("saao", 1, 1)]),
        (402, [("ctio", 0, 1)]),
        (400, [("sso", 0, 0)]),
    ]
