"""Fuzz tests: the decoders and the archive reader fail only in the way they document.

Properties, whatever bytes or file contents arrive:

- ``PhotometryDecoder.decode`` returns a batch whose columns all have one length n >= 0, the
  schema's dtypes and a site of ``SITES``, or raises :class:`DecodeError`;
- ``AlertDecoder.decode`` returns an :class:`Alert` with a consistent light curve, or raises
  :class:`DecodeError`, whatever the ``lensnet.schema`` header holds;
- ``EventDecoder.decode`` returns an :class:`EventUpdate` of a known kind, or raises
  :class:`DecodeError`;
- ``read_dataset`` returns a time-sorted dataset with columns of one length, the documented
  dtypes and no NaN time, or raises :class:`ArchiveError` naming the file;
  ``iter_season(..., skip_bad_files=True)`` never raises and accounts for every file, either
  read or listed in ``ReadReport.skipped``; without it, the season reads the same or raises
  :class:`ArchiveError`.

Every example must finish within the 2 s hypothesis deadline, and each test within a 120 s
timeout, so a hang fails too. Examples per run (``max_examples``):

- photometry decoder, 3,600: arbitrary bytes 800, a valid header then random bytes 800,
  well-formed Avro with inconsistent counts and column lengths 800, mutated valid batches 1,200
  (truncations, byte flips, insertions, deletions); plus 300 bit-exact round trips;
- alert decoder, 3,000: arbitrary bytes 800, a valid header then random bytes 800, mutated
  valid alerts 1,400; each with the real headers, none, or a random / corrupted schema header,
  decoded by a reader that knows the shipped schemas or by one that must trust the header;
- event update decoder (the events topic), 1,600: arbitrary bytes 400, a valid header then
  random bytes 400, mutated valid updates 800, with the real headers or none;
- archive reader, 3,500: arbitrary bytes and text 600, random whitespace tables (pysis and
  magnitude layouts) 1,000, random native files 800, line-mutated simulator and pysis files
  800, small seasons of valid, mutated and garbage files read with and without
  ``skip_bad_files`` 300.

The ten bugs these tests found (three in the alert decoder, seven in the archive reader) are
fixed; the tests at the end of the module pin each of them. An eleventh gap, chip x/y
metadata beyond the float32 range of ``Observations``, is refused since (pinned too).
"""

from __future__ import annotations

import io
import json
import tempfile
import traceback
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import fastavro
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consumer.constants import HJD_OFFSET, SITES
from consumer.edge.alert import (
    CONTENT_TYPE_HEADER,
    LABELS,
    SCHEMA_HEADER,
    Alert,
    AlertDecoder,
    AlertFinderSummary,
    Classification,
    Headers,
    LightCurve,
    alert_id_for,
    alert_to_record,
    encode_alert,
    encode_record,
)
from consumer.edge.events import UPDATE_KINDS, EventDecoder, EventUpdate, encode_update
from consumer.edge.photometry import (
    Observations,
    PhotometryBatch,
    PhotometryDecoder,
    column_dtypes,
    encode_batch,
)
from consumer.edge.schemas import MAGIC, SchemaRegistry, frame, load_schema
from consumer.exceptions import DecodeError
from consumer.seasons.archive import (
    FULL_HJD_MIN,
    NATIVE_COLUMNS,
    NATIVE_MAGIC,
    ArchiveError,
    Dataset,
    ReadReport,
    Star,
    iter_season,
    read_dataset,
    read_season,
    read_star,
    to_observations,
)
from model.simulate import SimulationConfig, write_season
from tests.consumer.edge.test_event_model import make_model, make_update

# The hypothesis deadline fails an example that is slow but ends; a real hang is cut here.
pytestmark = pytest.mark.timeout(120)

FUZZ: Final = settings(
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def frames_in(error: BaseException, module: ModuleType) -> list[str]:
    """Names of the functions of ``module`` the traceback of ``error`` passes, outermost first."""
    source = Path(module.__file__ or "").resolve()
    return [
        frame.name
        for frame in traceback.extract_tb(error.__traceback__)
        if Path(frame.filename).resolve() == source
    ]


def innermost(error: BaseException, module: ModuleType) -> str:
    names = frames_in(error, module)
    return names[-1] if names else ""


@st.composite
def mutated_bytes(draw: st.DrawFn, bases: tuple[bytes, ...]) -> bytes:
    """A base message after 1-4 truncations, byte flips, insertions or deletions.

    Half the positions fall in the first 48 bytes, where the header, the enum, the counts and the
    first length prefixes live; a flip deep inside a column only changes a value.
    """
    message = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, min(len(message), 48)) | st.integers(0, len(message)))
        operation = draw(st.sampled_from(("truncate", "flip", "insert", "delete")))
        if operation == "truncate":
            del message[position:]
        elif operation == "flip" and position < len(message):
            message[position] ^= draw(st.integers(1, 255))
        elif operation == "insert":
            message[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del message[position : position + draw(st.integers(1, 16))]
    return bytes(message)


# ------------------------------------------------------------------------ photometry decoder

PHOTOMETRY: Final = load_schema("photometry")
PHOTOMETRY_DTYPES: Final = column_dtypes()
PHOTOMETRY_DECODER: Final = PhotometryDecoder()


def random_observations(n: int, seed: int) -> Observations:
    rng = np.random.default_rng(seed)
    return Observations.from_columns(
        **{
            name: rng.integers(0, 100, n) if dtype.kind in "iu" else rng.normal(0, 1e3, n)
            for name, dtype in PHOTOMETRY_DTYPES.items()
        }
    )


VALID_BATCHES: Final = tuple(
    encode_batch(PhotometryBatch(site, random_observations(n, seed), producer))
    for n, site, producer, seed in (
        (0, "CTIO", "", 0),
        (1, "SSO", "fuzz", 1),
        (3, "SAAO", "é", 2),
        (40, "CTIO", "", 3),
    )
)


def assert_decodes_or_refuses_photometry(message: bytes) -> None:
    try:
        batch = PHOTOMETRY_DECODER.decode(message)
    except DecodeError:
        event("refused")
        return
    event("decoded")
    assert batch.site in SITES
    n = len(batch.observations)
    for name, dtype in PHOTOMETRY_DTYPES.items():
        column = getattr(batch.observations, name)
        assert column.dtype == dtype, name
        assert column.shape == (n,), name


@st.composite
def inconsistent_batches(draw: st.DrawFn) -> bytes:
    """Well-formed Avro whose count and column lengths may disagree (0-3 broken columns)."""
    n = draw(st.integers(-3, 20) | st.sampled_from((2**31 - 1, -(2**31))))
    record: dict[str, Any] = {
        "site": draw(st.sampled_from(SITES)),
        "n": n,
        "producer": draw(st.text(max_size=12)),
    }
    broken = draw(st.sets(st.sampled_from(sorted(PHOTOMETRY_DTYPES)), max_size=3))
    for name, dtype in PHOTOMETRY_DTYPES.items():
        exact = max(n, 0) * dtype.itemsize if n <= 20 else 0
        size = draw(st.integers(0, 48)) if name in broken else exact
        record[name] = draw(st.binary(min_size=size, max_size=size))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, PHOTOMETRY.parsed, record)
    return frame(PHOTOMETRY, buffer.getvalue())


@settings(FUZZ, max_examples=800)
@given(st.binary(max_size=512))
def test_photometry_decoder_on_arbitrary_bytes(message: bytes) -> None:
    assert_decodes_or_refuses_photometry(message)


@settings(FUZZ, max_examples=800)
@given(st.binary(max_size=512))
def test_photometry_decoder_on_a_valid_header_and_random_body(body: bytes) -> None:
    assert_decodes_or_refuses_photometry(frame(PHOTOMETRY, body))


@settings(FUZZ, max_examples=800)
@given(inconsistent_batches())
def test_photometry_decoder_on_inconsistent_well_formed_avro(message: bytes) -> None:
    assert_decodes_or_refuses_photometry(message)


@settings(FUZZ, max_examples=1200)
@given(mutated_bytes(VALID_BATCHES))
def test_photometry_decoder_on_mutated_batches(message: bytes) -> None:
    assert_decodes_or_refuses_photometry(message)


def special_float(dtype: np.dtype[Any], name: str) -> np.floating[Any]:
    """One of the float classes a column must carry unchanged, in ``dtype``."""
    info = np.finfo(dtype)
    values = {
        "nan": np.nan,
        "inf": np.inf,
        "-inf": -np.inf,
        "-0": -0.0,
        "subnormal": info.smallest_subnormal,
        "max": info.max,
        "-max": info.min,
    }
    return dtype.type(values[name])


@settings(FUZZ, max_examples=300)
@given(
    n=st.integers(0, 200),
    seed=st.integers(0, 2**64 - 1),
    specials=st.lists(
        st.tuples(
            st.integers(0, 199),
            st.sampled_from(("nan", "inf", "-inf", "-0", "subnormal", "max", "-max")),
        ),
        max_size=40,
    ),
    site=st.sampled_from(SITES),
    producer=st.text(max_size=20),
)
def test_photometry_round_trip_is_bit_exact(
    n: int, seed: int, specials: list[tuple[int, str]], site: str, producer: str
) -> None:
    # Random bit patterns (any value of the dtype, NaN payloads included) with NaN, ±inf, -0,
    # subnormals and the extremes put in at the drawn rows of every float column.
    rng = np.random.default_rng(seed)
    columns = {
        name: np.frombuffer(rng.bytes(n * dtype.itemsize), dtype=dtype).copy()
        for name, dtype in PHOTOMETRY_DTYPES.items()
    }
    for values in columns.values():
        for row, special in specials:
            if values.dtype.kind == "f" and row < n:
                values[row] = special_float(values.dtype, special)
    batch = PhotometryBatch(site, Observations.from_columns(**columns), producer)
    decoded = PHOTOMETRY_DECODER.decode(encode_batch(batch))
    assert (decoded.site, decoded.producer) == (site, producer)
    for name, dtype in PHOTOMETRY_DTYPES.items():
        column = getattr(decoded.observations, name)
        assert column.dtype == dtype, name
        np.testing.assert_array_equal(column, columns[name], err_msg=name)  # NaN == NaN
        assert column.tobytes() == columns[name].tobytes(), name  # and the same bits


# ----------------------------------------------------------------------------- alert decoder


def make_alert(n: int, seed: int) -> Alert:
    """An alert with an n-point light curve (as tests/consumer/edge/test_alert.py builds one)."""
    rng = np.random.default_rng(seed)
    hjd = np.sort(2_460_100 + rng.uniform(0, 30, n))
    trigger = float(hjd[-1]) if n else 2_460_130.0
    return Alert(
        alert_id=alert_id_for(123456789 + seed, trigger),
        star_id=123456789 + seed,
        field=2,
        chip=1,
        ra=268.5,
        dec=-29.9,
        trigger_hjd=trigger,
        published_at=datetime(2026, 5, 1, 3, 4, 5, 678000, tzinfo=UTC),
        alertfinder=AlertFinderSummary(
            ("CTIO", "SSO"), (2, 2), trigger - 3.0, 35.0, 812.5, 5, 5, 5
        ),
        lensnet=Classification(
            model_version="lensnet-1.0.0",
            p_event=0.93,
            p_no=0.07,
            p_maybe=0.11,
            p_yes=0.82,
            site_scores={"CTIO": 0.9, "SSO": 0.7} if n else {},
        ),
        light_curve=LightCurve(
            site=rng.integers(0, 3, n).astype(np.uint8),
            field=np.full(n, 2, np.int16),
            hjd=hjd,
            flux=rng.normal(0, 10, n),
            flux_err=rng.uniform(1, 3, n),
            sky=rng.uniform(100, 900, n).astype(np.float32),
            fwhm=rng.uniform(1, 3, n).astype(np.float32),
            airmass=rng.uniform(1, 2, n).astype(np.float32),
            psf_quality=rng.uniform(0, 100, n).astype(np.float32),
            fitted=rng.normal(0, 10, n),
        ),
    )


ALERT: Final = load_schema("alert")
ALERT_MESSAGES: Final = (
    *(encode_alert(make_alert(n, seed)) for n, seed in ((0, 0), (2, 1), (12, 2))),
    encode_alert(replace(make_alert(12, 3), event_model=make_model())),  # with 1.1's event model
)
VALID_ALERTS: Final = tuple(value for value, _ in ALERT_MESSAGES)
REAL_HEADERS: Final = ALERT_MESSAGES[0][1]
REAL_SCHEMA_TEXT: Final = dict(REAL_HEADERS)[SCHEMA_HEADER].decode()
ALERT_DECODER: Final = AlertDecoder()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
schema_like = st.fixed_dictionaries(
    {"type": st.sampled_from(("record", "enum", "array", "map", "fixed", "int", "nope"))},
    optional={
        "name": st.text(max_size=6),
        "fields": st.lists(
            st.fixed_dictionaries(
                {"name": st.text(max_size=4), "type": st.sampled_from(("int", "null", "bogus"))}
            ),
            max_size=3,
        ),
        "symbols": st.lists(st.text(max_size=4), max_size=3),
        "items": st.sampled_from(("int", "org.lensnet.Site", {"type": "array"})),
        "size": st.integers(-2, 4),
        "logicalType": st.sampled_from(("timestamp-millis", "decimal", "uuid")),
    },
)


@st.composite
def mutated_text(draw: st.DrawFn, text: str, changes: int = 3) -> str:
    """``text`` with 1-``changes`` characters replaced, inserted or deleted."""
    characters = list(text)
    for _ in range(draw(st.integers(1, changes))):
        position = draw(st.integers(0, len(characters)))
        replacement = draw(st.sampled_from('{}[]":,0aZ ') | st.characters(codec="utf-8"))
        operation = draw(st.sampled_from(("replace", "insert", "delete")))
        if operation == "insert" or position == len(characters):
            characters.insert(position, replacement)
        elif operation == "replace":
            characters[position] = replacement
        else:
            del characters[position]
    return "".join(characters)


@st.composite
def alert_headers(draw: st.DrawFn) -> Headers | None:
    """The real headers, none, or a schema header that is random or a corrupted real one."""
    kind = draw(
        st.sampled_from(("real", "none", "empty", "text", "bytes", "json", "schema", "mutated"))
    )
    if kind == "real":
        return list(REAL_HEADERS)
    if kind == "none":
        return None
    if kind == "empty":
        return []
    if kind == "text":
        value = draw(st.text(max_size=64)).encode()
    elif kind == "bytes":
        value = draw(st.binary(max_size=64))
    elif kind == "json":
        value = json.dumps(draw(json_values)).encode()
    elif kind == "schema":
        value = json.dumps(draw(schema_like)).encode()
    else:
        value = draw(mutated_text(REAL_SCHEMA_TEXT)).encode()
    return [(SCHEMA_HEADER, value), (CONTENT_TYPE_HEADER, b"avro/binary; schema=Alert")]


def assert_decodes_or_refuses_alert(
    value: bytes, headers: Headers | None, trust_header: bool
) -> None:
    # A reader without the shipped schemas must resolve every writer from the header.
    decoder = AlertDecoder(SchemaRegistry([])) if trust_header else ALERT_DECODER
    try:
        alert = decoder.decode(value, headers)
    except DecodeError:
        event("refused")
        return
    event("decoded")
    assert isinstance(alert, Alert)
    curve = alert.light_curve
    for column in fields(curve):
        assert getattr(curve, column.name).shape == (len(curve),), column.name
    assert np.all(curve.site < len(SITES))
    assert set(alert.alertfinder.sites) <= set(SITES)
    assert alert.lensnet.label in LABELS


@settings(FUZZ, max_examples=800)
@given(value=st.binary(max_size=512), headers=alert_headers(), trust_header=st.booleans())
def test_alert_decoder_on_arbitrary_bytes(
    value: bytes, headers: Headers | None, trust_header: bool
) -> None:
    assert_decodes_or_refuses_alert(value, headers, trust_header)


@settings(FUZZ, max_examples=800)
@given(body=st.binary(max_size=512), headers=alert_headers(), trust_header=st.booleans())
def test_alert_decoder_on_a_valid_header_and_random_body(
    body: bytes, headers: Headers | None, trust_header: bool
) -> None:
    assert_decodes_or_refuses_alert(frame(ALERT, body), headers, trust_header)


@settings(FUZZ, max_examples=1400)
@given(value=mutated_bytes(VALID_ALERTS), headers=alert_headers(), trust_header=st.booleans())
def test_alert_decoder_on_mutated_alerts(
    value: bytes, headers: Headers | None, trust_header: bool
) -> None:
    assert_decodes_or_refuses_alert(value, headers, trust_header)


# ----------------------------------------------------------------------- event update decoder

EVENT: Final = load_schema("event")
EVENT_MESSAGES: Final = tuple(
    encode_update(replace(make_update(sequence), event_model=make_model(anomaly)))
    for sequence, anomaly in ((0, False), (7, True))
)
VALID_UPDATES: Final = tuple(value for value, _ in EVENT_MESSAGES)
EVENT_HEADERS: Final = EVENT_MESSAGES[1][1]


def assert_decodes_or_refuses_update(value: bytes, headers: Headers | None) -> None:
    try:
        update = EVENT_DECODER.decode(value, headers)
    except DecodeError:
        event("refused")
        return
    event("decoded")
    assert isinstance(update, EventUpdate)
    assert update.kind in UPDATE_KINDS
    assert isinstance(update.event_model.datasets, tuple)


EVENT_DECODER: Final = EventDecoder()


@settings(FUZZ, max_examples=400)
@given(value=st.binary(max_size=512), real_headers=st.booleans())
def test_event_decoder_on_arbitrary_bytes(value: bytes, real_headers: bool) -> None:
    assert_decodes_or_refuses_update(value, list(EVENT_HEADERS) if real_headers else None)


@settings(FUZZ, max_examples=400)
@given(body=st.binary(max_size=512))
def test_event_decoder_on_a_valid_header_and_random_body(body: bytes) -> None:
    assert_decodes_or_refuses_update(frame(EVENT, body), list(EVENT_HEADERS))


@settings(FUZZ, max_examples=800)
@given(value=mutated_bytes(VALID_UPDATES), real_headers=st.booleans())
def test_event_decoder_on_mutated_updates(value: bytes, real_headers: bool) -> None:
    assert_decodes_or_refuses_update(value, list(EVENT_HEADERS) if real_headers else None)


# ---------------------------------------------------------------------------- archive reader

ARCHIVE_DTYPES: Final = {
    "hjd": np.float64,
    "flux": np.float64,
    "flux_err": np.float64,
    "sky": np.float32,
    "fwhm": np.float32,
    "airmass": np.float32,
    "psf_quality": np.float32,
    "band": np.uint8,
}
COLUMN_FILE_NAMES: Final = (
    "KMTC02_I.pysis",
    "KMTA41_V.pysis",
    "KCT01I.dat",
    "kmts42_i.pysis",
    "KSA.dat",
    "KMTS_BLG18.txt",
    "OGLE02_I.pysis",
    "lc.dat",
)
NATIVE_FILE_NAMES: Final = ("CTIO_BLG02.csv", "SSO.csv", "x.csv")
#: Reasons iter_season gives for entries that are not data files (anything else is a bad file).
STRUCTURAL_SKIPS: Final = frozenset(
    {
        "hidden file",
        "not a regular file",
        "hidden entry",
        "not a star directory",
        "no light-curve files",
    }
)
#: Known bugs: RuntimeWarnings (errors under pytest) by the archive function they come from.
#: Rows kept of each simulated file, so a mutation often hits the header or metadata.
BASE_ROWS: Final = 25

offset_hjd = st.floats(8000, 12000).map(lambda t: f"{t:.5f}")
full_hjd = st.floats(2_458_000, 2_462_000).map(lambda t: f"{t:.5f}")
garbage_tokens = st.sampled_from(
    (
        "nan",
        "NaN",
        "-nan",
        "inf",
        "-inf",
        "Infinity",
        "1e999",
        "-1e999",
        "-",
        "+",
        ".",
        "e5",
        "1e",
        "0x1A",
        "1_000",
        "1,5",
        "abc",
        "١٢",
        "\u00a0",
        "#",
        "#1",
        "",
    )
)
plain_values = st.integers(-(10**6), 10**6).map(str) | st.floats(-1e6, 1e6).map(repr)
value_tokens = st.one_of(
    plain_values, plain_values, plain_values, garbage_tokens, st.floats().map(repr)
)
hjd_tokens = st.one_of(offset_hjd, full_hjd, offset_hjd, full_hjd, value_tokens)
#: Tokens that always parse; magnitudes above -742 keep 10**(0.4 * (28 - mag)) finite.
clean_values = st.floats(-500, 1e5).map(repr) | st.sampled_from(("0", "nan", "inf", "1e999"))


@dataclass(frozen=True)
class ArchiveBase:
    """A valid file to mutate: the star folder it came from, its name and its text."""

    star: str
    name: str
    text: str


def pysis_texts(dataset: Dataset) -> dict[str, str]:
    """8- and 5-column pysis and 3-column magnitude versions of ``dataset`` (HJD - 2450000)."""
    rows8, rows5, rows3 = [], [], []
    for hjd, flux, flux_err, fwhm, sky, airmass in zip(
        dataset.hjd - HJD_OFFSET,
        dataset.flux,
        dataset.flux_err,
        dataset.fwhm,
        dataset.sky,
        dataset.airmass,
        strict=True,
    ):
        mag = 28.0 - 2.5 * np.log10(abs(flux) + 100.0)
        common = f"{hjd:.5f} {flux:.3f} {flux_err:.3f} {mag:.4f} 0.0100"
        rows5.append(common)
        rows8.append(f"{common} {fwhm:.3f} {sky:.2f} {airmass:.4f}")
        rows3.append(f"{hjd:.5f} {mag:.4f} {abs(flux_err) / 1e4:.4f}")
    site = {"CTIO": "KMTC", "SAAO": "KMTS", "SSO": "KMTA"}[dataset.site]
    return {
        f"{site}{dataset.field:02d}_I.pysis": "# HJD dflux err mag merr fwhm sky secz\n"
        + "\n".join(rows8)
        + "\n",
        f"{site}{dataset.field:02d}_V.pysis": "\n".join(rows5) + "\n",
        f"{site}{dataset.field:02d}I.dat": "# HJD mag mag_err\n" + "\n".join(rows3) + "\n",
    }


@pytest.fixture(scope="module")
def archive_bases(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArchiveBase, ...]:
    """Native files of a simulated 2-star season (first rows) and pysis versions of one."""
    season = tmp_path_factory.mktemp("fuzz") / "season"
    write_season(SimulationConfig(n_stars=2, seed=7), season, progress=False)
    bases: list[ArchiveBase] = []
    for path in sorted(season.glob("*/*.csv")):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        head = next(i for i, line in enumerate(lines) if line.startswith("hjd"))
        text = "".join(lines[: head + 1 + BASE_ROWS])
        bases.append(ArchiveBase(path.parent.name, path.name, text))
    dataset, _ = read_dataset(season / bases[0].star / bases[0].name)
    short = Dataset(
        **{
            **{name: getattr(dataset, name)[:BASE_ROWS] for name in ARCHIVE_DTYPES},
            "site": dataset.site,
            "field": dataset.field,
        }
    )
    bases += [ArchiveBase("pysis", name, text) for name, text in pysis_texts(short).items()]
    return tuple(bases)


def check_dataset(dataset: Dataset, path: Path, native: bool) -> None:
    n = len(dataset)
    assert dataset.site in SITES
    assert dataset.source == str(path)
    for name, dtype in ARCHIVE_DTYPES.items():
        column = getattr(dataset, name)
        assert column.dtype == dtype, name
        assert column.shape == (n,), name
    assert np.all((dataset.band == 0) | (dataset.band == 1))
    assert np.all(np.isfinite(dataset.hjd)), "a NaN or infinite time was accepted"
    assert np.all(dataset.hjd[1:] >= dataset.hjd[:-1]), "not time-sorted"
    if native:
        assert np.all(dataset.hjd >= FULL_HJD_MIN)
    else:
        assert np.all(np.isnan(dataset.psf_quality))
        assert len(set(dataset.band.tolist())) <= 1


def read_file(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path``; reading it returns a consistent dataset or ArchiveError."""
    path.write_bytes(content)
    try:
        dataset, metadata = read_dataset(path)
    except ArchiveError as error:
        event("refused")
        message = str(error)
    else:
        event("read")
        native = content.startswith(NATIVE_MAGIC.encode())
        assert bool(metadata) == native  # a native file always names its site
        check_dataset(dataset, path, native)
        return
    assert message.startswith(str(path)), message  # errors name the file


def fits_observations(star: Star) -> bool:
    """Star metadata within the dtypes of Observations (star_id i8, chip u1, field i2, x/y f4)."""
    f4 = float(np.finfo(np.float32).max)
    return (
        -(2**63) <= star.star_id < 2**63
        and star.chip <= 255
        and all(-(2**15) <= d.field < 2**15 for d in star.datasets)
        and not any(np.isfinite(v) and abs(v) > f4 for v in (star.x, star.y))
    )


def check_star(star: Star) -> None:
    """A star read from a season streams as Observations without losing its metadata."""
    assert fits_observations(star)  # the reader refuses metadata the Observations can't hold
    batches = to_observations(star)
    assert set(batches) == {d.site for d in star.datasets}
    for site, observations in batches.items():
        assert len(observations) == sum(len(d) for d in star.datasets if d.site == site)
        assert np.all(observations.star_id == star.star_id)
        assert set(observations.field.tolist()) <= {d.field for d in star.datasets}
        assert np.all(np.diff(observations.hjd) >= 0)


#: A line to insert: any text, or a row of tokens.
random_lines = st.text(max_size=24) | st.lists(value_tokens, max_size=9).map(" ".join)


@st.composite
def mutated_lines(draw: st.DrawFn, text: str) -> str:
    """``text`` after 1-3 line edits: delete, duplicate, swap, a token or character replaced,
    a random line inserted, or the whole text truncated."""
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        operation = draw(
            st.sampled_from(
                ("delete", "duplicate", "swap", "token", "insert", "truncate", "character")
            )
        )
        if operation == "truncate":
            joined = "".join(lines)
            lines = joined[: draw(st.integers(0, len(joined)))].splitlines(keepends=True)
            continue
        # Half the edits hit the first 12 lines: magic, metadata, header, first rows.
        index = draw(st.integers(0, min(len(lines), 12)) | st.integers(0, len(lines)))
        if operation == "insert" or index >= len(lines):
            lines.insert(index, draw(random_lines) + "\n")
        elif operation == "delete":
            del lines[index]
        elif operation == "duplicate":
            lines.insert(index, lines[index])
        elif operation == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        elif operation == "token":
            row = lines[index].rstrip("\n")
            parts = row.replace(",", " , ").split(" ")
            parts[draw(st.integers(0, len(parts) - 1))] = draw(value_tokens | hjd_tokens)
            lines[index] = " ".join(parts).replace(" , ", ",") + lines[index][len(row) :]
        else:
            lines[index] = draw(mutated_text(lines[index], changes=2))
    return "".join(lines)


@st.composite
def column_files(draw: st.DrawFn) -> str:
    """Whitespace tables as in pysis / magnitude files, with blanks, comments and junk rows.

    Half the files are clean (every token parses, one time convention) so that reading gets
    past the parser to the time, sorting and flux conversions.
    """
    clean = draw(st.booleans())
    times = draw(st.sampled_from((offset_hjd, full_hjd))) if clean else hjd_tokens
    values = clean_values if clean else value_tokens
    n_columns = draw(st.sampled_from((3, 5, 8)) | st.integers(0, 10))
    separator = draw(st.sampled_from((" ", "  ", "\t", " \t ")))
    newline = draw(st.sampled_from(("\n", "\r\n", "\r")))
    kinds = ("row",) * 5 + ("blank", "comment", "trailing") + (() if clean else ("ragged",))
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(kinds))
        if kind == "blank":
            lines.append(draw(st.sampled_from(("", " ", "\t"))))
            continue
        if kind == "comment":
            lines.append("#" + draw(st.text(max_size=16)))
            continue
        count = draw(st.integers(0, 10)) if kind == "ragged" else n_columns
        tokens = [draw(times)] + [draw(values) for _ in range(count - 1)]
        line = separator.join(tokens[:count])
        lines.append(line + (" # " + draw(st.text(max_size=8)) if kind == "trailing" else ""))
    return newline.join(lines) + draw(st.sampled_from(("", newline)))


@st.composite
def native_files(draw: st.DrawFn) -> str:
    """Native files with random metadata, a shuffled or broken header and junk-laced rows.

    Half the files are clean (right magic, a site, sound metadata, every row complete and
    parsing), so that reading gets past the parser to the band, time and sorting checks.
    """
    clean = draw(st.booleans())
    magic = (NATIVE_MAGIC,) if clean else (NATIVE_MAGIC,) * 4 + (NATIVE_MAGIC + " x", "# v2")
    lines = [draw(st.sampled_from(magic))]
    metadata_values = {
        "star_id": st.integers(0, 10**12).map(str),
        "site": st.sampled_from(SITES),
        "field": st.integers(-1, 99).map(str),
        "chip": st.integers(-1, 3).map(str),
    }
    if not clean:
        metadata_values["star_id"] |= st.sampled_from(("-5", str(2**64)))
        metadata_values["site"] |= st.sampled_from(("KMT", "", "ctio"))
    keys = draw(
        st.lists(
            st.sampled_from(("star_id", "ra", "dec", "chip", "x", "y", "site", "field", "note")),
            max_size=10,
        )
    )
    if clean or draw(st.integers(0, 9)):  # a site, nearly always: without one nothing is read
        keys.append("site")
    for key in keys:
        value = draw(metadata_values.get(key, clean_values))
        if clean:
            lines.append(f"# {key}: {value}")
        else:
            value = draw(st.just(value) | garbage_tokens)
            lines.append(
                draw(st.sampled_from((f"# {key}: {value}", f"#{key}:{value}", f"# {key}")))
            )
    columns = list(draw(st.permutations(NATIVE_COLUMNS)))
    if not clean and not draw(st.integers(0, 7)):
        columns[draw(st.integers(0, 7))] = draw(st.sampled_from(("", "hjd", "mag", "HJD")))
    lines.append(draw(st.sampled_from((",", ", "))).join(columns))
    pools = {
        "hjd": full_hjd if clean else full_hjd | hjd_tokens,
        "band": st.sampled_from(("0", "1", "1.0") if clean else ("0", "1", "1.0", "2", "")),
    }
    kinds = ("row",) * 6 + ("blank", "comment") + (() if clean else ("ragged",))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(kinds))
        if kind == "blank":
            lines.append("")
        elif kind == "comment":
            lines.append("# " + draw(st.text(max_size=8)))
        else:
            count = draw(st.integers(0, 10)) if kind == "ragged" else len(NATIVE_COLUMNS)
            # An empty field reads as NaN, which every column but hjd and band allows.
            tokens = [
                draw(pools.get(name, (clean_values if clean else value_tokens) | st.just("")))
                for name in (columns + columns)[:count]
            ]
            lines.append(",".join(tokens))
    return "\n".join(lines) + draw(st.sampled_from(("", "\n")))


@settings(FUZZ, max_examples=600)
@given(
    name=st.sampled_from(COLUMN_FILE_NAMES + NATIVE_FILE_NAMES),
    content=st.binary(max_size=256) | st.text(max_size=256).map(str.encode),
)
def test_read_dataset_on_arbitrary_content(name: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        read_file(Path(tmp) / name, content)


@settings(FUZZ, max_examples=1000)
@given(name=st.sampled_from(COLUMN_FILE_NAMES), text=column_files())
def test_read_dataset_on_random_tables(name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        read_file(Path(tmp) / name, text.encode())


@settings(FUZZ, max_examples=800)
@given(name=st.sampled_from(NATIVE_FILE_NAMES), text=native_files())
def test_read_dataset_on_random_native_files(name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        read_file(Path(tmp) / name, text.encode())


@settings(FUZZ, max_examples=800)
@given(data=st.data())
def test_read_dataset_on_mutated_files(
    archive_bases: tuple[ArchiveBase, ...], data: st.DataObject
) -> None:
    base = data.draw(st.sampled_from(archive_bases), label="base")
    text = data.draw(mutated_lines(base.text), label="text")
    with tempfile.TemporaryDirectory() as tmp:
        read_file(Path(tmp) / base.name, text.encode())


@st.composite
def season_layouts(draw: st.DrawFn, bases: tuple[ArchiveBase, ...]) -> dict[str, bytes | None]:
    """Relative path -> content (None for a folder) of a season of 1-3 small stars."""
    layout: dict[str, bytes | None] = {}
    if draw(st.booleans()):
        layout["labels.csv"] = b"star_id\n"
    if draw(st.booleans()):
        layout[".cache"] = None
    groups = sorted({base.star for base in bases})
    names = draw(
        st.lists(
            st.sampled_from(("830000000", "BLG02M.1", "x y", "-5", str(2**64), "7")),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    for star in names:
        layout[star] = None
        # Files of one simulated star, so valid files agree on the star's metadata.
        group = draw(st.sampled_from(groups))
        candidates = [base for base in bases if base.star == group]
        for _ in range(draw(st.integers(0, 3))):
            base = draw(st.sampled_from(candidates))
            kind = draw(st.sampled_from(("valid", "mutated", "mutated", "garbage", "other")))
            if kind == "valid":
                layout[f"{star}/{base.name}"] = base.text.encode()
            elif kind == "mutated":
                layout[f"{star}/{base.name}"] = draw(mutated_lines(base.text)).encode()
            elif kind == "garbage":
                name = draw(st.sampled_from(COLUMN_FILE_NAMES + NATIVE_FILE_NAMES))
                layout[f"{star}/{name}"] = draw(column_files() | native_files()).encode()
            else:
                other = draw(st.sampled_from((".DS_Store", "sub", "OGLE.dat")))
                layout[f"{star}/{other}"] = None if other == "sub" else b"junk\n"
    return layout


def write_layout(root: Path, layout: dict[str, bytes | None]) -> None:
    root.mkdir()
    for relative, content in sorted(layout.items()):
        path = root / relative
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_iter_season_skips_and_reports_every_bad_file(
    archive_bases: tuple[ArchiveBase, ...], data: st.DataObject
) -> None:
    layout = data.draw(season_layouts(archive_bases), label="layout")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "season"
        write_layout(root, layout)
        report = ReadReport()
        stars = list(iter_season(root, report, skip_bad_files=True))
        assert report.n_stars == len(stars)
        assert report.n_files == sum(len(star.datasets) for star in stars)
        assert report.n_observations == sum(len(d) for star in stars for d in star.datasets)
        read = [d.source for star in stars for d in star.datasets]
        skipped = [path for path, _ in report.skipped]
        assert len(set(read)) == len(read)
        assert len(set(skipped)) == len(skipped)
        assert not set(read) & set(skipped)
        # Every entry of the season and of each star folder is read or skipped, none forgotten;
        # a folder that became a star is accounted for by its files.
        star_dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        expected = {str(p) for p in root.iterdir()} | {
            str(p) for folder in star_dirs for p in folder.iterdir()
        }
        yielded = {str(root / star.name) for star in stars}
        assert set(read) | set(skipped) == expected - yielded
        for star in stars:
            assert star.datasets
            for dataset in star.datasets:
                path = Path(dataset.source)
                check_dataset(dataset, path, path.read_bytes().startswith(NATIVE_MAGIC.encode()))
            check_star(star)

        # Without skipping, the same season reads identically, or fails on a bad file.
        bad = [path for path, reason in report.skipped if reason not in STRUCTURAL_SKIPS]
        try:
            strict, _ = read_season(root)
        except ArchiveError:
            assert bad
        else:
            assert not bad
            assert [d.source for star in strict for d in star.datasets] == read


# ------------------------------------ bugs the fuzz tests found, fixed: regression tests


def test_alert_field_beyond_int16_is_a_decode_error() -> None:
    """Found by fuzzing: a light-curve 'field' beyond int16 raised OverflowError."""
    record = alert_to_record(make_alert(2, 0))
    record["light_curve"][0]["field"] = 40_000  # a valid Avro int
    value, headers = encode_record(ALERT, record)
    with pytest.raises(DecodeError):
        AlertDecoder().decode(value, headers)


def test_deeply_nested_schema_header_is_a_decode_error() -> None:
    """Found by fuzzing: json.loads' RecursionError escaped AvroSchema.from_json."""
    unknown = MAGIC + b"\x00" * 8  # a fingerprint no reader knows: the header is used
    with pytest.raises(DecodeError):
        AlertDecoder().decode(unknown, [(SCHEMA_HEADER, b"[" * 100_000)])


def test_unnamed_schema_header_is_a_decode_error() -> None:
    """Found by fuzzing: a schema header without a name raised KeyError."""
    unknown = MAGIC + b"\x00" * 8
    with pytest.raises(DecodeError):
        AlertDecoder().decode(unknown, [(SCHEMA_HEADER, b'{"type": "int"}')])


def write_text(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


NATIVE_HEAD: Final = f"{NATIVE_MAGIC}\n# star_id: 7\n# site: CTIO\n{','.join(NATIVE_COLUMNS)}\n"


def test_all_nan_times_are_an_archive_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError):
        read_dataset(write_text(tmp_path, "KMTC01.dat", "nan 19.0 0.01\n"))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("KMTC01.dat", "-inf 19.0 0.01\n8000 19.0 0.01\n", id="magnitude-minus-inf"),
        pytest.param("x.csv", NATIVE_HEAD + "inf,0,1,1,1,1,1,1\n", id="native-plus-inf"),
    ],
)
def test_infinite_times_are_an_archive_error(tmp_path: Path, name: str, text: str) -> None:
    with pytest.raises(ArchiveError):
        read_dataset(write_text(tmp_path, name, text))


def test_values_beyond_float32_are_an_archive_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError):
        read_dataset(write_text(tmp_path, "x.csv", NATIVE_HEAD + "2461000,0,1,1,1e300,1,1,1\n"))


@pytest.mark.parametrize("row", ["8000 -1000 0.01", "8000 -inf 0"])
def test_extreme_magnitudes_are_an_archive_error(tmp_path: Path, row: str) -> None:
    with pytest.raises(ArchiveError):
        read_dataset(write_text(tmp_path, "KMTC01.dat", row + "\n"))


def test_trailing_comment_on_the_first_row_is_ignored(tmp_path: Path) -> None:
    dataset, _ = read_dataset(write_text(tmp_path, "KMTC01.dat", "8000 19.0 0.01 # note\n"))
    assert dataset.hjd.tolist() == [HJD_OFFSET + 8000]


ROW: Final = "2461000,0,1,1,1,1,1,1\n"


@pytest.mark.parametrize(
    "files",
    [
        # A good pysis file, and a native file whose star_id is not a number.
        pytest.param(
            {
                "KMTC01.dat": "8000 19.0 0.01\n",
                "CTIO_BLG02.csv": NATIVE_HEAD.replace("7", "x") + ROW,
            },
            id="unreadable-star-id",
        ),
        # Two native files, the second disagreeing with the first (arguably a bad file too).
        pytest.param(
            {
                "CTIO_BLG01.csv": NATIVE_HEAD + ROW,
                "CTIO_BLG02.csv": NATIVE_HEAD.replace("7", "8") + ROW,
            },
            id="disagreeing-star-id",
        ),
    ],
)
def test_skip_bad_files_skips_bad_star_metadata(tmp_path: Path, files: dict[str, str]) -> None:
    star = tmp_path / "season" / "7"
    star.mkdir(parents=True)
    for name, text in files.items():
        write_text(star, name, text)
    stars, report = read_season(tmp_path / "season", skip_bad_files=True)
    assert [s.name for s in stars] == ["7"]
    assert [Path(path).name for path, _ in report.skipped] == ["CTIO_BLG02.csv"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("star_id", str(2**64)), ("chip", "300"), ("field", "40000"), ("x", "1e39"), ("y", "-4e38")],
)
def test_out_of_range_metadata_is_an_archive_error(tmp_path: Path, key: str, value: str) -> None:
    head = NATIVE_HEAD.replace("# site", f"# {key}: {value}\n# site")
    if key == "star_id":
        head = head.replace("# star_id: 7\n", "")
    write_text(tmp_path, "CTIO_BLG01.csv", head + "2461000,0,1,1,1,1,1,1\n")
    # Found by fuzzing: read_star accepted it; to_observations then raised OverflowError
    # (star_id) or silently wrapped the value (chip 300 -> 44, field 40000 -> -25536).
    with pytest.raises(ArchiveError):
        read_star(tmp_path)
