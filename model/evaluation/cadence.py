"""What the daemon would do with whole simulated seasons: every LensNet call, every alert.

Each star of a season is run through the daemon's schedule (:mod:`model.timeline`: trigger at
every closed ``evaluation_days`` window with new data, LensNet on triggered stars with the
``rescore_days`` delay), prepared exactly as the daemon prepares it (:func:`model.features.prepare`
with the rule of its fields) and scored by each model. Since the call times do not depend on the
scores, one pass gives, for every threshold ``T``, the time at which a daemon with
``alert_threshold = T`` would alert: the first call scoring at least ``T``.

Workers (processes) simulate, schedule and prepare; the parent scores on the device in large
batches, so a GPU scores while the CPUs prepare.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from consumer.pointlens.gate import (
    MIN_PEAK_MAGNIFICATION,
    MagnificationGate,
    candidate_datasets,
    fitted_peak_magnification,
)
from consumer.seasons.archive import MAG_ZERO_POINT
from model.dataset import Rows, SeasonSet
from model.features import InsufficientDataError, prepare
from model.simulate import SimulationConfig, simulate_star
from model.timeline import DEFAULT_CADENCE, Cadence, timelines
from model.train import predict

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Stars per worker task.
TASK_STARS: Final = 200
#: Random-time probes of each constant star (site scores on flat light curves).
PROBES_PER_CONSTANT: Final = 3


@dataclass(frozen=True, eq=False)
class StarCalls:
    """One star's LensNet calls in a season, scored by M models.

    Attributes
    ----------
    season, star_index, star_id : which star.
    label, subclass : its truth.
    t_peak : the peak: ``t0`` for events (even outside the season), the label's ``t_peak``
        otherwise (NaN without a rise).
    t_rise_start : the label's rise start (NaN without one).
    baseline_mag : I magnitude of the star in the reference image.
    first_data, last_data : first and last I-band observation (full HJD).
    calls : (C,) ``t_last`` of each LensNet call.
    p_event : (M, C) binary score of each model at each call.
    site_scores : (M, C, 3) per-site scores.
    n_sites : sites with data.
    peak_magnification : (C,) peak magnification of the point-lens fit of each call's light
        curve (the daemon's magnification gate, :mod:`consumer.pointlens.gate`); NaN where the
        fit could not run, all NaN in files saved before it was recorded.
    peak_snr : the simulator's ``peak_snr``: the largest noiseless excess at the star's
        observation times in typical errors of one point (NaN in files saved before it was
        recorded).
    """

    season: int
    star_index: int
    star_id: int
    label: str
    subclass: str
    t_peak: float
    t_rise_start: float
    baseline_mag: float
    first_data: float
    last_data: float
    calls: F64
    p_event: F64
    site_scores: F64
    n_sites: int
    peak_snr: float = math.nan
    peak_magnification: F64 | None = None

    def alert_time(
        self, model: int, threshold: float, confirm: int = 1, min_magnification: float = 0.0
    ) -> float:
        """When a daemon with ``alert_threshold = threshold`` and ``min_peak_magnification =
        min_magnification`` alerts (NaN: never): the first call at or above the threshold
        whose fit passes the gate, or with ``confirm`` > 1 the last of the first run of that
        many consecutive such calls."""
        high = self.p_event[model] >= threshold
        if min_magnification > 0 and self.peak_magnification is not None:
            gate = MagnificationGate(min_magnification)
            high &= np.array([gate.passes(a) for a in self.peak_magnification.tolist()], bool)
        if confirm > 1 and len(high):
            runs = np.convolve(high.astype(np.int64), np.ones(confirm, dtype=np.int64), "full")
            high = runs[: len(high)] >= confirm
        hits = np.flatnonzero(high)
        return float(self.calls[hits[0]]) if len(hits) else math.nan


@dataclass(frozen=True, eq=False)
class Probes:
    """Site scores of constant stars at random times: (M, P, 3), and (P, 3) has-data mask."""

    site_scores: F64
    has_data: npt.NDArray[np.bool_]


def _stars_task(
    args: tuple[SimulationConfig, list[int], Cadence],
) -> tuple[list[dict[str, Any]], Rows, Rows]:
    """Worker: per star its metadata and prepared calls; prepared probes of constant stars."""
    config, indices, cadence = args
    simulated = [simulate_star(config, index) for index in indices]
    lines = timelines([star for star, _ in simulated], cadence)
    meta: list[dict[str, Any]] = []
    candidates: list[tuple[F32, I64]] = []
    probes: list[tuple[F32, I64]] = []
    for index, (star, label), line in zip(indices, simulated, lines, strict=True):
        rule = cadence.rule_for([d.field for d in star.datasets])
        calls, magnification = [], []
        for as_of in line.scored.tolist():
            try:
                candidate = prepare(star, as_of=as_of, rule=rule)
            except InsufficientDataError:
                continue
            calls.append(as_of)
            candidates.append((candidate.x, candidate.lengths))
            magnification.append(fitted_peak_magnification(candidate_datasets(candidate)))
        hjd = np.concatenate([d.hjd[d.band == 0] for d in star.datasets] + [np.zeros(0)])
        sites = {d.site for d in star.datasets if len(d)}
        t_peak = label.params["t0"] if label.label == "YES" else label.t_peak
        meta.append(
            {
                "season": config.seed,
                "star_index": index,
                "star_id": star.star_id,
                "label": label.label,
                "subclass": label.subclass,
                "t_peak": float(t_peak),
                "t_rise_start": float(label.t_rise_start),
                "baseline_mag": MAG_ZERO_POINT - 2.5 * math.log10(label.params["ref_flux"]),
                "first_data": float(hjd.min()) if len(hjd) else math.nan,
                "last_data": float(hjd.max()) if len(hjd) else math.nan,
                "calls": np.asarray(calls, dtype=np.float64),
                "peak_magnification": np.asarray(magnification, dtype=np.float64),
                "n_sites": len(sites),
                "peak_snr": float(label.params.get("peak_snr", math.nan)),
            }
        )
        if label.subclass == "constant" and len(hjd) > 20:
            rng = np.random.default_rng([config.seed, 211, index])
            for as_of in rng.uniform(hjd.min() + 15.0, hjd.max(), PROBES_PER_CONSTANT):
                try:
                    probe = prepare(star, as_of=float(as_of), rule=rule)
                except InsufficientDataError:
                    continue
                probes.append((probe.x, probe.lengths))
    return meta, Rows.of(candidates), Rows.of(probes)


def score_rows(modules: Sequence[Any], rows: Rows, device: torch.device) -> tuple[F64, F64]:
    """``(p_event (M, N), site_scores (M, N, 3))`` of prepared candidates by each module
    (batches of similar length; a candidate's scores do not depend on its batch)."""
    p_event = np.zeros((len(modules), len(rows)))
    site_scores = np.zeros((len(modules), len(rows), 3))
    for m, module in enumerate(modules):
        p_event[m], _, site_scores[m] = predict(module, rows, 512, str(device))
    return p_event, site_scores


def _tasks(
    seasons: SeasonSet, cadence: Cadence
) -> Iterator[tuple[SimulationConfig, list[int], Cadence]]:
    for config in seasons.configs():
        for start in range(0, config.n_stars, TASK_STARS):
            yield config, list(range(start, min(start + TASK_STARS, config.n_stars))), cadence


def run_seasons(
    modules: Sequence[Any],
    seasons: SeasonSet,
    *,
    cadence: Cadence = DEFAULT_CADENCE,
    workers: int = 1,
    device: torch.device | None = None,
    progress: bool = False,
) -> tuple[list[StarCalls], Probes]:
    """Every star of ``seasons`` through the daemon's schedule, scored by every module."""
    device = device or torch.device("cpu")
    tasks = list(_tasks(seasons, cadence))
    results: Iterator[Any]
    pool = None
    if workers > 1:
        pool = multiprocessing.get_context("fork").Pool(workers)
        results = pool.imap(_stars_task, tasks)
    else:
        results = map(_stars_task, tasks)
    stars: list[StarCalls] = []
    probe_scores: list[F64] = []
    probe_lengths: list[I64] = []
    try:
        for meta, candidates, probes in tqdm(
            results,
            total=len(tasks),
            desc=f"daemon cadence ({seasons.name})",
            disable=None if progress else True,
        ):
            p_event, site_scores = score_rows(modules, candidates, device)
            position = 0
            for entry in meta:
                n = len(entry["calls"])
                stars.append(
                    StarCalls(
                        **entry,
                        p_event=p_event[:, position : position + n],
                        site_scores=site_scores[:, position : position + n],
                    )
                )
                position += n
            if len(probes):
                probe_scores.append(score_rows(modules, probes, device)[1])
                probe_lengths.append(probes.lengths)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    n_models = len(modules)
    return stars, Probes(
        site_scores=np.concatenate(probe_scores, axis=1)
        if probe_scores
        else np.zeros((n_models, 0, 3)),
        has_data=np.concatenate(probe_lengths) > 0 if probe_lengths else np.zeros((0, 3), bool),
    )


# ----------------------------------------------------------------------------------- metrics

#: Lead times (days before the peak) at which event recall is reported.
LEADS: Final = (10.0, 5.0, 2.0, 0.0)
#: Bins of the peak's time after the star's first observation (days).
SEASON_BINS: Final = (
    (0.0, 10.0),
    (10.0, 20.0),
    (20.0, 40.0),
    (40.0, 80.0),
    (80.0, 160.0),
    (160.0, 400.0),
)
#: Bins of the baseline I magnitude.
MAG_BINS: Final = ((14.0, 16.0), (16.0, 17.5), (17.5, 19.0), (19.0, 21.0))
#: Bins of an event's peak excess in typical errors of one point (:attr:`StarCalls.peak_snr`).
SNR_BINS: Final = ((0.0, 10.0), (10.0, 20.0), (20.0, 50.0), (50.0, math.inf))
#: Days after the peak through which a triggered event should keep scoring as an event.
AFTER_PEAK_DAYS: Final = 20.0


def _mean_sd(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    return {
        "mean": float(finite.mean()) if len(finite) else math.nan,
        "sd": float(finite.std(ddof=1)) if len(finite) > 1 else math.nan,
        "values": [float(v) for v in array],
    }


def _fraction(mask: npt.NDArray[np.bool_]) -> float:
    return float(mask.mean()) if len(mask) else math.nan


def cadence_metrics(
    stars: Sequence[StarCalls],
    probes: Probes,
    thresholds: Sequence[float],
    confirm: int = 1,
    min_magnification: float = MIN_PEAK_MAGNIFICATION,
) -> dict[str, Any]:
    """The daemon's outcomes per model and their mean and sd over models (see
    ``model/README.md`` for the definitions); ``confirm`` and ``min_magnification`` (the
    daemon's default gate; 0: none) as in :meth:`StarCalls.alert_time`."""
    n_models = stars[0].p_event.shape[0] if stars else 0
    label = np.array([s.label for s in stars])
    subclass = np.array([s.subclass for s in stars])
    t_peak = np.array([s.t_peak for s in stars])
    first = np.array([s.first_data for s in stars])
    last = np.array([s.last_data for s in stars])
    mag = np.array([s.baseline_mag for s in stars])
    snr = np.array([s.peak_snr for s in stars])
    first_call = np.array([s.calls[0] if len(s.calls) else math.nan for s in stars])
    since_start = t_peak - first
    events = (label == "YES") & (t_peak >= first) & (t_peak <= last)
    per_model: list[dict[str, Any]] = []
    for m in range(n_models):
        result: dict[str, Any] = {}
        for threshold in thresholds:
            alert = np.array(
                [s.alert_time(m, threshold, confirm, min_magnification) for s in stars]
            )
            alerted = np.isfinite(alert)
            before = alerted & (alert <= t_peak)
            key = f"{threshold:g}"
            entry: dict[str, Any] = {
                "alerted_per_class": {
                    name: _fraction(alerted[label == name]) for name in ("YES", "MAYBE", "NO")
                },
                "alerted_per_subclass": {
                    name: _fraction(alerted[subclass == name]) for name in sorted(set(subclass))
                },
                "event_recall_by_lead": {
                    f"{lead:g}": _fraction(
                        (alerted & (alert <= t_peak - lead))[events & (since_start >= 20)]
                    )
                    for lead in LEADS
                },
                "event_recall_before_peak_t0_ge_20": _fraction(
                    before[events & (since_start >= 20)]
                ),
                "event_recall_before_peak_early": _fraction(
                    before[events & (since_start >= 10) & (since_start < 40)]
                ),
                "event_recall_before_peak_by_season_time": {
                    f"{a:g}-{b:g}": _fraction(
                        before[events & (since_start >= a) & (since_start < b)]
                    )
                    for a, b in SEASON_BINS
                },
                "event_recall_before_peak_by_mag": {
                    f"{a:g}-{b:g}": _fraction(before[events & (mag >= a) & (mag < b)])
                    for a, b in MAG_BINS
                },
                "event_recall_before_peak_by_snr": {
                    f"{a:g}-{b:g}": _fraction(
                        before[events & (since_start >= 20) & (snr >= a) & (snr < b)]
                    )
                    for a, b in SNR_BINS
                },
                "triggered_before_peak_recall": _fraction(
                    before[events & (since_start >= 20) & (first_call <= t_peak)]
                ),
                "triggered_before_peak_recall_early": _fraction(
                    before[
                        events & (since_start >= 10) & (since_start < 40) & (first_call <= t_peak)
                    ]
                ),
                "triggered_before_peak_recall_by_season_time": {
                    f"{a:g}-{b:g}": _fraction(
                        before[
                            events & (since_start >= a) & (since_start < b) & (first_call <= t_peak)
                        ]
                    )
                    for a, b in SEASON_BINS
                },
                "lead_days": [float(v) for v in (t_peak - alert)[events & before]],
            }
            result[key] = entry
        stay = []
        call_share = []
        for s in stars:
            if s.label != "YES" or not len(s.calls):
                continue
            window = s.calls <= s.t_peak + AFTER_PEAK_DAYS
            if not window.any():
                continue
            scores = s.p_event[m][window]
            stay.append(bool((scores >= 0.45).all()))
            call_share.append(float((scores >= 0.45).mean()))
        result["events_stay_events"] = _fraction(np.asarray(stay, dtype=bool))
        result["event_calls_at_least_045"] = float(np.mean(call_share)) if call_share else math.nan
        constant = probes.site_scores[m][probes.has_data]
        result["constant_site_scores_le_0.1"] = _fraction(constant <= 0.1)
        result["constant_site_scores_p99"] = (
            float(np.quantile(constant, 0.99)) if len(constant) else math.nan
        )
        per_model.append(result)
    return {
        "n_stars": len(stars),
        "n_events": int(events.sum()),
        "n_events_t0_ge_20": int((events & (since_start >= 20)).sum()),
        "n_events_early": int((events & (since_start >= 10) & (since_start < 40)).sum()),
        "n_per_subclass": {name: int((subclass == name).sum()) for name in sorted(set(subclass))},
        "n_calls": int(sum(len(s.calls) for s in stars)),
        "n_constant_probes": int(probes.has_data.sum()),
        "trigger_before_peak_t0_ge_20": _fraction(
            (first_call <= t_peak)[events & (since_start >= 20)]
        ),
        "trigger_before_peak_early": _fraction(
            (first_call <= t_peak)[events & (since_start >= 10) & (since_start < 40)]
        ),
        "n_events_by_season_time": {
            f"{a:g}-{b:g}": int((events & (since_start >= a) & (since_start < b)).sum())
            for a, b in SEASON_BINS
        },
        "trigger_before_peak_by_season_time": {
            f"{a:g}-{b:g}": _fraction(
                (first_call <= t_peak)[events & (since_start >= a) & (since_start < b)]
            )
            for a, b in SEASON_BINS
        },
        "trigger_before_peak_by_mag": {
            f"{a:g}-{b:g}": _fraction((first_call <= t_peak)[events & (mag >= a) & (mag < b)])
            for a, b in MAG_BINS
        },
        "n_events_by_snr": {
            f"{a:g}-{b:g}": int((events & (since_start >= 20) & (snr >= a) & (snr < b)).sum())
            for a, b in SNR_BINS
        },
        "trigger_before_peak_by_snr": {
            f"{a:g}-{b:g}": _fraction(
                (first_call <= t_peak)[events & (since_start >= 20) & (snr >= a) & (snr < b)]
            )
            for a, b in SNR_BINS
        },
        "per_model": per_model,
        "summary": summarise(per_model),
    }


def summarise(per_model: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over models of every number (lists of lead days are pooled)."""
    if not per_model:
        return {}

    def walk(items: Sequence[Any]) -> Any:
        head = items[0]
        if isinstance(head, dict):
            return {key: walk([item[key] for item in items]) for key in head}
        if isinstance(head, list):
            return [v for item in items for v in item]
        return _mean_sd([math.nan if v is None else float(v) for v in items])

    return dict(walk(list(per_model)))


# ----------------------------------------------------------------------------- persistence

_META_FIELDS: Final = (
    "season",
    "star_index",
    "star_id",
    "label",
    "subclass",
    "t_peak",
    "t_rise_start",
    "baseline_mag",
    "first_data",
    "last_data",
    "n_sites",
    "peak_snr",
)


def save_calls(stars: Sequence[StarCalls], probes: Probes, path: Path) -> None:
    """Every star's calls and scores in one ``.npz`` (for re-analysis without rescoring)."""
    counts = np.array([len(s.calls) for s in stars], dtype=np.int64)
    n_models = stars[0].p_event.shape[0] if stars else 0
    arrays: dict[str, npt.NDArray[Any]] = {
        name: np.array([getattr(s, name) for s in stars]) for name in _META_FIELDS
    }
    arrays["counts"] = counts
    arrays["calls"] = np.concatenate([s.calls for s in stars]) if stars else np.zeros(0)
    arrays["peak_magnification"] = (
        np.concatenate(
            [
                s.peak_magnification
                if s.peak_magnification is not None
                else np.full(len(s.calls), np.nan)
                for s in stars
            ]
        )
        if stars
        else np.zeros(0)
    )
    arrays["p_event"] = (
        np.concatenate([s.p_event for s in stars], axis=1) if stars else np.zeros((0, 0))
    )
    arrays["site_scores"] = (
        np.concatenate([s.site_scores for s in stars], axis=1)
        if stars
        else np.zeros((n_models, 0, 3))
    )
    arrays["probe_site_scores"] = probes.site_scores
    arrays["probe_has_data"] = probes.has_data
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def load_calls(path: Path) -> tuple[list[StarCalls], Probes]:
    """What :func:`save_calls` wrote."""
    with np.load(path) as npz:
        data = {name: npz[name] for name in npz.files}  # each npz[name] reads the file again
    bounds = np.concatenate([[0], np.cumsum(data["counts"])])
    stars = [
        StarCalls(
            **{name: data[name][i].item() for name in _META_FIELDS if name in data},
            calls=data["calls"][bounds[i] : bounds[i + 1]].copy(),
            peak_magnification=data["peak_magnification"][bounds[i] : bounds[i + 1]].copy()
            if "peak_magnification" in data
            else None,
            p_event=data["p_event"][:, bounds[i] : bounds[i + 1]].copy(),
            site_scores=data["site_scores"][:, bounds[i] : bounds[i + 1]].copy(),
        )
        for i in range(len(data["counts"]))
    ]
    return stars, Probes(data["probe_site_scores"], data["probe_has_data"])
