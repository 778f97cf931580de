"""Message keys and partitions: every site's observations of a star share one partition number.

The key of a star is its id as 8 big-endian bytes. The partition is Kafka's Java default,
``toPositive(murmur2(key)) % partitions``; librdkafka's own default (CRC32-based
``consistent_random``) differs, so every producer is configured with
``partitioner=murmur2_random`` and batch producers compute partitions here with the same
function. Equal partition counts on the three per-site topics then put a star's three light
curves on the same partition number.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

#: librdkafka partitioner that matches the Java client's default for keyed messages.
PARTITIONER = "murmur2_random"

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def star_key(star_id: int) -> bytes:
    """Kafka message key of a star: its id as 8 big-endian bytes."""
    return int(star_id).to_bytes(8, "big", signed=True)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``) as unsigned 32-bit."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n_blocks = length // 4
    for i in range(n_blocks):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = data[4 * n_blocks :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(star_id: int, partitions: int) -> int:
    """Partition of one star, identical to the Java client's and librdkafka's murmur2."""
    return (murmur2(star_key(star_id)) & 0x7FFFFFFF) % partitions


def partitions_for(star_ids: npt.NDArray[np.int64], partitions: int) -> npt.NDArray[np.int64]:
    """Vectorised :func:`partition_for` over an array of star ids, shape (N,) -> (N,)."""
    keys = np.ascontiguousarray(star_ids, dtype=">i8").view(np.uint8).reshape(-1, 8)
    m = np.uint64(_M)
    mask = np.uint64(_MASK)
    h = np.full(len(keys), (_SEED ^ 8) & _MASK, dtype=np.uint64)
    for block in (keys[:, 0:4], keys[:, 4:8]):
        k = np.ascontiguousarray(block).view("<u4").reshape(-1).astype(np.uint64)
        k = (k * m) & mask
        k ^= k >> np.uint64(24)
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    h ^= h >> np.uint64(13)
    h = (h * m) & mask
    h ^= h >> np.uint64(15)
    return ((h & np.uint64(0x7FFFFFFF)) % np.uint64(partitions)).astype(np.int64)


@numba.njit(cache=True)
def partition_of_id(star_id: int, partitions: int) -> int:  # pragma: no cover - numba
    """:func:`partition_for` of one star id, compiled, for kernels that check rows."""
    key = np.uint64(star_id)  # two's complement, as the 8 big-endian key bytes hold it
    mask = np.uint64(_MASK)
    m = np.uint64(_M)
    h = np.uint64((_SEED ^ 8) & _MASK)
    for block in range(2):
        k = np.uint64(0)
        for byte in range(4):  # the key's bytes 4 * block .. + 3, read little-endian
            shift = np.uint64(8 * (7 - (4 * block + byte)))
            k |= ((key >> shift) & np.uint64(0xFF)) << np.uint64(8 * byte)
        k = (k * m) & mask
        k ^= k >> np.uint64(24)
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    h ^= h >> np.uint64(13)
    h = (h * m) & mask
    h ^= h >> np.uint64(15)
    return int((h & np.uint64(0x7FFFFFFF)) % np.uint64(partitions))
