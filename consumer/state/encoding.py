"""How the store keeps an observation: 14 bytes, one quantised code per column.

============  =======  ==========================================================  ===========
column        type     encoding                                                    resolution
============  =======  ==========================================================  ===========
hjd           uint32   seconds since HJD 2450000 (range to HJD 2499710)            0.5 s
flux          float32  as is                                                       2**-24 rel.
flux_err      uint16   log scale over [1e-4, 1e8] flux units, clipped              2.1e-4 rel.
sky           uint8    log scale over [10, 1e6] ADU, clipped; 255 = missing        2.3 % rel.
fwhm          uint8    0.05 arcsec steps over [0, 12.7], clipped; 255 = missing    0.025 "
airmass       uint8    0.01 steps over [1.00, 3.54], clipped; 255 = missing        0.005
psf_quality   7 bits   integer 0-100; 127 = missing                                0.5
field         1 bit    which of the star's two field tags (bit 7 of the psf byte)  exact
============  =======  ==========================================================  ===========

The effect on the trigger is measured in ``bench/bench_state.py`` (BENCHMARKS.md, "Daemon
state"): AlertFinder dchi2 on quantised versus original light curves.

:func:`encode` quantises a batch (one compiled pass, :func:`consumer.state.kernels.encode_rows`);
:func:`decode_records` turns stored records back into physical units; :func:`quantise` is the
round trip, for comparing what the store holds with what it was given.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

import numpy as np
import numpy.typing as npt

from consumer.constants import HJD_OFFSET
from consumer.edge.photometry import Observations
from consumer.state import kernels

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

SECONDS_PER_DAY: Final = 86_400.0
T_MAX_SECONDS: Final = 2**32 - 1

FLUX_ERR_RANGE: Final = (1e-4, 1e8)
SKY_RANGE: Final = (10.0, 1e6)
FWHM_STEP: Final = 0.05
AIRMASS_MIN: Final = 1.0
AIRMASS_STEP: Final = 0.01
MISSING_U8: Final = 255
MISSING_PSF: Final = 127

_FERR_LOG_MIN = float(np.log(FLUX_ERR_RANGE[0]))
_FERR_LOG_STEP = float(np.log(FLUX_ERR_RANGE[1] / FLUX_ERR_RANGE[0]) / 65535)
_SKY_LOG_MIN = float(np.log(SKY_RANGE[0]))
_SKY_LOG_STEP = float(np.log(SKY_RANGE[1] / SKY_RANGE[0]) / 254)

#: Snapshot records: the stored (quantised) columns, ``field`` as the field tag.
SNAPSHOT_DTYPE: Final = np.dtype(
    [
        ("t", np.uint32),
        ("flux", np.float32),
        ("flux_err", np.uint16),
        ("sky", np.uint8),
        ("fwhm", np.uint8),
        ("airmass", np.uint8),
        ("psf_quality", np.uint8),
        ("field", np.int16),
    ]
)


@dataclass(frozen=True)
class SiteBuffer:
    """One site's buffer of one star, decoded; every array (N,), time-ordered, NaN = missing."""

    hjd: FloatArray  # days, full HJD
    flux: FloatArray  # DIA flux units
    flux_err: FloatArray
    sky: FloatArray  # ADU
    fwhm: FloatArray  # arcsec
    airmass: FloatArray
    psf_quality: FloatArray  # 0-100
    field: npt.NDArray[np.int16]


@dataclass(frozen=True)
class EncodedRows:
    """Codes of a batch's rows as the store keeps them; every array (N,).

    ``t`` is seconds since HJD 2450000, -1 for a row the store rejects (its other codes are then
    meaningless).
    """

    t: IntArray
    flux_err: npt.NDArray[np.uint16]
    sky: npt.NDArray[np.uint8]
    fwhm: npt.NDArray[np.uint8]
    airmass: npt.NDArray[np.uint8]
    psf_quality: npt.NDArray[np.uint8]


def encode(obs: Observations) -> EncodedRows:
    """Quantise a batch (one compiled pass; the table in the module docstring)."""
    n = len(obs)
    codes = EncodedRows(
        t=np.empty(n, dtype=np.int64),
        flux_err=np.zeros(n, dtype=np.uint16),
        sky=np.zeros(n, dtype=np.uint8),
        fwhm=np.zeros(n, dtype=np.uint8),
        airmass=np.zeros(n, dtype=np.uint8),
        psf_quality=np.zeros(n, dtype=np.uint8),
    )
    kernels.encode_rows(
        np.asarray(obs.hjd, dtype=np.float64),
        np.asarray(obs.flux, dtype=np.float64),
        np.asarray(obs.flux_err, dtype=np.float64),
        np.asarray(obs.band, dtype=np.uint8),
        np.asarray(obs.sky, dtype=np.float32),
        np.asarray(obs.fwhm, dtype=np.float32),
        np.asarray(obs.airmass, dtype=np.float32),
        np.asarray(obs.psf_quality, dtype=np.float32),
        HJD_OFFSET,
        _FERR_LOG_MIN,
        _FERR_LOG_STEP,
        FLUX_ERR_RANGE[1],
        _SKY_LOG_MIN,
        _SKY_LOG_STEP,
        SKY_RANGE[1],
        FWHM_STEP,
        AIRMASS_MIN,
        AIRMASS_STEP,
        codes.t,
        codes.flux_err,
        codes.sky,
        codes.fwhm,
        codes.airmass,
        codes.psf_quality,
    )
    return codes


def decode_flux_err(code: npt.ArrayLike) -> FloatArray:
    """Flux error (DIA flux units) of its log code."""
    return np.exp(_FERR_LOG_MIN + np.asarray(code, dtype=np.float64) * _FERR_LOG_STEP)


#: flux_err of every code, flux units (65536,): the gather kernel's decoder.
FLUX_ERR_TABLE: Final = decode_flux_err(np.arange(65536))


def decode_sky(code: npt.ArrayLike) -> FloatArray:
    """Sky (ADU) of its log code; NaN where missing."""
    array = np.asarray(code)
    values = np.exp(_SKY_LOG_MIN + array.astype(np.float64) * _SKY_LOG_STEP)
    return np.where(array == MISSING_U8, np.nan, values)


def _decode_linear(code: npt.ArrayLike, low: float, step: float) -> FloatArray:
    array = np.asarray(code)
    return np.where(array == MISSING_U8, np.nan, low + array.astype(np.float64) * step)


def _u8_table(decode: object) -> npt.NDArray[np.float32]:
    codes = np.arange(256, dtype=np.uint8)
    return np.asarray(decode(codes), dtype=np.float64).astype(np.float32)  # type: ignore[operator]


#: float32 value of every code of the uint8 columns (256,), NaN for missing: what
#: :func:`decode_records` gives, as float32 (the archive's dtype for these columns).
SKY_TABLE: Final = _u8_table(decode_sky)
FWHM_TABLE: Final = _u8_table(lambda code: _decode_linear(code, 0.0, FWHM_STEP))
AIRMASS_TABLE: Final = _u8_table(lambda code: _decode_linear(code, AIRMASS_MIN, AIRMASS_STEP))
PSF_TABLE: Final = np.where(
    np.arange(256) == MISSING_PSF, np.nan, np.arange(256, dtype=np.float64)
).astype(np.float32)


def decode_records(records: npt.NDArray[np.void]) -> SiteBuffer:
    """Decode :data:`SNAPSHOT_DTYPE` records to physical units (NaN where missing)."""
    psf = records["psf_quality"]
    return SiteBuffer(
        hjd=HJD_OFFSET + records["t"].astype(np.float64) / SECONDS_PER_DAY,
        flux=records["flux"].astype(np.float64),
        flux_err=decode_flux_err(records["flux_err"]),
        sky=decode_sky(records["sky"]),
        fwhm=_decode_linear(records["fwhm"], 0.0, FWHM_STEP),
        airmass=_decode_linear(records["airmass"], AIRMASS_MIN, AIRMASS_STEP),
        psf_quality=np.where(psf == MISSING_PSF, np.nan, psf.astype(np.float64)),
        field=records["field"].astype(np.int16),
    )


def quantise(obs: Observations) -> Observations:
    """The observations as the store reads them back (each column through its encoding);
    rows the store would reject come back unchanged."""
    codes = encode(obs)
    kept = codes.t >= 0
    records = np.empty(len(obs), dtype=SNAPSHOT_DTYPE)
    records["t"] = np.where(kept, codes.t, 0)
    records["flux"] = np.where(kept, obs.flux, 0.0)
    records["flux_err"] = codes.flux_err
    records["sky"] = codes.sky
    records["fwhm"] = codes.fwhm
    records["airmass"] = codes.airmass
    records["psf_quality"] = codes.psf_quality
    records["field"] = obs.field
    series = decode_records(records)
    columns = {f.name: getattr(obs, f.name) for f in fields(obs)}
    for name in ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality"):
        columns[name] = np.where(kept, getattr(series, name), columns[name])
    return Observations.from_columns(**columns)
