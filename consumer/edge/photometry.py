"""Photometry batches: the columnar in-memory type and its Avro codec.

One message holds one site's observations of many stars (all of one partition), each column a
little-endian ``bytes`` field typed by the schema's ``dtype`` attribute. Decoding a batch is a
fastavro read of ~20 fields plus one ``numpy.frombuffer`` per column, whatever the number of
observations, which is how the stream reaches hundreds of thousands of observations per second
per core where one Avro record per observation would stop near 80 000.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, Final

import fastavro
import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from consumer.edge.schemas import (
    AvroSchema,
    SchemaRegistry,
    frame,
    load_schema,
    read_record,
    unframe,
)
from consumer.exceptions import DecodeError


@dataclass(frozen=True, slots=True)
class Observations:
    """Observations in columns; every array has shape (N,) and the dtype the schema names.

    Units: ``hjd`` in days (full HJD), ``ra``/``dec`` in degrees, ``x``/``y`` in pixels,
    ``flux``/``flux_err`` in DIA flux units, ``sky`` in ADU, ``fwhm`` in arcsec, ``airmass``
    dimensionless, ``psf_quality`` 0-100. ``band`` is 0 for I and 1 for V.
    """

    star_id: npt.NDArray[np.int64]
    field: npt.NDArray[np.int16]
    chip: npt.NDArray[np.uint8]
    ra: npt.NDArray[np.float64]
    dec: npt.NDArray[np.float64]
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    hjd: npt.NDArray[np.float64]
    band: npt.NDArray[np.uint8]
    flux: npt.NDArray[np.float64]
    flux_err: npt.NDArray[np.float64]
    sky: npt.NDArray[np.float32]
    fwhm: npt.NDArray[np.float32]
    airmass: npt.NDArray[np.float32]
    psf_quality: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.star_id)

    @classmethod
    def from_columns(cls, **columns: Any) -> Observations:
        """Build from array-likes, casting each to its schema dtype; all must share one length."""
        dtypes = column_dtypes()
        missing = set(dtypes) - set(columns)
        unknown = set(columns) - set(dtypes)
        if missing or unknown:
            raise ValueError(f"columns: missing {sorted(missing)}, unknown {sorted(unknown)}")
        arrays = {name: np.ascontiguousarray(columns[name], dtype=dtypes[name]) for name in dtypes}
        lengths = {name: arr.shape for name, arr in arrays.items()}
        if len(set(lengths.values())) != 1 or len(next(iter(lengths.values()))) != 1:
            raise ValueError(f"columns must be 1-D and of equal length, got {lengths}")
        return cls(**arrays)

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_] | slice) -> Observations:
        """Subset of rows (fancy index, boolean mask or slice)."""
        return Observations(**{name: getattr(self, name)[index] for name in _COLUMNS})

    @classmethod
    def concat(cls, parts: list[Observations]) -> Observations:
        """Rows of several batches, in order."""
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )


_COLUMNS: Final = tuple(f.name for f in fields(Observations))


@dataclass(frozen=True, slots=True)
class PhotometryBatch:
    """One decoded photometry message: the site and its observations."""

    site: str
    observations: Observations
    producer: str = ""


def column_dtypes(schema: AvroSchema | None = None) -> dict[str, np.dtype[Any]]:
    """Column name -> numpy dtype, read from the ``dtype`` attributes of the schema."""
    if schema is None:
        return dict(_shipped_dtypes())
    return _dtypes_of(schema.definition)


def _dtypes_of(definition: dict[str, Any]) -> dict[str, np.dtype[Any]]:
    return {f["name"]: np.dtype(f["dtype"]) for f in definition["fields"] if "dtype" in f}


@cache
def _shipped_dtypes() -> tuple[tuple[str, np.dtype[Any]], ...]:
    """The shipped schema's columns, read once (every message encoded or decoded needs them)."""
    return tuple(_dtypes_of(load_schema("photometry").definition).items())


def encode_batch(batch: PhotometryBatch) -> bytes:
    """Avro single-object bytes of a batch (writer schema: ``photometry-v1``)."""
    schema = load_schema("photometry")
    if batch.site not in SITES:
        raise ValueError(f"unknown site {batch.site!r}")
    obs = batch.observations
    record: dict[str, Any] = {"site": batch.site, "n": len(obs), "producer": batch.producer}
    for name, dtype in _shipped_dtypes():
        record[name] = np.ascontiguousarray(getattr(obs, name), dtype=dtype).tobytes()
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema.parsed, record)
    return frame(schema, buffer.getvalue())


class PhotometryDecoder:
    """Decodes photometry messages written with any known 1.x writer schema."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self._registry = registry or SchemaRegistry()
        self._reader = load_schema("photometry")
        self._dtypes = column_dtypes(self._reader)

    def decode(self, message: bytes) -> PhotometryBatch:
        """Decode one message value; raises :class:`DecodeError` saying what is wrong."""
        fingerprint, body = unframe(message)
        writer = self._registry.get(fingerprint)
        if writer is None:
            raise DecodeError(f"unknown writer schema fingerprint {fingerprint.hex()}")
        if writer.name != self._reader.name:
            raise DecodeError(f"expected a {self._reader.name}, got a {writer.name}")
        try:
            record = read_record(io.BytesIO(body), writer, self._reader)
        except DecodeError:
            raise
        except Exception as error:  # truncated or corrupt bodies raise EOFError, ValueError, ...
            raise DecodeError(f"corrupt Avro body: {type(error).__name__}: {error}") from error
        n = record["n"]
        if n < 0:
            raise DecodeError(f"negative observation count n={n}")
        columns: dict[str, npt.NDArray[Any]] = {}
        for name, dtype in self._dtypes.items():
            raw = record[name]
            if len(raw) != n * dtype.itemsize:
                raise DecodeError(
                    f"column {name!r} holds {len(raw)} bytes, expected n={n} x {dtype.itemsize}"
                )
            columns[name] = np.frombuffer(raw, dtype=dtype)
        return PhotometryBatch(
            site=record["site"], observations=Observations(**columns), producer=record["producer"]
        )
