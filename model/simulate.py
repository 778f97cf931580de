"""Season simulator: labelled multi-site KMTNet-like photometry, deterministic from a seed.

Use :func:`simulate_star` / :func:`simulate_season` in memory (training) or
:func:`write_season` to write a season directory that :mod:`consumer.seasons.archive` reads:

``OUT/<star_id>/<SITE>_BLG<field>.csv``
    one native file per site and field (stars in overlapping fields have two per site);
``OUT/labels.csv``
    ``star_id,label,subclass,t_rise_start,t_peak,params``; ``params`` is a JSON object of the
    true parameters (:func:`read_labels` reads it back);
``OUT/season.json``
    the configuration and a summary (counts per class and subclass, observations).

How a star is made: it is placed in a field by cadence tier (and, for the 2/h tier, maybe also
in the overlapping partner field), on a chip at (x, y); its class and subclass are drawn from
the configured fractions; the class draws a :class:`~model.simulation.behaviour.Behaviour`; each
site's frames of its fields (:mod:`model.simulation.schedule`, shared by all stars of the field)
are measured (:mod:`model.simulation.photometry`). Each star has its own random stream
(``SeedSequence([seed, 13, index])``), so a star does not depend on the others or on order.

Star ids are ``field * 10**8 + chip * 10**7 + index`` (index < 10**7), with the star's primary
field. The label's rise window is measured on the noiseless I-band signal at the star's own
observation times: ``t_peak`` is the time of its maximum, ``t_rise_start`` the last
observation before it where the excess over the median was at most 3 typical errors or 10% of
the peak excess, whichever is lower (NaN for both when the signal is flat); training crops
light curves between them. It is measured per site and taken from the site with the largest
excess; artefacts are judged on their driver (the signal in constant reference conditions) so
a bad-seeing spike does not pass for the peak; pure airmass or sky trends on nightly means.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from consumer.constants import SITES
from consumer.seasons.archive import ArchiveError, Dataset, Star, write_star
from model.simulation.behaviour import SeasonWindow, conditions_at
from model.simulation.classes import draw_behaviour
from model.simulation.config import CLASSES, SimulationConfig
from model.simulation.noise import typical_sigma
from model.simulation.photometry import StarOptics, observe
from model.simulation.schedule import frame_series
from model.simulation.sites import (
    CHIP_DEG,
    CHIP_PIXELS,
    FIELDS,
    SITE_INFO,
    TIER_CADENCES,
    local_night,
)

F64 = npt.NDArray[np.float64]

__all__ = [
    "Label",
    "SeasonSummary",
    "SimulationConfig",
    "read_labels",
    "simulate_season",
    "simulate_star",
    "simulate_star_truth",
    "write_season",
]

#: Per-site factor by which the actual scatter exceeds the reported flux_err.
SITE_ERROR_SCALE: Final = (1.1, 1.25, 1.3)
_STAR_STREAM: Final = 13
LABELS_FILE: Final = "labels.csv"
SEASON_FILE: Final = "season.json"


@dataclass(frozen=True)
class Label:
    """The truth about one simulated star.

    Attributes
    ----------
    star_id : as in the archive.
    label : "YES", "MAYBE" or "NO".
    subclass : e.g. "pspl", "bleed_trail", "flare" (see :mod:`model.simulation.classes`).
    params : true parameters of the subclass plus measurement details (``ref_flux``,
        ``v_ratio``, ``peak_snr``, per-site ``offset_*`` and ``error_scale_*``, defect counts).
    t_rise_start, t_peak : the rise window, full HJD (see the module docstring); NaN if none.
    """

    star_id: int
    label: str
    subclass: str
    params: dict[str, float]
    t_rise_start: float
    t_peak: float


@dataclass(frozen=True)
class SeasonSummary:
    """What :func:`write_season` wrote."""

    out_dir: Path
    n_stars: int
    n_files: int
    n_observations: int
    counts: dict[str, dict[str, int]]
    seconds: float


def _choose(rng: np.random.Generator, weights: tuple[float, ...] | list[float]) -> int:
    p = np.asarray(weights, dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))


def _place(
    rng: np.random.Generator, config: SimulationConfig
) -> tuple[tuple[int, ...], int, float, float, float, float, float]:
    """(fields, chip, x, y, ra, dec, psf_factor) of a new star."""
    cadence = TIER_CADENCES[_choose(rng, config.tier_weights)]
    candidates = [f for f in FIELDS if f.cadence_per_hour == cadence]
    field = candidates[int(rng.integers(len(candidates)))]
    fields: tuple[int, ...] = (field.number,)
    if field.partner >= 0 and rng.uniform() < config.overlap_fraction:
        fields = (field.number, field.partner)
    chip = int(rng.integers(4))
    x, y = (float(v) for v in rng.uniform(0.0, CHIP_PIXELS, 2))
    # Chips tile the field 2 x 2; offsets in degrees from the field centre.
    dx = ((chip % 2) - 1 + x / CHIP_PIXELS) * CHIP_DEG
    dy = ((chip // 2) - 1 + y / CHIP_PIXELS) * CHIP_DEG
    dec = field.dec_deg + dy
    ra = (field.ra_deg + dx / math.cos(math.radians(dec))) % 360.0
    psf_factor = (1.0 + 0.03 * (dx * dx + dy * dy)) * rng.uniform(0.97, 1.03)
    return fields, chip, x, y, ra, dec, psf_factor


def _rise_window(hjd: F64, signal: F64, sigma: float) -> tuple[float, float, float]:
    """(t_rise_start, t_peak, peak excess over the median) of a noiseless signal.

    The rise starts at the last time before the peak where the excess was at most 3 ``sigma``
    (first detectable) or 10% of the peak excess, whichever is lower.
    """
    if len(hjd) == 0:
        return math.nan, math.nan, 0.0
    order = np.argsort(hjd, kind="stable")
    hjd, signal = hjd[order], signal[order]
    base = float(np.median(signal))
    peak_index = int(np.argmax(signal))
    excess = float(signal[peak_index]) - base
    if not excess > 1e-9 * (1.0 + abs(base)):
        return math.nan, math.nan, 0.0
    below = np.flatnonzero(signal[:peak_index] <= base + min(0.1 * excess, 3.0 * sigma))
    start = float(hjd[below[-1]]) if len(below) else float(hjd[0])
    return start, float(hjd[peak_index]), excess


def _rise_window_of(
    parts: list[tuple[int, F64, F64, F64]], sigma: float
) -> tuple[float, float, float]:
    """Rise window of a star from its I-band (site, hjd, driver, observed signal) parts.

    Measured per site (a drift or an artefact may touch one site only) and taken from the site
    with the largest excess. The driver is the signal in constant reference conditions (an
    artefact's neighbour, an event), so bad-seeing spikes do not pass for the peak. Signals
    made only of conditions (airmass or sky trends) have a flat driver; for them the nightly
    means of the observed signal are used instead.
    """
    best = (math.nan, math.nan, 0.0)
    for site_index in sorted({p[0] for p in parts}):
        site_parts = [p for p in parts if p[0] == site_index]
        hjd = np.concatenate([p[1] for p in site_parts])
        window = _rise_window(hjd, np.concatenate([p[2] for p in site_parts]), sigma)
        best = window if window[2] > best[2] else best
    if math.isfinite(best[1]) or not parts:
        return best
    for site_index in sorted({p[0] for p in parts}):
        site_parts = [p for p in parts if p[0] == site_index]
        hjd = np.concatenate([p[1] for p in site_parts])
        signal = np.concatenate([p[3] for p in site_parts])
        _, night = np.unique(local_night(hjd, SITE_INFO[SITES[site_index]]), return_inverse=True)
        counts = np.bincount(night)
        night_hjd = np.bincount(night, weights=hjd) / counts
        window = _rise_window(night_hjd, np.bincount(night, weights=signal) / counts, sigma)
        best = window if window[2] > best[2] else best
    return best


@dataclass(frozen=True, eq=False)
class SiteTruth:
    """The noiseless I-band signal behind one dataset, for labels that need more than the star's.

    ``site`` index into ``SITES``; ``hjd`` (N,) the dataset's I-band times; ``driver`` (N,) the
    signal in constant reference conditions (what an artefact's neighbour or an event does,
    without the seeing that modulates it); ``sigma`` the star's typical error (DIA units).
    """

    site: int
    hjd: F64
    driver: F64
    sigma: float


def simulate_star(config: SimulationConfig, star_index: int) -> tuple[Star, Label]:
    """Simulate star number ``star_index`` (0 <= index < 10**7) of the season ``config``.

    The first call for a configuration builds the season's schedules (~0.2 s); later calls
    reuse them. Pure numpy; nothing is written.
    """
    star, label, _ = simulate_star_truth(config, star_index)
    return star, label


def simulate_star_truth(
    config: SimulationConfig, star_index: int
) -> tuple[Star, Label, tuple[SiteTruth, ...]]:
    """:func:`simulate_star` plus the noiseless signal behind each I-band dataset (in the order
    of the star's datasets before empty ones are dropped; training uses it for site labels)."""
    if not 0 <= star_index < 10**7:
        raise ValueError(f"star_index must be in [0, 1e7), got {star_index}")
    rng = np.random.default_rng([config.seed, _STAR_STREAM, star_index])
    fields, chip, x, y, ra, dec, psf_factor = _place(rng, config)
    n_seen = len(SITES) - _choose(rng, config.site_coverage)
    seen = set(rng.permutation(len(SITES))[:n_seen].tolist())
    star_id = fields[0] * 10**8 + chip * 10**7 + star_index
    label = CLASSES[_choose(rng, config.class_fractions)]
    choices = {
        "YES": config.yes_subclasses,
        "MAYBE": config.maybe_subclasses,
        "NO": config.no_subclasses,
    }[label]
    subclass = choices[_choose(rng, [p for _, p in choices])][0]
    window = SeasonWindow(config.season_start_hjd, config.season_end_hjd, config.min_peak_snr)
    behaviour = draw_behaviour(rng, label, subclass, window)

    sigma = typical_sigma(behaviour.ref_flux)
    offsets = rng.normal(0.0, 0.01 * behaviour.ref_flux + 10.0, len(SITES))
    error_scales = np.asarray(SITE_ERROR_SCALE) * rng.uniform(0.9, 1.1, len(SITES))
    optics = StarOptics(
        psf_factor=psf_factor,
        crowding_adu=float(np.exp(rng.uniform(np.log(100.0), np.log(1500.0)))),
        v_ratio=float(10.0 ** (-0.4 * rng.uniform(1.5, 3.5))),
        offsets=(float(offsets[0]), float(offsets[1]), float(offsets[2])),
        error_scales=(float(error_scales[0]), float(error_scales[1]), float(error_scales[2])),
    )
    datasets: list[Dataset] = []
    rise_parts: list[tuple[int, F64, F64, F64]] = []  # (site, hjd, driver, observed signal)
    defects: dict[str, int] = {}
    truth: list[SiteTruth] = []
    for site_index, site in enumerate(SITES):
        if site_index not in seen:
            continue
        for field_number in fields:
            frames = frame_series(config, site, field_number)
            dataset, signal, counts = observe(
                rng,
                frames,
                site_index,
                behaviour,
                optics,
                bad_point_fraction=config.bad_point_fraction,
                outlier_fraction=config.outlier_fraction,
            )
            datasets.append(dataset)
            is_i = frames.band == 0
            hjd_i = frames.hjd[is_i]
            driver = (
                behaviour.signal(conditions_at(hjd_i, site))
                if behaviour.uses_conditions
                else signal[is_i]
            )
            rise_parts.append((site_index, hjd_i, driver, signal[is_i]))
            truth.append(SiteTruth(site_index, hjd_i, driver, sigma))
            for name, count in counts.items():
                defects[name] = defects.get(name, 0) + count
    # A site that never saw the field writes no file, unless no site did (tiny seasons): then
    # the empty datasets are kept so that the star still has files and round-trips.
    datasets = [d for d in datasets if len(d)] or datasets
    t_rise_start, t_peak, excess = _rise_window_of(rise_parts, sigma)
    params = dict(behaviour.params)
    params |= {
        "ref_flux": behaviour.ref_flux,
        "typical_sigma": sigma,
        "peak_snr": excess / sigma,
        "v_ratio": optics.v_ratio,
        "psf_factor": optics.psf_factor,
        "crowding_adu": optics.crowding_adu,
    }
    for site_index, site in enumerate(SITES):
        params[f"offset_{site}"] = optics.offsets[site_index]
        params[f"error_scale_{site}"] = optics.error_scales[site_index]
    params |= {f"n_{name}": float(count) for name, count in defects.items()}
    params["n_sites_seen"] = float(n_seen)
    star = Star(
        star_id=star_id,
        name=str(star_id),
        ra=ra,
        dec=dec,
        chip=chip,
        x=x,
        y=y,
        datasets=tuple(datasets),
    )
    return star, Label(star_id, label, subclass, params, t_rise_start, t_peak), tuple(truth)


def simulate_season(config: SimulationConfig) -> Iterator[tuple[Star, Label]]:
    """Every star of the season, in index order."""
    for index in range(config.n_stars):
        yield simulate_star(config, index)


def _label_row(label: Label) -> list[str]:
    return [
        str(label.star_id),
        label.label,
        label.subclass,
        repr(label.t_rise_start),
        repr(label.t_peak),
        json.dumps(label.params, sort_keys=True),
    ]


def read_labels(path: Path) -> dict[int, Label]:
    """Labels of a written season (``labels.csv``), by star id."""
    labels: dict[int, Label] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                label = Label(
                    star_id=int(row["star_id"]),
                    label=row["label"],
                    subclass=row["subclass"],
                    params={k: float(v) for k, v in json.loads(row["params"]).items()},
                    t_rise_start=float(row["t_rise_start"]),
                    t_peak=float(row["t_peak"]),
                )
                labels[label.star_id] = label
    except (OSError, KeyError, ValueError) as error:
        raise ArchiveError(f"{path}: cannot read labels ({error})") from error
    return labels


def write_season(config: SimulationConfig, out_dir: Path, progress: bool = True) -> SeasonSummary:
    """Simulate the season and write it to ``out_dir`` (created; must be empty if it exists).

    Raises
    ------
    ArchiveError
        ``out_dir`` is not empty, or a file cannot be written.
    """
    started = time.perf_counter()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ArchiveError(f"{out_dir}: exists and is not an empty directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {name: {} for name in CLASSES}
    n_files = n_observations = 0
    try:
        with (out_dir / LABELS_FILE).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["star_id", "label", "subclass", "t_rise_start", "t_peak", "params"])
            stars = tqdm(
                simulate_season(config),
                total=config.n_stars,
                disable=None if progress else True,
                unit="star",
                desc="simulate",
            )
            for star, label in stars:
                write_star(star, out_dir)
                writer.writerow(_label_row(label))
                by_subclass = counts[label.label]
                by_subclass[label.subclass] = by_subclass.get(label.subclass, 0) + 1
                n_files += len(star.datasets)
                n_observations += sum(len(d) for d in star.datasets)
        seconds = time.perf_counter() - started
        season = {
            "format": "lensnet-season v1",
            "config": dataclasses.asdict(config),
            "n_stars": config.n_stars,
            "n_files": n_files,
            "n_observations": n_observations,
            "counts": counts,
            "seconds": round(seconds, 3),
        }
        (out_dir / SEASON_FILE).write_text(json.dumps(season, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise ArchiveError(f"{out_dir}: cannot write the season ({error})") from error
    return SeasonSummary(out_dir, config.n_stars, n_files, n_observations, counts, seconds)
