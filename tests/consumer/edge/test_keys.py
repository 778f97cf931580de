from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from consumer.edge.keys import murmur2, partition_for, partitions_for, star_key


@pytest.mark.parametrize(
    ("data", "java"),
    # Expected values from Kafka's own UtilsTest (signed 32-bit, as Java returns them).
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
        (b"", 275646681),
    ],
)
def test_murmur2_matches_java(data: bytes, java: int) -> None:
    assert ctypes.c_int32(murmur2(data)).value == java


def test_star_key_is_big_endian_int64() -> None:
    assert star_key(1) == b"\x00" * 7 + b"\x01"
    assert star_key(-1) == b"\xff" * 8


@given(
    arrays(np.int64, st.integers(0, 200), elements=st.integers(-(2**63), 2**63 - 1)),
    st.integers(1, 500),
)
def test_vectorised_partitions_equal_scalar(star_ids: np.ndarray, partitions: int) -> None:
    expected = [partition_for(int(star_id), partitions) for star_id in star_ids]
    assert partitions_for(star_ids, partitions).tolist() == expected
