"""The checkpoint file: named arrays and a JSON footer in ``state.ckpt``, written atomically.

Layout: the raw bytes of each array, one after the other; then a JSON footer (format name,
version, the writer's header fields, and per array its name, dtype, shape, byte offset, size and
CRC32); then the footer's length and CRC32 and an end marker (:data:`_FOOTER`). Readers find
everything from the end, so a truncated file is recognised, and every array is checked against
its CRC32 as it is read.

:func:`write_checkpoint` writes to a temporary name, fsyncs, renames over the previous file
and fsyncs the directory, so a crash leaves the old or the new checkpoint, never a mix.
:meth:`CheckpointFile.open` gives None when there is none, and every problem with one that is
there (truncated, corrupt, another format or version) is a :class:`CheckpointError` naming the
file. What the arrays mean is the store's business
(:meth:`~consumer.state.store.StarStore.checkpoint`).
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt

from consumer.exceptions import LensNetError

CHECKPOINT_NAME: Final = "state.ckpt"
FORMAT: Final = "lensnet-star-store"
VERSION: Final = 2
_END_MAGIC = b"LNSTORE1"
_FOOTER = struct.Struct("<QI8s")  # footer JSON length, its CRC32, end marker
_CHUNK = 1 << 24


class CheckpointError(LensNetError):
    """A checkpoint file exists but is truncated, corrupt or incompatible; the message says so."""


def write_checkpoint(
    directory: Path, arrays: Mapping[str, npt.NDArray[Any]], header: Mapping[str, Any]
) -> Path:
    """Write ``arrays`` and the ``header`` fields to ``directory/state.ckpt`` atomically
    (temporary file, fsync, rename, directory fsync); returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    temporary = directory / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    entries = []
    try:
        with temporary.open("wb") as handle:
            for name, array in arrays.items():
                start = handle.tell()
                crc = _write_array(handle, np.ascontiguousarray(array))
                entries.append(
                    {
                        "name": name,
                        "dtype": array.dtype.str,
                        "shape": list(array.shape),
                        "offset": start,
                        "nbytes": int(array.nbytes),
                        "crc32": crc,
                    }
                )
            footer = json.dumps(
                {"format": FORMAT, "version": VERSION, **header, "arrays": entries}
            ).encode()
            handle.write(footer)
            handle.write(_FOOTER.pack(len(footer), zlib.crc32(footer), _END_MAGIC))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return path


class CheckpointFile:
    """An open checkpoint: its header (the footer's fields), and its arrays read on demand."""

    def __init__(self, handle: io.BufferedReader, path: Path) -> None:
        self.path = path
        self._handle = handle
        self.header = _read_footer(handle, path)
        if self.header.get("format") != FORMAT or self.header.get("version") != VERSION:
            raise CheckpointError(f"{path}: not a version {VERSION} {FORMAT} checkpoint")
        self._entries: dict[str, Mapping[str, Any]] = {
            entry["name"]: entry for entry in self.header["arrays"]
        }

    @classmethod
    @contextmanager
    def open(cls, directory: Path) -> Iterator[CheckpointFile | None]:
        """The checkpoint in ``directory``, or None when there is none."""
        path = directory / CHECKPOINT_NAME
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            yield None
            return
        with handle:
            yield cls(handle, path)

    def expect(self, names: set[str]) -> None:
        """Refuse a file that does not hold exactly the arrays ``names``."""
        if set(self._entries) != names:
            raise CheckpointError(f"{self.path}: arrays {sorted(self._entries)}, expected {names}")

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of one array as written."""
        return tuple(int(n) for n in self._entries[name]["shape"])

    def read(self, name: str, target: npt.NDArray[Any]) -> None:
        """Read one array's bytes into ``target`` (same dtype and shape), checking its CRC32."""
        entry = self._entries[name]
        path = self.path
        if np.dtype(entry["dtype"]) != target.dtype or tuple(entry["shape"]) != target.shape:
            raise CheckpointError(
                f"{path}: array {name} is {entry['dtype']}{tuple(entry['shape'])}, "
                f"expected {target.dtype.str}{target.shape}"
            )
        contiguous = target if target.flags.c_contiguous else np.empty_like(target, order="C")
        raw = contiguous.reshape(-1).view(np.uint8)
        self._handle.seek(int(entry["offset"]))
        crc = 0
        for start in range(0, len(raw), _CHUNK):
            chunk = raw[start : start + _CHUNK]
            if self._handle.readinto(chunk.data) != len(chunk):
                raise CheckpointError(f"{path}: array {name} truncated")
            crc = zlib.crc32(chunk.data, crc)
        if crc != entry["crc32"]:
            raise CheckpointError(f"{path}: array {name} CRC mismatch")
        if contiguous is not target:
            target[...] = contiguous


def _write_array(handle: BinaryIO, array: npt.NDArray[Any]) -> int:
    """Write the array's bytes in chunks (no full copy of a large memmap); returns its CRC32."""
    raw = array.reshape(-1).view(np.uint8)
    crc = 0
    for start in range(0, len(raw), _CHUNK):
        chunk = raw[start : start + _CHUNK]
        crc = zlib.crc32(chunk.data, crc)
        handle.write(chunk.data)
    return crc


def _read_footer(handle: io.BufferedReader, path: Path) -> dict[str, Any]:
    size = handle.seek(0, os.SEEK_END)
    if size < _FOOTER.size:
        raise CheckpointError(f"{path}: truncated ({size} bytes)")
    handle.seek(size - _FOOTER.size)
    length, crc, magic = _FOOTER.unpack(handle.read(_FOOTER.size))
    if magic != _END_MAGIC or length > size - _FOOTER.size:
        raise CheckpointError(f"{path}: truncated or not a checkpoint (no end marker)")
    handle.seek(size - _FOOTER.size - length)
    footer = handle.read(length)
    if zlib.crc32(footer) != crc:
        raise CheckpointError(f"{path}: footer CRC mismatch")
    try:
        header: dict[str, Any] = json.loads(footer)
    except ValueError as error:
        raise CheckpointError(f"{path}: unreadable footer: {error}") from error
    return header
