"""Benchmark of the daemon's star store (:mod:`consumer.state.store`): speed, memory, checkpoints.

Run by hand from the repository root::

    python bench/bench_state.py [--stars 4000] [--full-stars 2000] [--rss-stars 1000000]

Parts (each memory figure in a fresh subprocess, so one part's heap does not pollute another):

- ``append``: a stream of frames, one batch per site and chip of ``--chip`` stars with one
  observation each (like a decoded photometry message), ``--epochs`` epochs at a 0.02-day
  cadence, so buffers fill from empty past the 1500-point capacity; in time order, and with 5 %
  of the rows 0.1-5 days late. The naive baseline (a Python dict of per-star, per-site lists,
  appended observation by observation with a set for duplicates and ``bisect.insort`` for late
  rows) runs in the same process on the first ``--naive-epochs`` epochs, compared with the
  store's time on the same epochs. Also ``to_trigger_arrays`` (and ``rising_batch`` on its
  output) for 2000 stars at ~900 points per site, and bytes per star.
- ``rss``: ``--rss-stars`` stars x 3 sites x 4 observations, in RAM and memory-mapped; then a
  checkpoint and a restore of that store.
- ``full``: ``--full-stars`` stars at full capacity (3 x 1500), RSS per star extrapolated to
  1 M stars, checkpoint and restore.
- ``quantisation``: AlertFinder on simulated KMTNet light curves (``model.simulate``), original
  against quantised (what the store gives back): relative dchi2 difference, flag changes.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from consumer.alertfinder.api import HIGH_CADENCE, evaluate_batch, rising_batch
from consumer.edge.photometry import Observations
from consumer.state.encoding import quantise
from consumer.state.store import StarStore, StoreConfig

T0 = 2_460_000.0
#: One dataset: t (days), flux, flux_err.
Columns = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]
CADENCE_DAYS = 0.02


def rss_bytes() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process, bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def frame_batch(
    first_star: int,
    n: int,
    hjd: float,
    rng: np.random.Generator,
    late_fraction: float,
    late_days: float = 5.0,
) -> Observations:
    """One site's frame of stars ``first_star .. first_star + n - 1``, one observation each;
    ``late_fraction`` of them up to ``late_days`` late."""
    times = np.full(n, hjd)
    if late_fraction:
        late = rng.random(n) < late_fraction
        times[late] -= rng.uniform(0.1, late_days, int(late.sum()))
    zeros = np.zeros(n)
    return Observations.from_columns(
        star_id=np.arange(first_star, first_star + n),
        field=np.full(n, 1),
        chip=zeros,
        ra=zeros,
        dec=zeros,
        x=zeros,
        y=zeros,
        hjd=times,
        band=zeros,
        flux=rng.normal(1e4, 30.0, n),
        flux_err=np.full(n, 30.0),
        sky=np.full(n, 1000.0),
        fwhm=np.full(n, 1.5),
        airmass=np.full(n, 1.2),
        psf_quality=np.full(n, 90.0),
    )


def stream(
    n_stars: int, chip: int, epochs: range, late_fraction: float, seed: int
) -> Any:  # Iterator[(epoch, site, Observations)]
    rng = np.random.default_rng(seed)
    for epoch in epochs:
        for site in range(3):
            hjd = T0 + epoch * CADENCE_DAYS + site * 0.003
            for first in range(0, n_stars, chip):
                yield (
                    epoch,
                    site,
                    frame_batch(first, min(chip, n_stars - first), hjd, rng, late_fraction),
                )


class NaiveStore:
    """Baseline: per (star, site) a sorted list of times, a list of records and a set."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buffers: dict[tuple[int, int], tuple[list[float], list[tuple[float, ...]], set[float]]]
        self.buffers = {}

    def append(self, site: int, obs: Observations) -> int:
        appended = 0
        columns = zip(
            obs.star_id.tolist(),
            np.rint((obs.hjd - 2_450_000.0) * 86_400.0).tolist(),
            obs.flux.tolist(),
            obs.flux_err.tolist(),
            obs.sky.tolist(),
            obs.fwhm.tolist(),
            obs.airmass.tolist(),
            obs.psf_quality.tolist(),
            obs.field.tolist(),
            strict=True,
        )
        for star, t, *record in columns:
            key = (star, site)
            buffer = self.buffers.get(key)
            if buffer is None:
                buffer = self.buffers[key] = ([], [], set())
            times, records, seen = buffer
            if t in seen:
                continue
            if not times or t > times[-1]:
                times.append(t)
                records.append(tuple(record))
            else:
                index = bisect.bisect_left(times, t)
                times.insert(index, t)
                records.insert(index, tuple(record))
            seen.add(t)
            appended += 1
            if len(times) > self.capacity:
                seen.discard(times.pop(0))
                records.pop(0)
        return appended


def warm_up() -> None:
    """Load the compiled kernels (numba cache) outside the timed regions."""
    store = StarStore(StoreConfig())
    batch = frame_batch(0, 10, T0, np.random.default_rng(0), 0.0)
    store.append(0, batch)
    store.append(0, batch)
    trigger = store.to_trigger_arrays([0, 1])
    rule = HIGH_CADENCE
    evaluate_batch(
        trigger.t,
        trigger.flux,
        trigger.flux_err,
        trigger.dataset_offsets,
        trigger.star_offsets,
        k=rule.k,
        n=rule.n,
        n_sigma=rule.n_sigma,
        dchi2_min=rule.dchi2_min,
    )


def part_append(args: argparse.Namespace) -> dict[str, Any]:
    warm_up()
    out: dict[str, Any] = {}
    for label, late in (("in_order", 0.0), ("late_5pct", 0.05)):
        store = StarStore(StoreConfig())
        seconds = np.zeros(args.epochs)
        rows = np.zeros(args.epochs, dtype=np.int64)
        trigger: dict[str, float] = {}
        for epoch, site, batch in stream(args.stars, args.chip, range(args.epochs), late, 1):
            start = time.perf_counter()
            store.append(site, batch)
            seconds[epoch] += time.perf_counter() - start
            rows[epoch] += len(batch)
            if epoch == 900 and site == 2 and batch.star_id[-1] == args.stars - 1 and not late:
                trigger = measure_trigger(store, args.stars)
                out["bytes_per_star_900"] = store.nbytes() / len(store)
                out["counts_900"] = store.counts(0)
        out[label] = {
            "obs_per_s": rows.sum() / seconds.sum(),
            "obs_per_s_filling": rows[:1000].sum() / seconds[:1000].sum(),
            "obs_per_s_full": rows[1500:].sum() / seconds[1500:].sum(),
            "obs": int(rows.sum()),
            "seconds": float(seconds.sum()),
            "store_obs_per_s_naive_epochs": rows[: args.naive_epochs].sum()
            / seconds[: args.naive_epochs].sum(),
        }
        if trigger:
            out["trigger"] = trigger
        if not late:
            out["bytes_per_star_end"] = store.nbytes() / len(store)
            out["counts_end"] = store.counts(0)
        del store
        naive = NaiveStore(1500)
        naive_seconds = 0.0
        naive_rows = 0
        for _, site, batch in stream(args.stars, args.chip, range(args.naive_epochs), late, 1):
            start = time.perf_counter()
            naive.append(site, batch)
            naive_seconds += time.perf_counter() - start
            naive_rows += len(batch)
        out[label]["naive_obs_per_s"] = naive_rows / naive_seconds
        out[label]["ratio_vs_naive"] = (
            out[label]["store_obs_per_s_naive_epochs"] / out[label]["naive_obs_per_s"]
        )
    return out


def measure_trigger(store: StarStore, n_stars: int) -> dict[str, float]:
    ids = np.random.default_rng(2).choice(n_stars, 2000, replace=False)
    best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        trigger = store.to_trigger_arrays(ids)
        best = min(best, time.perf_counter() - start)
    rule = HIGH_CADENCE
    args = (trigger.t, trigger.flux, trigger.flux_err, trigger.dataset_offsets)
    start = time.perf_counter()
    batch = evaluate_batch(
        *args,
        trigger.star_offsets,
        k=rule.k,
        n=rule.n,
        n_sigma=rule.n_sigma,
        dchi2_min=rule.dchi2_min,
    )
    evaluate_s = time.perf_counter() - start
    last_best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        cut = store.to_trigger_arrays(ids, last=rule.n)
        last_best = min(last_best, time.perf_counter() - start)
    rising_best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        rising_batch(
            cut.t,
            cut.flux,
            cut.flux_err,
            cut.dataset_offsets,
            cut.star_offsets,
            k=rule.k,
            n=rule.n,
            n_sigma=rule.n_sigma,
            baseline=batch.baseline,
            check=False,
        )
        rising_best = min(rising_best, time.perf_counter() - start)
    return {
        "to_trigger_us_per_star": best / len(ids) * 1e6,
        "points_per_star": len(trigger.t) / len(ids),
        "to_trigger_ns_per_point": best / len(trigger.t) * 1e9,
        "to_trigger_last_n_us_per_star": last_best / len(ids) * 1e6,
        "rising_cached_baseline_us_per_star": rising_best / len(ids) * 1e6,
        "evaluate_us_per_star": evaluate_s / len(ids) * 1e6,
    }


def fill(store: StarStore, n_stars: int, chip: int, epochs: int) -> float:
    start = time.perf_counter()
    for _, site, batch in stream(n_stars, chip, range(epochs), 0.0, 3):
        store.append(site, batch)
    return time.perf_counter() - start


def checkpoint_round_trip(store: StarStore, config: StoreConfig) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="bench-state-ckpt-"))
    try:
        start = time.perf_counter()
        path = store.checkpoint(directory, {"photometry[0]": 123})
        checkpoint_s = time.perf_counter() - start
        size = path.stat().st_size
        start = time.perf_counter()
        restored = StarStore.restore(directory, config)
        restore_s = time.perf_counter() - start
        assert restored is not None
        assert len(restored[0]) == len(store)
    finally:
        shutil.rmtree(directory)
    return {"checkpoint_s": checkpoint_s, "restore_s": restore_s, "file_mb": size / 1e6}


def part_rss(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bench-state-arena-")) if args.memmap else None
    try:
        config = StoreConfig(directory=directory)
        warm_up()
        before = rss_bytes()
        store = StarStore(config)
        seconds = fill(store, args.rss_stars, args.chip, 4)
        after = rss_bytes()
        out: dict[str, Any] = {
            "stars": len(store),
            "obs": 4 * 3 * len(store),
            "fill_s": seconds,
            "nbytes": store.nbytes(),
            **{f"delta_{k}": after[k] - before[k] for k in after},
        }
        if not args.memmap:
            out |= checkpoint_round_trip(store, StoreConfig())
        return out
    finally:
        if directory is not None:
            shutil.rmtree(directory)


def part_full(args: argparse.Namespace) -> dict[str, Any]:
    warm_up()
    before = rss_bytes()
    store = StarStore(StoreConfig())
    seconds = fill(store, args.full_stars, args.chip, 1520)
    after = rss_bytes()
    return {
        "stars": len(store),
        "counts": store.counts(0),
        "fill_s": seconds,
        "nbytes_per_star": store.nbytes() / len(store),
        "rss_per_star": (after["VmRSS"] - before["VmRSS"]) / len(store),
        **checkpoint_round_trip(store, StoreConfig()),
    }


def part_quantisation(args: argparse.Namespace) -> dict[str, Any]:
    from model.simulate import SimulationConfig, simulate_star

    config = SimulationConfig(n_stars=args.sim_stars, seed=7)
    original: list[list[Columns]] = []
    quantised: list[list[Columns]] = []
    for index in range(args.sim_stars):
        star, _ = simulate_star(config, index)
        mine: list[Columns] = []
        theirs: list[Columns] = []
        for dataset in star.datasets:
            keep = (
                (dataset.band == 0)
                & np.isfinite(dataset.flux)
                & np.isfinite(dataset.flux_err)
                & (dataset.flux_err > 0)
            )
            if not keep.any():
                continue
            n = int(keep.sum())
            zeros = np.zeros(n)
            obs = Observations.from_columns(
                star_id=np.zeros(n),
                field=zeros,
                chip=zeros,
                ra=zeros,
                dec=zeros,
                x=zeros,
                y=zeros,
                hjd=dataset.hjd[keep],
                band=zeros,
                flux=dataset.flux[keep],
                flux_err=dataset.flux_err[keep],
                sky=dataset.sky[keep],
                fwhm=dataset.fwhm[keep],
                airmass=dataset.airmass[keep],
                psf_quality=dataset.psf_quality[keep],
            ).take(slice(-1500, None))  # the store's window (per site; here per site-field)
            q = quantise(obs)
            mine.append((obs.hjd, obs.flux, obs.flux_err))
            theirs.append((q.hjd, q.flux, q.flux_err))
        original.append(mine)
        quantised.append(theirs)
    results = [evaluate_csr(stars) for stars in (original, quantised)]
    dchi2_a, dchi2_b = results[0].dchi2, results[1].dchi2
    scale = np.maximum(np.abs(dchi2_a), 1.0)
    relative = np.abs(dchi2_b - dchi2_a) / scale
    return {
        "stars": args.sim_stars,
        "points": int(sum(len(d[0]) for s in original for d in s)),
        "triggered": int(results[0].triggered.sum()),
        "flag_changes": int((results[0].triggered != results[1].triggered).sum()),
        "rising_changes": int((results[0].passed_rising != results[1].passed_rising).sum()),
        "dchi2_rel_median": float(np.median(relative)),
        "dchi2_rel_p99": float(np.quantile(relative, 0.99)),
        "dchi2_rel_max": float(relative.max()),
        "dchi2_rel_max_triggered": float(relative[results[0].triggered].max())
        if results[0].triggered.any()
        else 0.0,
    }


def evaluate_csr(stars: list[list[Columns]]) -> Any:
    columns = [d for star in stars for d in star]
    dataset_offsets = np.r_[0, np.cumsum([len(d[0]) for d in columns])]
    star_offsets = np.r_[0, np.cumsum([len(star) for star in stars])]
    rule = HIGH_CADENCE
    return evaluate_batch(
        np.concatenate([d[0] for d in columns]),
        np.concatenate([d[1] for d in columns]),
        np.concatenate([d[2] for d in columns]),
        dataset_offsets,
        star_offsets,
        k=rule.k,
        n=rule.n,
        n_sigma=rule.n_sigma,
        dchi2_min=rule.dchi2_min,
    )


PARTS = {
    "append": part_append,
    "rss": part_rss,
    "full": part_full,
    "quantisation": part_quantisation,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--stars", type=int, default=4_000)
    parser.add_argument("--chip", type=int, default=2_000, help="stars per batch")
    parser.add_argument("--epochs", type=int, default=1_600)
    parser.add_argument("--naive-epochs", type=int, default=60)
    parser.add_argument("--rss-stars", type=int, default=1_000_000)
    parser.add_argument("--full-stars", type=int, default=2_000)
    parser.add_argument("--sim-stars", type=int, default=300)
    parser.add_argument("--memmap", action="store_true", help="rss part: memory-mapped arena")
    args = parser.parse_args()
    if args.part != "all":
        print(json.dumps(PARTS[args.part](args), default=float))
        return
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, numpy {np.__version__}"
    )
    runs = [
        ("append", []),
        ("rss", []),
        ("rss", ["--memmap"]),
        ("full", []),
        ("quantisation", []),
    ]
    passed = [a for a in sys.argv[1:] if not a.startswith("--part")]
    for part, extra in runs:
        command = [sys.executable, __file__, "--part", part, *passed, *extra]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        print(f"{part}{' ' + ' '.join(extra) if extra else ''}: {output.strip()}", flush=True)


if __name__ == "__main__":
    main()
