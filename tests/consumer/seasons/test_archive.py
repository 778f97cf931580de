"""Archived seasons: native round trips, KMTNet downloads, file-name rules and error messages."""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.constants import HJD_OFFSET
from consumer.seasons.archive import (
    MAG_ZERO_POINT,
    NATIVE_COLUMNS,
    NATIVE_DECIMALS,
    NATIVE_MAGIC,
    UNKNOWN_CHIP_U8,
    ArchiveError,
    Dataset,
    Star,
    format_native,
    quantize,
    read_dataset,
    read_season,
    read_star,
    site_field_band,
    star_id_from_name,
    to_observations,
    write_star,
)


def make_dataset(
    n: int, *, site: str = "CTIO", field: int = 2, seed: int = 0, missing: bool = False
) -> Dataset:
    rng = np.random.default_rng(seed)
    nan32 = np.full(n, np.nan, dtype=np.float32)
    dataset = Dataset(
        site=site,
        field=field,
        hjd=np.sort(2_461_072.5 + rng.uniform(0, 240, n)),
        flux=rng.normal(0, 1000, n),
        flux_err=rng.uniform(10, 300, n),
        sky=nan32 if missing else rng.uniform(300, 9000, n).astype(np.float32),
        fwhm=nan32 if missing else rng.uniform(0.8, 4, n).astype(np.float32),
        airmass=nan32 if missing else rng.uniform(1, 2, n).astype(np.float32),
        psf_quality=nan32 if missing else rng.uniform(0, 100, n).astype(np.float32),
        band=(rng.uniform(size=n) < 0.1).astype(np.uint8),
    )
    return quantize(dataset)


def make_star(datasets: tuple[Dataset, ...], name: str = "201234567") -> Star:
    return Star(
        star_id=star_id_from_name(name),
        name=name,
        ra=269.123456789,
        dec=-29.5,
        chip=1,
        x=1234.5,
        y=math.nan,
        datasets=datasets,
    )


def assert_same_dataset(read: Dataset, written: Dataset) -> None:
    assert (read.site, read.field) == (written.site, written.field)
    for name in NATIVE_COLUMNS:
        expected = getattr(written, name)
        actual = getattr(read, name)
        assert actual.dtype == expected.dtype, name
        np.testing.assert_array_equal(actual, expected, err_msg=name)


def assert_same_star(read: Star, written: Star) -> None:
    assert (read.star_id, read.name, read.chip) == (written.star_id, written.name, written.chip)
    for name in ("ra", "dec", "x", "y"):
        np.testing.assert_equal(getattr(read, name), getattr(written, name))
    assert len(read.datasets) == len(written.datasets)
    for read_dataset_, written_dataset in zip(read.datasets, written.datasets, strict=True):
        assert_same_dataset(read_dataset_, written_dataset)


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- native format


def test_native_round_trip_keeps_every_column_and_nan(tmp_path: Path) -> None:
    star = make_star(
        (
            make_dataset(500, site="CTIO", field=2, seed=1),
            make_dataset(40, site="SAAO", field=2, seed=2, missing=True),
            make_dataset(0, site="SSO", field=-1, seed=3),
        )
    )
    directory = write_star(star, tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == [
        "CTIO_BLG02.csv",
        "SAAO_BLG02.csv",
        "SSO.csv",
    ]
    assert_same_star(read_star(directory), star)


def test_native_file_layout(tmp_path: Path) -> None:
    dataset = make_dataset(2, seed=4)
    text = format_native(make_star((dataset,)), dataset)
    lines = text.splitlines()
    assert lines[0] == NATIVE_MAGIC
    assert "# star_id: 201234567" in lines
    assert "# site: CTIO" in lines
    assert "# field: 2" in lines
    assert "# y: nan" in lines
    assert lines[9] == "hjd,band,flux,flux_err,sky,fwhm,airmass,psf_quality"
    assert len(lines) == 12
    assert text.endswith("\n")
    first = lines[10].split(",")
    assert first[0] == f"{dataset.hjd[0]:.6f}"
    assert first[1] == str(dataset.band[0])


def test_several_datasets_of_one_site_field_get_distinct_files(tmp_path: Path) -> None:
    star = make_star((make_dataset(5, seed=1), make_dataset(6, seed=2)))
    directory = write_star(star, tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == ["CTIO_BLG02.csv", "CTIO_BLG02_2.csv"]
    assert_same_star(read_star(directory), star)


def test_write_star_refuses_a_star_without_datasets(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="no datasets to write"):
        write_star(make_star(()), tmp_path)
    assert not any(tmp_path.iterdir())


def test_write_star_refuses_to_mix_with_existing_files(tmp_path: Path) -> None:
    star = make_star((make_dataset(5),))
    write_star(star, tmp_path)
    with pytest.raises(ArchiveError, match="already holds files"):
        write_star(star, tmp_path)
    write_star(star, tmp_path, overwrite=True)


def test_values_too_large_for_the_fast_formatter_still_round_trip(tmp_path: Path) -> None:
    dataset = make_dataset(3)
    flux = np.array([1e13, -2.5e14, 1234.5678])
    big = quantize(replace(dataset, flux=flux))
    star = make_star((big,))
    assert_same_star(read_star(write_star(star, tmp_path)), star)


def test_nan_and_infinities_are_written_as_python_would(tmp_path: Path) -> None:
    dataset = make_dataset(3)
    flux = np.array([np.nan, np.inf, -np.inf])
    odd = replace(dataset, flux=flux)
    rows = format_native(make_star((odd,)), odd).splitlines()[10:]
    assert [row.split(",")[2] for row in rows] == ["nan", "inf", "-inf"]
    assert_same_star(read_star(write_star(make_star((odd,)), tmp_path)), make_star((odd,)))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 30),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 1.0, 1e4, 1e9]),
    nan_fraction=st.sampled_from([0.0, 0.3]),
)
def test_native_round_trip_property(n: int, seed: int, scale: float, nan_fraction: float) -> None:
    rng = np.random.default_rng(seed)

    def column(dtype: type[np.floating[Any]]) -> npt.NDArray[Any]:
        values = rng.normal(0, scale, n)
        values[rng.uniform(size=n) < nan_fraction] = np.nan
        return values.astype(dtype)

    dataset = quantize(
        Dataset(
            site="SSO",
            field=41,
            hjd=np.sort(2_450_000 + rng.uniform(0, 1e4, n)),
            flux=column(np.float64),
            flux_err=column(np.float64),
            sky=column(np.float32),
            fwhm=column(np.float32),
            airmass=column(np.float32),
            psf_quality=column(np.float32),
            band=rng.integers(0, 2, n).astype(np.uint8),
        )
    )
    star = make_star((dataset,), name="BLG41M.1234")
    with tempfile.TemporaryDirectory() as tmp:
        assert_same_star(read_star(write_star(star, Path(tmp))), star)


def test_quantize_rounds_to_the_native_decimals() -> None:
    dataset = quantize(make_dataset(50, seed=9))
    for name, decimals in NATIVE_DECIMALS.items():
        values = getattr(dataset, name).astype(np.float64)
        np.testing.assert_allclose(values * 10.0**decimals, np.rint(values * 10.0**decimals))


def test_native_reader_accepts_empty_fields_and_any_column_order(tmp_path: Path) -> None:
    text = (
        f"{NATIVE_MAGIC}\n# star_id: 7\n# site: SAAO\n# field: 18\n"
        "band,hjd,flux,flux_err,psf_quality,sky,fwhm,airmass\n"
        "0,2461100.5,10.5,2.0,,1000,1.5,\n"
        "1,2461100.6,11.5,2.0,90,,1.6,1.2\n"
    )
    dataset, metadata = read_dataset(write_text(tmp_path / "x.csv", text))
    assert metadata["star_id"] == "7"
    assert (dataset.site, dataset.field) == ("SAAO", 18)
    np.testing.assert_array_equal(dataset.flux, [10.5, 11.5])
    assert np.isnan(dataset.psf_quality[0])
    assert np.isnan(dataset.airmass[0])
    assert np.isnan(dataset.sky[1])
    assert dataset.psf_quality[1] == np.float32(90)


def test_native_empty_band_is_an_error(tmp_path: Path) -> None:
    text = f"{NATIVE_MAGIC}\n# site: SAAO\n{','.join(NATIVE_COLUMNS)}\n2461100.5,,1,1,1,1,1,1\n"
    with pytest.raises(ArchiveError, match=r"x\.csv:4: band must be 0"):
        read_dataset(write_text(tmp_path / "x.csv", text))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("2461100.5,0,1,1,1,1,1\n", r":4: expected 8 columns, got 7"),
        ("2461100.5,0,1,1,1,1,1,1\n2461100.6,0,1,x,1,1,1,1\n", r":5: not a number: 'x'"),
        ("2461100.5,2,1,1,1,1,1,1\n", r":4: band must be 0 \(I\) or 1 \(V\)"),
        ("8100.5,0,1,1,1,1,1,1\n", r":4: native files hold full HJD"),
    ],
)
def test_native_bad_rows_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    header = f"{NATIVE_MAGIC}\n# site: CTIO\n{','.join(NATIVE_COLUMNS)}\n"
    path = write_text(tmp_path / "CTIO_BLG02.csv", header + body)
    with pytest.raises(ArchiveError, match=str(path).replace(".", r"\.") + message):
        read_dataset(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{NATIVE_MAGIC}\n# site: CTIO\n", "no header row"),
        (f"{NATIVE_MAGIC}\n# site: CTIO\nhjd,flux\n", ":3: header 'hjd,flux'"),
        (f"{NATIVE_MAGIC}\n# site: KMT\n{','.join(NATIVE_COLUMNS)}\n", "'site: KMT'"),
        (f"{NATIVE_MAGIC}\n# site: SSO\n# field: two\n{','.join(NATIVE_COLUMNS)}\n", "field"),
        (f"{NATIVE_MAGIC}\n# site CTIO\n", ":2: expected '# key: value'"),
    ],
)
def test_native_bad_headers(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        read_dataset(write_text(tmp_path / "a.csv", text))


# ------------------------------------------------------------------------- KMTNet downloads

PYSIS_8 = """# HJD Delta_flux flux_err mag mag_err fwhm sky secz
 8123.51234   120.5   15.2  19.012  0.021  4.51  1234.5  1.234
 8123.50000  -10.0    14.0  -       -      4.40  1200.0  1.250
 8124.60000   99.9     9.9  19.100  0.030  3.90  1100.0  1.100
"""
PYSIS_5 = """2461123.51234  120.5  15.2  19.012  0.021
2461124.51234  130.5  16.2  19.002  0.022
"""


def test_pysis_with_8_columns_and_offset_hjd(tmp_path: Path) -> None:
    dataset, metadata = read_dataset(write_text(tmp_path / "KMTC02_I.pysis", PYSIS_8))
    assert metadata == {}
    assert (dataset.site, dataset.field) == ("CTIO", 2)
    np.testing.assert_allclose(dataset.hjd, HJD_OFFSET + np.array([8123.5, 8123.51234, 8124.6]))
    np.testing.assert_array_equal(dataset.flux, [-10.0, 120.5, 99.9])  # sorted by time
    np.testing.assert_array_equal(dataset.flux_err, [14.0, 15.2, 9.9])
    np.testing.assert_array_equal(dataset.fwhm, np.array([4.40, 4.51, 3.90], dtype=np.float32))
    np.testing.assert_array_equal(dataset.sky, np.array([1200.0, 1234.5, 1100.0], dtype=np.float32))
    np.testing.assert_array_equal(dataset.airmass, np.array([1.25, 1.234, 1.1], dtype=np.float32))
    assert np.all(np.isnan(dataset.psf_quality))
    assert np.all(dataset.band == 0)


def test_pysis_with_5_columns_and_full_hjd(tmp_path: Path) -> None:
    dataset, _ = read_dataset(write_text(tmp_path / "KMTA41_V.pysis", PYSIS_5))
    assert (dataset.site, dataset.field) == ("SSO", 41)
    np.testing.assert_array_equal(dataset.hjd, [2461123.51234, 2461124.51234])
    np.testing.assert_array_equal(dataset.band, [1, 1])
    for name in ("sky", "fwhm", "airmass", "psf_quality"):
        assert np.all(np.isnan(getattr(dataset, name))), name


def test_magnitude_file_uses_the_documented_zero_point(tmp_path: Path) -> None:
    text = "# HJD mag mag_err\n9001.25 19.0 0.02\n9002.25 18.0 0.01\n"
    dataset, _ = read_dataset(write_text(tmp_path / "KCT01I.dat", text))
    assert MAG_ZERO_POINT == 28.0
    np.testing.assert_allclose(dataset.flux, [10 ** (0.4 * 9.0), 10**4.0])
    np.testing.assert_allclose(
        dataset.flux_err,
        [10 ** (0.4 * 9.0) * 0.4 * math.log(10) * 0.02, 1e4 * 0.921034 * 0.01],
        rtol=1e-6,
    )
    np.testing.assert_allclose(dataset.hjd, [2459001.25, 2459002.25])
    assert (dataset.site, dataset.field, int(dataset.band[0])) == ("CTIO", 1, 0)


@pytest.mark.parametrize("extra", [1, 3, 4, 6])
def test_magnitude_files_with_extra_trailing_columns_are_read_and_reported(
    tmp_path: Path, extra: int
) -> None:
    """Newcomer item 8: KMTNet/MulensModel-style files with a frame index (or more) after
    HJD mag mag_err are read like three-column files; what was ignored is reported."""
    columns = " ".join(str(100 + i) for i in range(extra))
    text = f"# HJD mag mag_err frame...\n9001.25 19.0 0.02 {columns}\n9002.25 18.0 0.01 {columns}\n"
    season = tmp_path / "season"
    (season / "star1").mkdir(parents=True)
    write_text(season / "star1" / "KCT01I.dat", text)
    write_text(season / "star1" / "KMTS01_I.dat", "9001.5 19.0 0.02\n9002.5 18.5 0.02\n")
    stars, report = read_season(season)
    three, _ = read_dataset(write_text(tmp_path / "KCT01I.dat", text.replace(f" {columns}", "")))
    (dataset,) = [d for d in stars[0].datasets if d.site == "CTIO"]
    np.testing.assert_array_equal(dataset.flux, three.flux)
    np.testing.assert_array_equal(dataset.flux_err, three.flux_err)
    n = 3 + extra
    what = f"column 4 of {n}" if extra == 1 else f"columns 4-{n} of {n}"
    assert report.ignored == [
        (str(season / "star1" / "KCT01I.dat"), f"{what} ignored (read as HJD mag mag_err)")
    ]
    assert report.skipped == []


@pytest.mark.parametrize(
    ("name", "site", "field", "band"),
    [
        ("KMTC02_I.pysis", "CTIO", 2, 0),
        ("KMTA41_V.pysis", "SSO", 41, 1),
        ("KCT01I.dat", "CTIO", 1, 0),
        ("kmts42_i.pysis", "SAAO", 42, 0),
        ("KSS03V.txt", "SSO", 3, 1),
        ("KSA.dat", "SAAO", -1, 0),
        ("KMTS_BLG18.pysis", "SAAO", 18, 0),
        ("KMTA-BLG04-V.diapl", "SSO", 4, 1),
        ("CTIO_BLG02_V.dat", "CTIO", 2, 1),
        ("KMTC02_Ixyz.pysis", "CTIO", 2, 0),
    ],
)
def test_site_field_band_from_file_names(name: str, site: str, field: int, band: int) -> None:
    assert site_field_band(Path(name)) == (site, field, band)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("OGLE02_I.pysis", PYSIS_5, "unknown site prefix"),
        ("KMTC02_I.pysis", "", "no observations"),
        ("KMTC02_I.pysis", "# only\n# comments\n\n", "no observations"),
        ("KMTC02_I.pysis", "8123.5 1 2 3\n", r":1: expected 3 \(HJD mag mag_err\) or 5 or 8"),
        ("KMTC02_I.pysis", "8123.5 -40.2 12.5 7\n", r"must read as HJD, magnitude 5-30"),
        ("KMTC02_I.pysis", "8123.5 19.1\n", r":1: expected 3 \(HJD mag mag_err\) or 5 or 8"),
        ("KMTC02_I.pysis", "# c\n8123.5 1 2 3 4\n8124.5 1 2\n", r":3: expected 5 columns, got 3"),
        ("KMTC02_I.pysis", "8123.5 1 2 3 4\n\n8124.5 1 abc 3 4\n", r":3: not a number: 'abc'"),
        ("KMTC02_I.pysis", "8123.5 1 2 3 4\n2461124.5 1 2 3 4\n", "neither all HJD - 2450000"),
    ],
)
def test_unreadable_downloads_name_file_and_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write_text(tmp_path / name, text)
    with pytest.raises(ArchiveError, match=message) as caught:
        read_dataset(path)
    assert str(caught.value).startswith(str(path))


def test_binary_file_is_an_archive_error(tmp_path: Path) -> None:
    path = tmp_path / "KMTC02_I.pysis"
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ArchiveError, match="not a UTF-8 text file"):
        read_dataset(path)


# ------------------------------------------------------------------------- stars and seasons


def test_star_ids_from_names() -> None:
    assert star_id_from_name("201234567") == 201234567
    # blake2b(name, digest_size=8), big-endian, top bit cleared: fixed forever (ids persist).
    assert star_id_from_name("BLG02M.12345") == 4702651529261390077
    assert star_id_from_name("BLG02M.12345") != star_id_from_name("BLG02M.12346")
    assert star_id_from_name("-5") != -5
    assert star_id_from_name(str(2**63)) != 2**63


def test_star_from_downloads_has_unknown_position(tmp_path: Path) -> None:
    star_dir = tmp_path / "BLG02M.1234"
    star_dir.mkdir()
    write_text(star_dir / "KMTS02_I.pysis", PYSIS_5)
    write_text(star_dir / "KMTC02_I.pysis", PYSIS_8)
    write_text(star_dir / ".DS_Store", "junk")
    star = read_star(star_dir)
    assert star.star_id == star_id_from_name("BLG02M.1234")
    assert star.name == "BLG02M.1234"
    assert math.isnan(star.ra)
    assert math.isnan(star.x)
    assert star.chip == -1
    assert [d.site for d in star.datasets] == ["CTIO", "SAAO"]


def test_native_files_disagreeing_on_the_star_are_an_error(tmp_path: Path) -> None:
    star = make_star((make_dataset(3, site="CTIO"), make_dataset(3, site="SSO")))
    directory = write_star(star, tmp_path)
    path = directory / "SSO_BLG02.csv"
    path.write_text(path.read_text().replace("# chip: 1", "# chip: 2"))
    with pytest.raises(ArchiveError, match="'chip: 2' disagrees with 'chip: 1'"):
        read_star(directory)


def test_read_season_reports_what_it_skips(tmp_path: Path) -> None:
    for index in range(3):
        write_star(make_star((make_dataset(10, seed=index),), name=str(100 + index)), tmp_path)
    write_text(tmp_path / "labels.csv", "star_id\n")
    (tmp_path / "empty-star").mkdir()
    write_text(tmp_path / "101" / "OGLE.dat", "1 2 3\n")
    with pytest.raises(ArchiveError, match="unknown site prefix"):
        read_season(tmp_path)
    stars, report = read_season(tmp_path, skip_bad_files=True)
    assert [s.name for s in stars] == ["100", "101", "102"]
    assert (report.n_stars, report.n_files, report.n_observations) == (3, 3, 30)
    reasons = {Path(path).name: reason for path, reason in report.skipped}
    assert report.n_skipped == 3
    assert reasons["labels.csv"] == "not a star directory"
    assert reasons["empty-star"] == "no light-curve files"
    assert "unknown site prefix" in reasons["OGLE.dat"]


def test_read_star_of_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="no light-curve files"):
        read_star(tmp_path)
    with pytest.raises(ArchiveError, match="not a directory"):
        read_season(tmp_path / "missing")


def test_to_observations_merges_a_sites_fields_in_time_order() -> None:
    first = make_dataset(20, site="SAAO", field=2, seed=1)
    second = make_dataset(10, site="SAAO", field=42, seed=2)
    other = make_dataset(5, site="CTIO", field=2, seed=3)
    star = Star(7, "7", 270.0, -30.0, -1, 10.0, 20.0, (other, first, second))
    batches = to_observations(star)
    assert list(batches) == ["CTIO", "SAAO"]
    saao = batches["SAAO"]
    assert len(saao) == 30
    assert np.all(np.diff(saao.hjd) >= 0)
    assert saao.star_id.dtype == np.int64
    assert set(saao.star_id.tolist()) == {7}
    assert set(saao.chip.tolist()) == {UNKNOWN_CHIP_U8}
    by_time = dict(zip(saao.hjd.tolist(), saao.field.tolist(), strict=True))
    assert all(by_time[t] == 42 for t in second.hjd.tolist())
    np.testing.assert_array_equal(np.sort(saao.flux), np.sort(np.r_[first.flux, second.flux]))
    assert saao.x.dtype == np.float32
    assert float(saao.x[0]) == 10.0
