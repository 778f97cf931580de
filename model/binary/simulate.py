"""Simulated binary-lens events on the daemon's cadence and noise, for the flow.

Each event is a static binary lens with a finite source, magnified by VBMicrolensing
(``BinaryLightCurve``: contour integration, the field's standard code; its frame: centre of
mass at the origin, the source's trajectory at angle ``alpha`` to the binary axis; its
``alpha`` is :mod:`model.simulation.lens`'s plus pi, checked by the tests), measured
by the season simulator's machinery so that inputs look like what the daemon holds: a season
calendar (:func:`model.simulation.calendar.season_config`), a field drawn by cadence tier (2/h,
possibly overlapping to 4/h, down to ~1/night), the sites that see it, each site's frames with
its weather gaps and seeing/sky (:func:`model.simulation.schedule.frame_series`), photon +
floor errors underestimated per site, bad points and outliers
(:func:`model.simulation.photometry.observe`), then the daemon's cleaning
(:func:`model.binary.inputs.flow_input`).

Priors (the flow's parameters, :data:`PARAMETERS`; log is log10):

- ``tau_last = (t_last - t0) / tE`` uniform in [-0.5, 2]: the light curve ends anywhere from
  half an Einstein time before the peak (rising) to two after it. ``t0`` (reported relative to
  the last point, days) is ``-tau_last * tE``.
- ``u0`` uniform in [0, 1] (Einstein radii, from the centre of mass; u0 >= 0 loses nothing: the
  mirror image (-u0, -alpha) gives the same light curve).
- ``log tE`` normal(1.3, 0.3) truncated to [0.5, 2] (3-100 days), the season simulator's shape.
- ``log s`` uniform in [log 0.3, log 3]: close and wide topologies, symmetric about s = 1 so
  the close/wide degeneracy (s <-> 1/s) is inside the range on both sides.
- ``log q`` uniform in [-4, 0]: half planetary (q < 0.01), half stellar binaries.
- ``alpha`` uniform in [0, 2 pi) radians.
- ``log rho`` uniform in [-3.5, -1.5] (source radius, Einstein radii).
- ``log fs`` uniform in [-1.5, 0]: the source's share of the baseline flux (blending).

Not flow parameters, drawn per event: baseline ``I`` uniform in 15-20 mag; the last time
``t_last`` uniform from 20 days after the season opens to its end; the season seed (one per
split, so splits share no schedule or weather). Selection: an event is redrawn until its
noiseless peak excess in the window reaches :data:`MIN_PEAK_SNR` typical errors and it has
:data:`~model.binary.inputs.MIN_POINTS` points (an alert needs a visible rise).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from consumer.seasons.archive import Dataset, Star
from model.binary.inputs import (
    MAX_POINTS,
    N_POINT_FEATURES,
    WINDOW_DAYS,
    FlowInput,
    LightCurveInputError,
    flow_input,
)
from model.simulate import SITE_ERROR_SCALE
from model.simulation.behaviour import Behaviour, Conditions, flux_of_mag
from model.simulation.calendar import season_config
from model.simulation.config import SimulationConfig
from model.simulation.noise import typical_sigma
from model.simulation.photometry import StarOptics, observe
from model.simulation.schedule import FrameSeries, frame_series
from model.simulation.sites import FIELDS, TIER_CADENCES

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: The flow's parameters, in order, and their prior boxes (log is log10).
PARAMETERS: Final = ("tau_last", "u0", "log_tE", "log_s", "log_q", "alpha", "log_rho", "log_fs")
LOW: Final = np.array([-0.5, 0.0, 0.5, math.log10(0.3), -4.0, 0.0, -3.5, -1.5])
HIGH: Final = np.array([2.0, 1.0, 2.0, math.log10(3.0), 0.0, 2 * math.pi, -1.5, 0.0])
#: What is reported: tau_last replaced by t0 relative to the last point (days).
REPORTED: Final = ("t0", "u0", "log_tE", "log_s", "log_q", "alpha", "log_rho", "log_fs")
#: log10 tE's normal before its truncation to [LOW, HIGH] (the season simulator's shape).
LOG_TE_MEAN: Final = 1.3
LOG_TE_SD: Final = 0.3
MIN_PEAK_SNR: Final = 8.0
#: VBMicrolensing's absolute and relative tolerances on the magnification (photometry has a
#: 0.3 % error floor, so 1e-3 is well below the noise).
VBM_TOLERANCE: Final = 1e-3
_EVENT_STREAM: Final = 29


@dataclass(frozen=True, eq=False)
class SimulatedEvent:
    """One event: flow input, true parameters and what the evaluation needs.

    ``theta`` (8,) :data:`PARAMETERS`; ``dchi2_close_wide``: chi-square between the true light
    curve and the one with ``s -> 1/s`` (all else equal) over the window's I-band points, with
    the true scatter; NaN when not computed.
    """

    inputs: FlowInput
    theta: F64
    dchi2_close_wide: float


def make_vbm() -> Any:
    """A VBMicrolensing instance at :data:`VBM_TOLERANCE`."""
    import VBMicrolensing  # training only: the daemon's posterior needs the priors, not it

    vbm = VBMicrolensing.VBMicrolensing()
    vbm.Tol = VBM_TOLERANCE
    vbm.RelTol = VBM_TOLERANCE
    return vbm


def magnification(vbm: Any, theta: F64, t0: float, hjd: F64) -> F64:
    """Binary-lens finite-source magnification at ``hjd`` (full HJD), shape of ``hjd``."""
    if len(hjd) == 0:
        return np.zeros(0)
    _, u0, log_tE, log_s, log_q, alpha, log_rho, _ = (float(v) for v in theta)
    ln10 = math.log(10.0)
    params = [log_s * ln10, log_q * ln10, u0, alpha, log_rho * ln10, log_tE * ln10, t0]
    return np.asarray(vbm.BinaryLightCurve(params, hjd.tolist())[0], dtype=np.float64)


def draw_theta(rng: np.random.Generator) -> F64:
    """Parameters from the prior (module docstring), shape (8,)."""
    theta = rng.uniform(LOW, HIGH)
    while True:
        log_tE = rng.normal(LOG_TE_MEAN, LOG_TE_SD)
        if LOW[2] <= log_tE <= HIGH[2]:
            theta[2] = log_tE
            return theta


def draw_thetas(rng: np.random.Generator, n: int) -> F64:
    """``n`` parameter sets from the prior at once, (n, 8); the same distribution as
    :func:`draw_theta`, not the same numbers."""
    theta = rng.uniform(LOW, HIGH, (n, len(LOW)))
    kept = np.zeros(0)
    while len(kept) < n:  # the truncation keeps ~98.6 % of the normal
        log_tE = rng.normal(LOG_TE_MEAN, LOG_TE_SD, n)
        kept = np.concatenate([kept, log_tE[(log_tE >= LOW[2]) & (log_tE <= HIGH[2])]])
    theta[:, 2] = kept[:n]
    return theta


def _place(rng: np.random.Generator, config: SimulationConfig) -> tuple[tuple[int, ...], list[int]]:
    """(fields, seen site indices): a field by cadence tier, maybe its overlapping partner."""
    weights = np.asarray(config.tier_weights)
    cadence = TIER_CADENCES[int(rng.choice(len(weights), p=weights / weights.sum()))]
    candidates = [f for f in FIELDS if f.cadence_per_hour == cadence]
    field = candidates[int(rng.integers(len(candidates)))]
    fields: tuple[int, ...] = (field.number,)
    if field.partner >= 0 and rng.uniform() < config.overlap_fraction:
        fields = (field.number, field.partner)
    coverage = np.asarray(config.site_coverage)
    n_seen = 3 - int(rng.choice(3, p=coverage / coverage.sum()))
    return fields, sorted(rng.permutation(len(SITES))[:n_seen].tolist())


def _window(frames: FrameSeries, start: float, end: float) -> FrameSeries:
    """The I-band frames with ``start <= hjd <= end``."""
    keep = (frames.hjd >= start) & (frames.hjd <= end) & (frames.band == 0)
    return dataclasses.replace(
        frames,
        **{
            f.name: getattr(frames, f.name)[keep]
            for f in dataclasses.fields(frames)
            if isinstance(getattr(frames, f.name), np.ndarray)
        },
    )


def simulate_event(
    vbm: Any, config: SimulationConfig, index: int, *, close_wide: bool = False
) -> SimulatedEvent:
    """Event number ``index`` of the season ``config`` (deterministic; redraws until selected).

    ``close_wide``: also compute :attr:`SimulatedEvent.dchi2_close_wide` (one more light curve).
    """
    rng = np.random.default_rng([config.seed, _EVENT_STREAM, index])
    while True:
        event = _try_event(vbm, rng, config, index, close_wide)
        if event is not None:
            return event


def _try_event(
    vbm: Any, rng: np.random.Generator, config: SimulationConfig, index: int, close_wide: bool
) -> SimulatedEvent | None:
    theta = draw_theta(rng)
    tE = 10.0 ** theta[2]
    t_last = rng.uniform(config.season_start_hjd + 20.0, config.season_end_hjd)
    t0 = t_last - theta[0] * tE
    ref_flux = flux_of_mag(rng.uniform(15.0, 20.0))
    source_flux = ref_flux * 10.0 ** theta[7]
    fields, seen = _place(rng, config)
    offsets = rng.normal(0.0, 0.01 * ref_flux + 10.0, len(SITES))
    scales = np.asarray(SITE_ERROR_SCALE) * rng.uniform(0.9, 1.1, len(SITES))
    optics = StarOptics(
        psf_factor=float(rng.uniform(0.97, 1.1)),
        crowding_adu=float(np.exp(rng.uniform(np.log(100.0), np.log(1500.0)))),
        v_ratio=0.1,
        offsets=(float(offsets[0]), float(offsets[1]), float(offsets[2])),
        error_scales=(float(scales[0]), float(scales[1]), float(scales[2])),
    )

    def signal(conditions: Conditions) -> F64:
        return source_flux * (magnification(vbm, theta, t0, conditions.hjd) - 1.0)

    behaviour = Behaviour("binary", {}, ref_flux, signal)
    datasets: list[Dataset] = []
    peak = 0.0
    for site_index in seen:
        for field_number in fields:
            frames = _window(
                frame_series(config, SITES[site_index], field_number), t_last - WINDOW_DAYS, t_last
            )
            if len(frames) == 0:
                continue
            dataset, noiseless, _ = observe(
                rng,
                frames,
                site_index,
                behaviour,
                optics,
                bad_point_fraction=config.bad_point_fraction,
                outlier_fraction=config.outlier_fraction,
            )
            datasets.append(dataset)
            peak = max(peak, float(np.max(noiseless)))
    if not datasets or peak < MIN_PEAK_SNR * typical_sigma(ref_flux):
        return None
    star = Star(index, str(index), math.nan, math.nan, 0, math.nan, math.nan, tuple(datasets))
    try:
        inputs = flow_input(star)
    except LightCurveInputError:
        return None
    dchi2 = math.nan
    if close_wide:
        dchi2 = _close_wide_dchi2(vbm, theta, t0, source_flux, ref_flux, datasets, optics)
    return SimulatedEvent(inputs=inputs, theta=theta, dchi2_close_wide=dchi2)


def _close_wide_dchi2(
    vbm: Any,
    theta: F64,
    t0: float,
    source_flux: float,
    ref_flux: float,
    datasets: list[Dataset],
    optics: StarOptics,
) -> float:
    """Chi-square between the light curves of s and 1/s at the datasets' times."""
    mirrored = theta.copy()
    mirrored[3] = -theta[3]
    total = 0.0
    for dataset in datasets:
        excess = source_flux * (magnification(vbm, theta, t0, dataset.hjd) - 1.0)
        other = source_flux * (magnification(vbm, mirrored, t0, dataset.hjd) - 1.0)
        scatter = np.abs(dataset.flux_err) * optics.error_scales[SITES.index(dataset.site)]
        good = np.isfinite(scatter) & (scatter > 0)
        total += float(np.sum(((excess - other)[good] / scatter[good]) ** 2))
    del ref_flux
    return total


@dataclass(frozen=True, eq=False)
class EventArrays:
    """Many events as arrays: points (N, L, 6) float32 zero-padded, lengths (N,), log_flux_scale
    (N,), theta (N, 8), dchi2_close_wide (N,), season (N,) seed of each event's season."""

    points: F32
    lengths: npt.NDArray[np.int64]
    log_flux_scale: F32
    theta: F64
    dchi2_close_wide: F64
    season: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.theta)

    def save(self, path: str) -> None:
        np.savez(path, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: str) -> EventArrays:
        with np.load(path) as data:
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def simulate_events(
    season_seeds: tuple[int, ...],
    events_per_season: int,
    *,
    close_wide: bool = False,
    progress: bool = True,
) -> EventArrays:
    """``events_per_season`` events from each season of ``season_seeds`` (deterministic)."""
    from tqdm import tqdm

    vbm = make_vbm()
    n = len(season_seeds) * events_per_season
    points = np.zeros((n, MAX_POINTS, N_POINT_FEATURES), dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    scale = np.zeros(n, dtype=np.float32)
    theta = np.zeros((n, len(PARAMETERS)))
    dchi2 = np.full(n, np.nan)
    season = np.zeros(n, dtype=np.int64)
    bar = tqdm(total=n, desc="simulate", disable=not progress, mininterval=5.0)
    row = 0
    for seed in season_seeds:
        config = season_config(seed, 1)
        for index in range(events_per_season):
            event = simulate_event(vbm, config, index, close_wide=close_wide)
            length = len(event.inputs.points)
            points[row, :length] = event.inputs.points
            lengths[row] = length
            scale[row] = event.inputs.log_flux_scale
            theta[row] = event.theta
            dchi2[row] = event.dchi2_close_wide
            season[row] = seed
            row += 1
            bar.update()
    bar.close()
    return EventArrays(points, lengths, scale, theta, dchi2, season)


def reported(theta: F64) -> F64:
    """:data:`REPORTED` parameters from :data:`PARAMETERS`, shape (..., 8): tau_last -> t0
    relative to the last point (days)."""
    out = np.array(theta, dtype=np.float64, copy=True)
    out[..., 0] = -theta[..., 0] * 10.0 ** theta[..., 2]
    return out
