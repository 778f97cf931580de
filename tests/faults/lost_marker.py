"""Fault injection: cut the last transaction marker off a group's offsets partition.

This recreates the stall seen after a broker restart (RELIABILITY.md): the transaction
coordinator has the transaction complete, but the group's ``__consumer_offsets`` partition
holds its offset commit with no marker after it, so the group coordinator keeps those offsets
pending and every ``read_committed`` offset fetch waits. The broker must be stopped; the next
start recovers the cut log (no clean-shutdown marker, no indexes or producer snapshots left for
that partition) and loads the pending commit from it.
"""

from __future__ import annotations

import struct
from pathlib import Path

# A record batch starts with baseOffset (int64) and batchLength (int32); its attributes (int16)
# are at byte 21, and bit 5 marks a control batch (a transaction marker).
_HEAD = struct.Struct(">qi")
_ATTRIBUTES_AT = 21
_CONTROL = 0x20


def java_hash(text: str) -> int:
    """``String.hashCode()`` of Java, as a signed 32-bit int."""
    h = 0
    for unit in text.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition(group_id: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition of a group (Kafka: ``Utils.abs(hashCode) % n``)."""
    h = java_hash(group_id)
    return 0 if h == -(1 << 31) else abs(h) % partitions


def cut_last_marker(data: Path, group_id: str) -> int:
    """Truncate the group's offsets partition in the stopped broker's log folder ``data`` just
    before its last control batch (dropping what follows it too); returns that batch's
    offset."""
    folders = sorted(data.glob("__consumer_offsets-*"))
    assert folders, f"no __consumer_offsets partitions in {data}"
    folder = data / f"__consumer_offsets-{offsets_partition(group_id, len(folders))}"
    segment = sorted(folder.glob("*.log"))[-1]
    content = segment.read_bytes()
    position, last = 0, None
    while position + _HEAD.size <= len(content):
        base_offset, length = _HEAD.unpack_from(content, position)
        (attributes,) = struct.unpack_from(">h", content, position + _ATTRIBUTES_AT)
        if attributes & _CONTROL:
            last = (position, base_offset)
        position += _HEAD.size + length
    assert last is not None, f"no transaction marker in {segment}"
    with segment.open("r+b") as handle:
        handle.truncate(last[0])
    for stale in [*folder.glob("*.index"), *folder.glob("*.timeindex"), *folder.glob("*.snapshot")]:
        stale.unlink()
    (data / ".kafka_cleanshutdown").unlink(missing_ok=True)
    return last[1]
