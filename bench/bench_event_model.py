"""Benchmark: the event model per alert (point-lens fit with its errors and the peak interval,
then the anomaly test), one core.

Light curves: the events of a simulated season (seed 3001, the first ``--stars`` stars) as the
daemon holds them at three moments: 3 days before the peak (rising), at the peak and 20 days
after it; plus worst cases of 3 x 1500 points (full buffers of a high-cadence star). Same-run
baselines: the AlertFinder's one-star ``evaluate`` on the same light curves (what every
candidate already costs), and one objective evaluation (profiled chi2) in vectorised numpy
against the compiled kernel.

Times are CPU time of the benchmarking thread (:func:`best_of`), pinned to one core.

``python bench/bench_event_model.py [--stars 600] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from consumer.alertfinder.api import HIGH_CADENCE, evaluate
from consumer.pointlens import kernels
from consumer.pointlens.anomaly import find_anomaly
from consumer.pointlens.fit import Datasets, fit, magnification, make_datasets, star_datasets
from model.simulate import simulate_star
from model.simulation.calendar import season_config

F64 = npt.NDArray[np.float64]


def light_curves(stars: int) -> list[tuple[str, Datasets]]:
    config = season_config(3001, stars)
    out = []
    for index in range(stars):
        star, label = simulate_star(config, index)
        if label.label != "YES":
            continue
        t0 = label.params["t0"]
        for name, as_of in (("rising", t0 - 3.0), ("peak", t0), ("after", t0 + 20.0)):
            data = star_datasets(star, as_of=as_of)
            if len(data) >= 50:
                out.append((name, data))
    rng = np.random.default_rng(1)
    for _ in range(20):  # full buffers: 3 sites x 1500 points, 4 per hour over ~16 nights
        t0 = 2_461_150.0
        parts = []
        for site in ("CTIO", "SAAO", "SSO"):
            t = np.sort(t0 - 14.0 + rng.uniform(0.0, 15.0, 1500))
            err = rng.uniform(20.0, 40.0, 1500)
            flux = 900.0 * magnification(np.hypot(0.1, (t - t0) / 25.0)) + 30.0
            parts.append((site, 2, t, flux + 1.2 * err * rng.standard_normal(1500), err))
        out.append(("full 3x1500", make_datasets(parts)))
    return out


def best_of(repeat: int, function: Callable[[], Any]) -> float:
    """Least CPU time of this thread over ``repeat`` calls (seconds): the cost on one core,
    which wall time overstates on a machine shared with other work (the kernels are
    single-threaded)."""
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        function()
        times.append(time.thread_time() - started)
    return min(times)


def numpy_objective(data: Datasets, p: F64, weight: F64) -> float:
    """The profiled chi2 in vectorised numpy (the compiled kernel's baseline)."""
    u0, tE = math.exp(p[1]), math.exp(p[2])
    amp = magnification(np.sqrt(u0 * u0 + ((data.t - p[0]) / tE) ** 2))
    dataset = data.dataset_of()
    n_sets = len(data.sites)
    w = np.bincount(dataset, weight, n_sets)
    mean_a = np.bincount(dataset, weight * amp, n_sets) / w
    mean_f = np.bincount(dataset, weight * data.flux, n_sets) / w
    da, df = amp - mean_a[dataset], data.flux - mean_f[dataset]
    sxx = np.bincount(dataset, weight * da * da, n_sets)
    sxy = np.bincount(dataset, weight * da * df, n_sets)
    syy = np.bincount(dataset, weight * df * df, n_sets)
    return float(np.sum(syy - sxy * sxy / sxx))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    curves = light_curves(args.stars)
    fit(curves[0][1])  # compile (cached on disk after the first run)
    print(f"{len(curves)} light curves; best of {args.repeat}; CPU ms per light curve")
    print(f"{'moment':<12} {'n':>4} {'points':>7} {'fit':>8} {'anomaly':>8} {'p95 fit':>8} "
          f"{'max fit':>8} {'AlertFinder':>11}")  # fmt: skip
    for moment in ("rising", "peak", "after", "full 3x1500"):
        chosen = [d for name, d in curves if name == moment]
        fits, anomalies, finder = [], [], []
        for data in chosen:
            fits.append(best_of(args.repeat, partial(fit, data)))
            model = fit(data)
            anomalies.append(best_of(args.repeat, partial(find_anomaly, data, model)))
            sets = [
                (data.t[a:b], data.flux[a:b], data.flux_err[a:b])
                for a, b in zip(data.offsets[:-1], data.offsets[1:], strict=True)
            ]
            finder.append(best_of(args.repeat, partial(evaluate, sets, **_rule())))
        points = np.median([len(d) for d in chosen])
        print(
            f"{moment:<12} {len(chosen):>4} {points:>7.0f} {1e3 * np.mean(fits):>8.2f} "
            f"{1e3 * np.mean(anomalies):>8.2f} {1e3 * np.percentile(fits, 95):>8.2f} "
            f"{1e3 * np.max(fits):>8.2f} {1e3 * np.mean(finder):>11.2f}"
        )
    data = next(d for name, d in curves if name == "full 3x1500")
    weight = data.flux_err**-2.0
    p = np.array([data.t.max() + 1.0, math.log(0.1), math.log(25.0)])
    amp, fs, fb = np.empty(len(data)), np.empty(3), np.empty(3)
    compiled = best_of(50, lambda: kernels.linear_fit(
        data.t, data.flux, weight, data.offsets, p, amp, fs, fb))  # fmt: skip
    vectorised = best_of(50, lambda: numpy_objective(data, p, weight))
    print(
        f"one objective evaluation on 4500 points: compiled {1e6 * compiled:.1f} us, "
        f"numpy {1e6 * vectorised:.1f} us (x{vectorised / compiled:.1f})"
    )


def _rule() -> dict[str, Any]:
    rule = HIGH_CADENCE
    return {"k": rule.k, "n": rule.n, "n_sigma": rule.n_sigma, "dchi2_min": rule.dchi2_min}


if __name__ == "__main__":
    main()
