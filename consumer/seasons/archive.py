"""Archived seasons on disk: read KMTNet downloads and our native files, write the native format.

A season directory holds one subdirectory per star (its name is the star's name, usually its
integer id) and one file per site-field dataset inside it. Formats read, detected per file:

``native``
    Our own CSV, written by :func:`write_star`. It starts with the line ``# lensnet-season v1``,
    then ``# key: value`` metadata lines (``star_id``, ``ra``, ``dec``, ``chip``, ``x``, ``y``,
    ``site``, ``field``), then the header row ``hjd,band,flux,flux_err,sky,fwhm,airmass,
    psf_quality`` (any order) and one row per observation. Missing values are written ``nan``;
    empty fields read as NaN too. Floats are written with the fixed decimals of
    :data:`NATIVE_DECIMALS` (hjd to 1e-6 d = 0.09 s), so values already rounded with
    :func:`quantize` round-trip exactly. Files are named ``{SITE}_BLG{field:02d}.csv``
    (``{SITE}.csv`` when the field is unknown, ``_2``, ``_3``... when a star has several
    datasets of one site-field), but only the metadata says what a file holds.
``pysis``
    KMTNet pySIS downloads: whitespace columns ``HJD Δflux flux_err mag mag_err`` optionally
    followed by ``fwhm sky secz`` (secz is the airmass), ``#`` comments. The magnitude columns
    are ignored (they may hold placeholders); there is no PSF quality column (NaN), and fwhm /
    sky / airmass are NaN in 5-column files. Values are copied as written, without unit changes.
``magnitude``
    Three whitespace columns ``HJD mag mag_err`` (any extension): flux is
    ``10**(0.4 * (MAG_ZERO_POINT - mag))`` with ``MAG_ZERO_POINT = 28`` and
    ``flux_err = flux * 0.4 * ln(10) * mag_err``. This is a total flux, not a difference flux;
    consumers work relative to the median, so the baseline does not matter. Files with further
    trailing columns (KMTNet and MulensModel-style files with a frame index, seeing...: 4, 6, 7
    or more than 8 columns, counts no pysis file has) are read as magnitude files when their
    first three columns are unambiguous: every magnitude within :data:`MAG_PLAUSIBLE` and every
    error within :data:`MAG_ERR_PLAUSIBLE` (a Δflux column is not); the columns ignored are
    recorded in :attr:`Dataset.ignored` and :attr:`ReadReport.ignored`.

For ``pysis`` and ``magnitude`` files the site, field and band come from the file name:
``KMTC``/``KCT``/``CTIO`` = CTIO, ``KMTS``/``KSA``/``SAAO`` = SAAO, ``KMTA``/``KSS``/``SSO`` =
SSO (case-insensitive), then an optional ``BLG`` and field number, then an optional band letter
``I``/``V`` (``KMTC02_I.pysis``, ``KMTA41_V.pysis``, ``KCT01I.dat``, ``KMTS_BLG42.pysis``). No
field gives -1; no band letter means I. An unknown prefix is an :class:`ArchiveError`
(:func:`read_season` can skip and report such files instead).

Times: a file whose times are all below 100 000 is in HJD - 2450000 (KMTNet's convention,
8000-12000 for 2018-2029) and gets :data:`~consumer.constants.HJD_OFFSET` added back; all at or
above 2 400 000 is full HJD; anything else (a mix, or values in between) is an error.

Every dataset is sorted by time (stable) on reading. Unreadable content raises
:class:`ArchiveError` naming ``file:line``; the fast path parses with ``numpy.loadtxt`` and the
line-by-line scan runs only to name the bad line.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, NoReturn

import numba
import numpy as np
import numpy.typing as npt

from consumer.constants import HJD_OFFSET, SITES
from consumer.edge.photometry import Observations
from consumer.exceptions import LensNetError

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

#: First line of every native file; the version changes when the layout does.
NATIVE_MAGIC: Final = "# lensnet-season v1"
#: Native columns, in the order the writer uses.
NATIVE_COLUMNS: Final = ("hjd", "band", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality")
#: Decimals written per float column (hjd in days, flux in DIA units, sky in ADU, fwhm arcsec).
NATIVE_DECIMALS: Final = {
    "hjd": 6,
    "flux": 4,
    "flux_err": 4,
    "sky": 2,
    "fwhm": 3,
    "airmass": 4,
    "psf_quality": 3,
}
#: Magnitude of a source of flux 1 when converting ``HJD mag mag_err`` files (I ~ 19 -> 6300).
MAG_ZERO_POINT: Final = 28.0
#: Magnitudes outside this range are not photometry (and would overflow the conversion).
MAG_RANGE: Final = (-20.0, 50.0)
#: What the second and third columns of a file with extra columns must hold to be read as
#: magnitude and error: a ground-based survey's magnitudes, errors below 5 mag.
MAG_PLAUSIBLE: Final = (5.0, 30.0)
MAG_ERR_PLAUSIBLE: Final = (0.0, 5.0)
#: Largest float32: auxiliary columns are stored as float32.
FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
#: Times below this are HJD - 2450000; at or above FULL_HJD_MIN they are full HJD.
OFFSET_HJD_MAX: Final = 100_000.0
FULL_HJD_MIN: Final = 2_400_000.0
#: ``Observations.chip`` is uint8; an unknown chip (-1 here) becomes this value there.
UNKNOWN_CHIP_U8: Final = 255

_ROW_FORMAT: Final = ",".join(
    "{:d}" if name == "band" else f"{{:.{NATIVE_DECIMALS[name]}f}}" for name in NATIVE_COLUMNS
)
_DECIMALS_ARRAY: Final = np.array(
    [NATIVE_DECIMALS.get(name, 0) for name in NATIVE_COLUMNS], dtype=np.int64
)
_NAN_BYTES: Final = np.frombuffer(b"nan", dtype=np.uint8).copy()
_INF_BYTES: Final = np.frombuffer(b"inf", dtype=np.uint8).copy()
_METADATA_KEYS: Final = ("star_id", "ra", "dec", "chip", "x", "y", "site", "field")
_SITE_PREFIXES: Final = {
    "KMTC": "CTIO",
    "KCT": "CTIO",
    "CTIO": "CTIO",
    "KMTS": "SAAO",
    "KSA": "SAAO",
    "SAAO": "SAAO",
    "KMTA": "SSO",
    "KSS": "SSO",
    "SSO": "SSO",
}
_KMT_NAME: Final = re.compile(
    r"^(?P<site>KMT[CSA]|KCT|KSA|KSS|CTIO|SAAO|SSO)[_-]?(?:BLG)?(?P<field>\d{1,3})?"
    r"[_-]?(?P<band>[IV](?![A-Z]))?",
    re.IGNORECASE,
)
_EMPTY_FIELD: Final = re.compile(r"(?<=,)(?=[,\n]|\Z)|^(?=,)", re.MULTILINE)
_DATA_LINE: Final = re.compile(r"^[ \t]*[^#\s]", re.MULTILINE)


class ArchiveError(LensNetError):
    """An archive file or directory cannot be read or written; the message names file:line."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """One site-field light curve of one star; every array has shape (N,) and is time-sorted.

    Attributes
    ----------
    site : "CTIO", "SAAO" or "SSO".
    field : KMTNet field number (BLG02 -> 2); -1 when unknown.
    hjd : full HJD, days.
    flux, flux_err : difference-imaging flux and its error (DIA flux units).
    sky : background, ADU; NaN where the file has no such column (never invented).
    fwhm : seeing, arcsec (as written by the source file); NaN when missing.
    airmass : dimensionless; NaN when missing.
    psf_quality : 0-100 (values outside mean a bad fit); NaN when missing.
    band : 0 for I, 1 for V.
    source : the file it came from, for error messages ("" when built in memory).
    ignored : what of the file was not read (extra columns), "" when everything was.
    """

    site: str
    field: int
    hjd: F64
    flux: F64
    flux_err: F64
    sky: F32
    fwhm: F32
    airmass: F32
    psf_quality: F32
    band: U8
    source: str = ""
    ignored: str = ""

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ArchiveError(f"{self.source or 'dataset'}: unknown site {self.site!r}")
        lengths = {name: len(getattr(self, name)) for name in NATIVE_COLUMNS}
        if len(set(lengths.values())) > 1:
            raise ArchiveError(f"{self.source or 'dataset'}: columns differ in length {lengths}")

    def __len__(self) -> int:
        return len(self.hjd)


@dataclass(frozen=True, eq=False)
class Star:
    """One star of a season and all its datasets.

    Attributes
    ----------
    star_id : ``int(name)`` when the directory name is a non-negative integer, otherwise a
        stable 63-bit hash of the name (:func:`star_id_from_name`); a native file's
        ``star_id`` metadata takes precedence.
    name : directory name.
    ra, dec : degrees; NaN when unknown.
    chip : KMTNet chip 0-3; -1 when unknown.
    x, y : pixel position on the chip; NaN when unknown.
    datasets : ordered by site (``SITES`` order), field, then source file name.
    """

    star_id: int
    name: str
    ra: float
    dec: float
    chip: int
    x: float
    y: float
    datasets: tuple[Dataset, ...]


@dataclass
class ReadReport:
    """What :func:`iter_season` / :func:`read_season` read and what they skipped, and why."""

    n_stars: int = 0
    n_files: int = 0
    n_observations: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (file, what of it was not read): files read in part, e.g. extra trailing columns.
    ignored: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


def star_id_from_name(name: str) -> int:
    """``int(name)`` for non-negative integer names below 2**63, else a stable 63-bit hash.

    The hash is the first 8 bytes of ``blake2b(name.encode("utf-8"), digest_size=8)`` read as a
    big-endian integer with the top bit cleared, so it is non-negative and fits an int64.
    """
    if name.isascii() and name.isdigit() and int(name) < 2**63:
        return int(name)
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def quantize(dataset: Dataset) -> Dataset:
    """The dataset with every float column rounded to the decimals the native writer keeps."""
    rounded = {
        name: np.round(getattr(dataset, name), NATIVE_DECIMALS[name]) for name in NATIVE_DECIMALS
    }
    return replace(dataset, **rounded)


def site_field_band(path: Path) -> tuple[str, int, int]:
    """Site, field (-1 when absent) and band (0 = I, 1 = V; I when absent) from a file name."""
    match = _KMT_NAME.match(path.name)
    if match is None:
        raise ArchiveError(
            f"{path}: unknown site prefix (expected KMTC/KCT/CTIO, KMTS/KSA/SAAO or KMTA/KSS/SSO)"
        )
    site = _SITE_PREFIXES[match["site"].upper()]
    field_number = int(match["field"]) if match["field"] else -1
    band = 1 if (match["band"] or "I").upper() == "V" else 0
    return site, field_number, band


# ----------------------------------------------------------------------------------- reading


def read_dataset(path: Path) -> tuple[Dataset, dict[str, str]]:
    """Read one file of any supported format; returns the dataset and its metadata (native only).

    Raises
    ------
    ArchiveError
        Unreadable file, unknown name prefix, no observations, bad number or column count
        (naming ``file:line``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ArchiveError(f"{path}: not a UTF-8 text file ({error.reason})") from error
    except OSError as error:
        raise ArchiveError(f"{path}: cannot read ({error.strerror})") from error
    if text.startswith(NATIVE_MAGIC):
        return _read_native(path, text)
    return _read_columns(path, text), {}


def _read_native(path: Path, text: str) -> tuple[Dataset, dict[str, str]]:
    metadata: dict[str, str] = {}
    position, line_number = 0, 0
    header: str | None = None
    while position < len(text):
        end = text.find("\n", position)
        end = len(text) if end < 0 else end
        line = text[position:end].strip()
        position, line_number = end + 1, line_number + 1
        if line_number == 1:
            continue  # the magic line
        if line.startswith("#"):
            key, colon, value = line[1:].partition(":")
            if not colon:
                raise ArchiveError(f"{path}:{line_number}: expected '# key: value' metadata")
            metadata[key.strip()] = value.strip()
        elif line:
            header = line
            break
    if header is None:
        raise ArchiveError(f"{path}: no header row (expected {','.join(NATIVE_COLUMNS)})")
    names = [name.strip() for name in header.split(",")]
    if sorted(names) != sorted(NATIVE_COLUMNS):
        raise ArchiveError(
            f"{path}:{line_number}: header {header!r} does not name the columns "
            f"{','.join(NATIVE_COLUMNS)}"
        )
    site = metadata.get("site", "")
    if site not in SITES:
        raise ArchiveError(f"{path}: metadata 'site: {site}' is not one of {', '.join(SITES)}")
    field_number = _int_metadata(path, metadata, "field", -1)
    body = text[position:]
    table = _parse_table(path, body, line_number, len(names), delimiter=",")
    columns = {name: table[:, index] for index, name in enumerate(names)}
    band = columns["band"]
    if not np.all((band == 0) | (band == 1)):
        bad = int(np.flatnonzero((band != 0) & (band != 1))[0])
        raise ArchiveError(
            f"{path}:{_data_line_number(body, bad, line_number)}: band must be 0 (I) or 1 (V)"
        )
    _check_hjd_full(path, columns["hjd"], body, line_number)
    dataset = _sorted_dataset(
        site,
        field_number,
        str(path),
        hjd=columns["hjd"],
        flux=columns["flux"],
        flux_err=columns["flux_err"],
        sky=columns["sky"],
        fwhm=columns["fwhm"],
        airmass=columns["airmass"],
        psf_quality=columns["psf_quality"],
        band=band,
    )
    return dataset, metadata


def _read_columns(path: Path, text: str) -> Dataset:
    """A pysis (5 or 8 columns) or magnitude (3 columns, or more with extra ones) file."""
    first_line, first_count = _first_data_line(text)
    if first_line == 0:
        raise ArchiveError(f"{path}: no observations (empty or only comments)")
    site, field_number, band = site_field_band(path)
    expected = (
        f"{path}:{first_line}: expected 3 (HJD mag mag_err) or 5 or 8 (pysis) columns, "
        f"got {first_count}"
    )
    if first_count < 3:
        raise ArchiveError(expected)
    # The magnitude columns of pysis files are never used and may hold placeholders.
    usecols = {5: (0, 1, 2), 8: (0, 1, 2, 5, 6, 7)}.get(first_count, (0, 1, 2))
    _check_column_counts(path, text, first_count)
    table = _parse_table(path, text, 0, first_count, delimiter=None, usecols=usecols)
    magnitudes = first_count not in (5, 8)
    ignored = ""
    if first_count not in (3, 5, 8):
        mag, mag_err = table[:, 1], table[:, 2]
        with np.errstate(invalid="ignore"):
            plausible = np.all((mag >= MAG_PLAUSIBLE[0]) & (mag <= MAG_PLAUSIBLE[1]))
            plausible &= np.all(
                (mag_err >= MAG_ERR_PLAUSIBLE[0]) & (mag_err <= MAG_ERR_PLAUSIBLE[1])
            )
        if not plausible:
            raise ArchiveError(
                f"{expected}; with extra columns the first three must read as HJD, magnitude "
                f"{MAG_PLAUSIBLE[0]:g}-{MAG_PLAUSIBLE[1]:g} and error "
                f"{MAG_ERR_PLAUSIBLE[0]:g}-{MAG_ERR_PLAUSIBLE[1]:g}"
            )
        extra = "column 4" if first_count == 4 else f"columns 4-{first_count}"
        ignored = f"{extra} of {first_count} ignored (read as HJD mag mag_err)"
    hjd = _to_full_hjd(path, table[:, 0])
    n = len(hjd)
    missing: npt.NDArray[Any] = np.full(n, np.nan, dtype=np.float32)
    fwhm, sky, airmass = missing, missing, missing
    if magnitudes:
        mag, mag_err = table[:, 1], table[:, 2]
        absurd = np.flatnonzero(np.isinf(mag) | (mag < MAG_RANGE[0]) | (mag > MAG_RANGE[1]))
        if len(absurd):
            row = int(absurd[0])
            raise ArchiveError(
                f"{path}: data row {row + 1} has magnitude {mag[row]}, outside {MAG_RANGE}"
            )
        flux = 10.0 ** (0.4 * (MAG_ZERO_POINT - mag))
        flux_err = flux * (0.4 * math.log(10.0)) * mag_err
    else:
        flux, flux_err = table[:, 1], table[:, 2]
        if first_count == 8:
            fwhm, sky, airmass = table[:, 3], table[:, 4], table[:, 5]
    return _sorted_dataset(
        site,
        field_number,
        str(path),
        hjd=hjd,
        flux=flux,
        flux_err=flux_err,
        sky=sky,
        fwhm=fwhm,
        airmass=airmass,
        psf_quality=missing,
        band=np.full(n, band, dtype=np.uint8),
        ignored=ignored,
    )


def _first_data_line(text: str) -> tuple[int, int]:
    """(1-based line number, column count) of the first data line; (0, 0) when there is none."""
    for number, line in enumerate(io.StringIO(text), start=1):
        stripped = line.split("#", 1)[0].strip()  # a trailing comment is not a column
        if stripped:
            return number, len(stripped.split())
    return 0, 0


def _parse_table(
    path: Path,
    body: str,
    line_offset: int,
    n_columns: int,
    *,
    delimiter: str | None,
    usecols: tuple[int, ...] | None = None,
) -> F64:
    """Rows of ``body`` as float64, shape (N, len(usecols) or n_columns); bad content names
    file:line."""
    width = n_columns if usecols is None else len(usecols)
    if not _DATA_LINE.search(body):
        return np.empty((0, width), dtype=np.float64)
    try:
        table = _loadtxt(body, delimiter, usecols)
    except ValueError as error:
        # Empty fields are legal in native files; scanning for them only after a failure keeps
        # the common path at loadtxt's speed.
        if not (delimiter == "," and _has_empty_field(body)):
            _raise_bad_line(path, body, line_offset, n_columns, delimiter, usecols, error)
        body = _EMPTY_FIELD.sub("nan", body)
        try:
            table = _loadtxt(body, delimiter, usecols)
        except ValueError as error_again:
            _raise_bad_line(path, body, line_offset, n_columns, delimiter, usecols, error_again)
    if table.shape[1] != width:
        _raise_bad_line(path, body, line_offset, n_columns, delimiter, usecols, None)
    return table


def _check_column_counts(path: Path, text: str, n_columns: int) -> None:
    """Every data line has ``n_columns`` fields (loadtxt with usecols ignores extra ones)."""
    for number, line in enumerate(_lines(text), start=1):
        stripped = line.split("#", 1)[0].strip()
        if stripped and len(stripped.split()) != n_columns:
            raise ArchiveError(
                f"{path}:{number}: expected {n_columns} columns, got {len(stripped.split())}"
            )


def _loadtxt(body: str, delimiter: str | None, usecols: tuple[int, ...] | None) -> F64:
    table = np.loadtxt(
        io.StringIO(body),
        delimiter=delimiter,
        comments="#",
        dtype=np.float64,
        ndmin=2,
        usecols=usecols,
    )
    return np.asarray(table, dtype=np.float64)


def _has_empty_field(body: str) -> bool:
    return (
        ",," in body or ",\n" in body or "\n," in body or body.startswith(",") or body.endswith(",")
    )


def _lines(text: str) -> Iterator[str]:
    """Lines of ``text`` lazily, so a big file is not split just to find its first data line."""
    return iter(io.StringIO(text))


def _raise_bad_line(
    path: Path,
    body: str,
    line_offset: int,
    n_columns: int,
    delimiter: str | None,
    usecols: tuple[int, ...] | None,
    error: ValueError | None,
) -> NoReturn:
    """Scan line by line (slow, error path only) and raise for the first bad line."""
    for number, line in enumerate(_lines(body), start=line_offset + 1):
        stripped = line.split("#", 1)[0].strip()
        if not stripped:
            continue
        values = stripped.split(delimiter)
        if len(values) != n_columns:
            raise ArchiveError(f"{path}:{number}: expected {n_columns} columns, got {len(values)}")
        for index in usecols if usecols is not None else range(n_columns):
            try:
                float(values[index])
            except ValueError:
                raise ArchiveError(
                    f"{path}:{number}: not a number: {values[index].strip()!r}"
                ) from None
    raise ArchiveError(f"{path}: unreadable table ({error})")


def _data_line_number(body: str, row: int, line_offset: int) -> int:
    """File line number of data row ``row`` (0-based) of ``body`` (error path only)."""
    seen = -1
    for number, line in enumerate(_lines(body), start=line_offset + 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            seen += 1
            if seen == row:
                return number
    return line_offset


def _to_full_hjd(path: Path, times: F64) -> F64:
    if len(times) == 0:
        return times
    infinite = np.flatnonzero(~np.isfinite(times))
    if len(infinite):
        raise ArchiveError(f"{path}: data row {infinite[0] + 1} has time {times[infinite[0]]}")
    if np.all(times < OFFSET_HJD_MAX):
        return times + HJD_OFFSET
    if np.all(times >= FULL_HJD_MIN):
        return times
    raise ArchiveError(
        f"{path}: times are neither all HJD - 2450000 (< {OFFSET_HJD_MAX:.0f}) nor all full HJD "
        f"(>= {FULL_HJD_MIN:.0f}); range {np.nanmin(times)} - {np.nanmax(times)}"
    )


def _check_hjd_full(path: Path, hjd: F64, body: str, line_offset: int) -> None:
    bad = ~(hjd >= FULL_HJD_MIN) | ~np.isfinite(hjd)
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0])
        raise ArchiveError(
            f"{path}:{_data_line_number(body, row, line_offset)}: native files hold full HJD "
            f"(>= {FULL_HJD_MIN:.0f}), got {hjd[row]}"
        )


def _sorted_dataset(
    site: str, field_number: int, source: str, ignored: str = "", **columns: npt.NDArray[Any]
) -> Dataset:
    hjd = columns["hjd"]
    for name in ("sky", "fwhm", "airmass", "psf_quality"):
        values = np.asarray(columns[name], dtype=np.float64)
        beyond = np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)
        if np.any(beyond):
            raise ArchiveError(
                f"{source}: {name} {values[np.argmax(beyond)]} is beyond the float32 range"
            )
    # Files are nearly always sorted already; then skip the argsort and the gathers.
    order: npt.NDArray[np.intp] | slice = (
        slice(None) if np.all(hjd[1:] >= hjd[:-1]) else np.argsort(hjd, kind="stable")
    )
    return Dataset(
        site=site,
        field=field_number,
        hjd=np.ascontiguousarray(columns["hjd"][order], dtype=np.float64),
        flux=np.ascontiguousarray(columns["flux"][order], dtype=np.float64),
        flux_err=np.ascontiguousarray(columns["flux_err"][order], dtype=np.float64),
        sky=np.ascontiguousarray(columns["sky"][order], dtype=np.float32),
        fwhm=np.ascontiguousarray(columns["fwhm"][order], dtype=np.float32),
        airmass=np.ascontiguousarray(columns["airmass"][order], dtype=np.float32),
        psf_quality=np.ascontiguousarray(columns["psf_quality"][order], dtype=np.float32),
        band=np.ascontiguousarray(columns["band"][order], dtype=np.uint8),
        source=source,
        ignored=ignored,
    )


#: Ranges of integer metadata: what the Observations columns (i8 star id, u1 chip, i2 field)
#: can hold; -1 means unknown.
_INT_RANGES: Final = {"star_id": (-(2**63), 2**63 - 1), "chip": (-1, 255), "field": (-1, 2**15 - 1)}


def _int_metadata(path: Path, metadata: dict[str, str], key: str, default: int) -> int:
    value = metadata.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ArchiveError(f"{path}: metadata '{key}: {value}' is not an integer") from None
    low, high = _INT_RANGES.get(key, (-(2**63), 2**63 - 1))
    if not low <= number <= high:
        raise ArchiveError(f"{path}: metadata '{key}: {value}' is outside [{low}, {high}]")
    return number


def _float_metadata(path: Path, metadata: dict[str, str], key: str) -> float:
    value = metadata.get(key)
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise ArchiveError(f"{path}: metadata '{key}: {value}' is not a number") from None


def read_star(directory: Path) -> Star:
    """Read every file of one star directory (hidden files ignored); see the module docstring.

    Raises
    ------
    ArchiveError
        Any unreadable file, no data files, or native files disagreeing on the star's metadata.
    """
    star, _ = _read_star(directory, skip_bad_files=False)
    if star is None:
        raise ArchiveError(f"{directory}: no light-curve files")
    return star


def _check_star_metadata(
    path: Path, metadata: dict[str, str], earlier: dict[str, tuple[str, Path]]
) -> None:
    """A file's star-level metadata: readable, in range, and agreeing with earlier files."""
    for key in ("star_id", "chip"):
        _int_metadata(path, metadata, key, -1)
    for key in ("ra", "dec", "x", "y"):
        value = _float_metadata(path, metadata, key)
        if key in ("x", "y") and math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise ArchiveError(
                f"{path}: metadata '{key}: {metadata[key]}' is beyond the float32 range"
            )
    for key in ("star_id", "ra", "dec", "chip", "x", "y"):
        if key in metadata and key in earlier and earlier[key][0] != metadata[key]:
            raise ArchiveError(
                f"{path}: metadata '{key}: {metadata[key]}' disagrees with "
                f"'{key}: {earlier[key][0]}' in {earlier[key][1]}"
            )


def _read_star(
    directory: Path, *, skip_bad_files: bool
) -> tuple[Star | None, list[tuple[str, str]]]:
    """The star (None when the folder holds no readable data file) and the files skipped."""
    skipped: list[tuple[str, str]] = []
    datasets: list[Dataset] = []
    star_metadata: dict[str, tuple[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            skipped.append((str(path), "hidden file"))
            continue
        if not path.is_file():
            skipped.append((str(path), "not a regular file"))
            continue
        try:
            dataset, metadata = read_dataset(path)
            _check_star_metadata(path, metadata, star_metadata)
        except ArchiveError as error:
            if not skip_bad_files:
                raise
            skipped.append((str(path), str(error)))
            continue
        datasets.append(dataset)
        for key in ("star_id", "ra", "dec", "chip", "x", "y"):
            if key in metadata:
                star_metadata.setdefault(key, (metadata[key], path))
    if not datasets:
        return None, skipped
    values = {key: value for key, (value, _) in star_metadata.items()}
    first = next(iter(p for _, p in star_metadata.values()), directory)
    star_id = (
        _int_metadata(first, values, "star_id", 0)
        if "star_id" in values
        else star_id_from_name(directory.name)
    )
    datasets.sort(key=lambda d: (SITES.index(d.site), d.field, Path(d.source).name))
    star = Star(
        star_id=star_id,
        name=directory.name,
        ra=_float_metadata(first, values, "ra"),
        dec=_float_metadata(first, values, "dec"),
        chip=_int_metadata(first, values, "chip", -1),
        x=_float_metadata(first, values, "x"),
        y=_float_metadata(first, values, "y"),
        datasets=tuple(datasets),
    )
    return star, skipped


def iter_season(
    season_dir: Path, report: ReadReport | None = None, *, skip_bad_files: bool = False
) -> Iterator[Star]:
    """Stars of a season directory, one at a time, in name order.

    Top-level files (``labels.csv``, ``season.json``...), hidden entries and empty star
    directories are skipped and recorded in ``report``; so are unreadable files when
    ``skip_bad_files`` is true (otherwise they raise :class:`ArchiveError`).
    """
    report = report if report is not None else ReadReport()
    if not season_dir.is_dir():
        raise ArchiveError(f"{season_dir}: not a directory")
    for entry in sorted(season_dir.iterdir()):
        if entry.name.startswith("."):
            report.skipped.append((str(entry), "hidden entry"))
            continue
        if not entry.is_dir():
            report.skipped.append((str(entry), "not a star directory"))
            continue
        star, skipped = _read_star(entry, skip_bad_files=skip_bad_files)
        report.skipped.extend(skipped)
        if star is None:
            report.skipped.append((str(entry), "no light-curve files"))
            continue
        report.n_stars += 1
        report.n_files += len(star.datasets)
        report.ignored.extend((d.source, d.ignored) for d in star.datasets if d.ignored)
        report.n_observations += sum(len(d) for d in star.datasets)
        yield star


def read_season(season_dir: Path, *, skip_bad_files: bool = False) -> tuple[list[Star], ReadReport]:
    """Every star of a season directory and what was read or skipped (see :func:`iter_season`)."""
    report = ReadReport()
    stars = list(iter_season(season_dir, report, skip_bad_files=skip_bad_files))
    return stars, report


# ----------------------------------------------------------------------------------- writing


def native_file_names(star: Star) -> list[str]:
    """File name of each dataset of ``star`` in the native layout, in dataset order."""
    names: list[str] = []
    for dataset in star.datasets:
        stem = dataset.site if dataset.field < 0 else f"{dataset.site}_BLG{dataset.field:02d}"
        name, copy = f"{stem}.csv", 1
        while name in names:
            copy += 1
            name = f"{stem}_{copy}.csv"
        names.append(name)
    return names


def format_native(star: Star, dataset: Dataset) -> str:
    """The native file text of one dataset of ``star``."""
    metadata = {
        "star_id": str(star.star_id),
        "ra": repr(float(star.ra)),
        "dec": repr(float(star.dec)),
        "chip": str(star.chip),
        "x": repr(float(star.x)),
        "y": repr(float(star.y)),
        "site": dataset.site,
        "field": str(dataset.field),
    }
    head = [NATIVE_MAGIC, *(f"# {key}: {metadata[key]}" for key in _METADATA_KEYS)]
    head.append(",".join(NATIVE_COLUMNS))
    rows = _format_rows(dataset)
    return "\n".join(head) + "\n" + rows


def _format_rows(dataset: Dataset) -> str:
    """The data rows of a native file, each ending in a newline."""
    columns = np.empty((len(NATIVE_COLUMNS), len(dataset)), dtype=np.float64)
    for index, name in enumerate(NATIVE_COLUMNS):
        columns[index] = getattr(dataset, name)
    # 24 bytes hold any value the kernel accepts (< 9e15 after scaling) with sign and point.
    buffer = np.empty(columns.size * 24 + len(dataset), dtype=np.uint8)
    length = _format_fixed_kernel(columns, _DECIMALS_ARRAY, buffer)
    if length >= 0:
        return buffer[:length].tobytes().decode("ascii")
    # Values too large for int64 fixed point: Python's formatting, ~8x slower.
    lists = [getattr(dataset, name).tolist() for name in NATIVE_COLUMNS]
    return "".join(line + "\n" for line in map(_ROW_FORMAT.format, *lists))


@numba.njit(cache=True, error_model="numpy")
def _format_fixed_kernel(
    columns: npt.NDArray[np.float64], decimals: npt.NDArray[np.int64], out: U8
) -> int:
    """Write ``columns`` (n_columns, N) as CSV rows with fixed decimals into ``out``.

    Each value is ``rint(value * 10**decimals)`` printed as an integer with the point put
    back, so a value rounded to those decimals (``np.round``) prints as its exact decimal
    text; NaN prints ``nan``, infinities ``inf`` / ``-inf``. Returns the number of bytes
    written, or -1 when a scaled value does not fit an int64 exactly (caller falls back).
    """
    n_columns, n = columns.shape
    scale = np.empty(n_columns)
    for c in range(n_columns):
        scale[c] = 10.0 ** decimals[c]
    digits = np.empty(24, dtype=np.uint8)
    pos = 0
    for i in range(n):
        for c in range(n_columns):
            if c:
                out[pos] = 44  # ","
                pos += 1
            x = columns[c, i]
            if np.isnan(x):
                out[pos : pos + 3] = _NAN_BYTES
                pos += 3
                continue
            if np.isinf(x):
                if x < 0:
                    out[pos] = 45  # "-"
                    pos += 1
                out[pos : pos + 3] = _INF_BYTES
                pos += 3
                continue
            scaled = np.rint(x * scale[c])
            if abs(scaled) >= 9.0e15:
                return -1
            v = np.int64(scaled)
            if v < 0:
                out[pos] = 45
                pos += 1
                v = -v
            d = decimals[c]
            k = 0
            while v > 0 or k <= d:  # at least one digit before the point
                digits[k] = 48 + v % 10
                v //= 10
                k += 1
            for j in range(k - 1, -1, -1):
                if j == d - 1:
                    out[pos] = 46  # "."
                    pos += 1
                out[pos] = digits[j]
                pos += 1
        out[pos] = 10  # newline
        pos += 1
    return pos


def write_star(star: Star, season_dir: Path, *, overwrite: bool = False) -> Path:
    """Write ``star`` in the native format under ``season_dir/star.name``; returns that folder.

    Raises
    ------
    ArchiveError
        The star has no datasets, the folder already holds files and ``overwrite`` is false,
        or it cannot be written.
    """
    if not star.name or "/" in star.name or star.name.startswith("."):
        raise ArchiveError(f"star {star.star_id}: name {star.name!r} is not a directory name")
    if not star.datasets:
        # An empty folder would read back as no star at all.
        raise ArchiveError(f"star {star.star_id}: no datasets to write")
    directory = season_dir / star.name
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not overwrite and any(directory.iterdir()):
            raise ArchiveError(f"{directory}: already holds files (pass overwrite=True)")
        for name, dataset in zip(native_file_names(star), star.datasets, strict=True):
            (directory / name).write_text(format_native(star, dataset), encoding="utf-8")
    except OSError as error:
        raise ArchiveError(f"{directory}: cannot write ({error.strerror})") from error
    return directory


# ---------------------------------------------------------------------------------- streaming


def to_observations(star: Star) -> dict[str, Observations]:
    """Per site, all that site's datasets as one :class:`Observations`, sorted by hjd (stable).

    Each row keeps its dataset's field; an unknown chip (-1) becomes 255 (uint8).
    """
    by_site: dict[str, list[Dataset]] = {}
    for dataset in star.datasets:
        by_site.setdefault(dataset.site, []).append(dataset)
    chip = UNKNOWN_CHIP_U8 if star.chip < 0 else star.chip
    result: dict[str, Observations] = {}
    for site in (s for s in SITES if s in by_site):
        parts = by_site[site]
        hjd = np.concatenate([d.hjd for d in parts])
        order = np.argsort(hjd, kind="stable")
        n = len(hjd)
        per_row = {
            name: np.concatenate([getattr(d, name) for d in parts])[order]
            for name in ("band", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality")
        }
        result[site] = Observations.from_columns(
            star_id=np.full(n, star.star_id),
            field=np.concatenate([np.full(len(d), d.field) for d in parts])[order],
            chip=np.full(n, chip),
            ra=np.full(n, star.ra),
            dec=np.full(n, star.dec),
            x=np.full(n, star.x),
            y=np.full(n, star.y),
            hjd=hjd[order],
            **per_row,
        )
    return result
