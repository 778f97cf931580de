"""Memory of the daemon's star store at survey scale: 1 000 000 stars in one process.

Run by hand from the repository root::

    python bench/bench_memory.py [--stars 1000000] [--points 20] [--full-stars 20] [--json PATH]

Parts, each in a fresh process so one part's heap does not pollute another's RSS:

- ``million``: a ``StarStore`` (RAM arena, default ``StoreConfig``) filled with ``--stars``
  stars x 3 sites x ``--points`` observations, in time order, by batches of 50 000 stars of one
  site and epoch; ``nbytes()`` per star and per observation held, and the process's VmRSS (and
  its peak, VmHWM) before and after the fill.
- ``full``: ``--full-stars`` stars filled past capacity (3 x 1500 points each, 1520 epochs):
  ``nbytes()`` per full star against the documented 3 x 1500 x 14 + 79 = 63 079 bytes, and
  what that makes for 1 M full stars.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from consumer.edge.photometry import Observations
from consumer.state.arena import RECORD_BYTES
from consumer.state.store import OVERHEAD_BYTES_PER_STAR, StarStore, StoreConfig

T0 = 2_460_000.0
CADENCE_DAYS = 0.02
CHUNK = 50_000  # stars per appended batch


def memory() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def frame(first: int, n: int, epoch: int, site: int, rng: np.random.Generator) -> Observations:
    """One site's observation of stars ``first .. first + n - 1`` at one epoch."""
    ones = np.ones(n)
    return Observations.from_columns(
        star_id=10**9 + np.arange(first, first + n),
        field=ones,
        chip=ones * 0,
        ra=ones * 268.0,
        dec=ones * -29.0,
        x=ones,
        y=ones,
        hjd=ones * (T0 + epoch * CADENCE_DAYS + site * 0.003),
        band=ones * 0,
        flux=rng.normal(1e4, 30.0, n),
        flux_err=ones * 30.0,
        sky=ones * 1000.0,
        fwhm=ones * 1.5,
        airmass=ones * 1.2,
        psf_quality=ones * 90.0,
    )


def fill(store: StarStore, stars: int, epochs: int) -> float:
    """Every star once per site and epoch, in time order; seconds taken."""
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    for epoch in range(epochs):
        for site in range(3):
            for first in range(0, stars, CHUNK):
                store.append(site, frame(first, min(CHUNK, stars - first), epoch, site, rng))
    return time.perf_counter() - start


def warm_up() -> None:
    """Load the compiled kernels (numba cache) before the first RSS reading."""
    store = StarStore(StoreConfig())
    fill(store, 10, 2)


def part_million(args: argparse.Namespace) -> dict[str, Any]:
    warm_up()
    before = memory()
    store = StarStore(StoreConfig())
    seconds = fill(store, args.stars, args.points)
    after = memory()
    held = 3 * args.points * len(store)
    assert store.counts(10**9) == (args.points,) * 3
    return {
        "stars": len(store),
        "observations_held": held,
        "fill_s": seconds,
        "fill_obs_per_s": held / seconds,
        "nbytes": store.nbytes(),
        "nbytes_per_star": store.nbytes() / len(store),
        "nbytes_per_observation": store.nbytes() / held,
        "free_records": store.free_records(),
        # The free-list array keeps the width it grew to when every star changed size class
        # in one batch (counted by nbytes); read here only to explain nbytes.
        "free_list_bytes_per_star": store.arena.free_list.nbytes / len(store),
        "rss_before": before["VmRSS"],
        "rss_after": after["VmRSS"],
        "rss_delta": after["VmRSS"] - before["VmRSS"],
        "rss_delta_per_star": (after["VmRSS"] - before["VmRSS"]) / len(store),
        "peak_rss": after["VmHWM"],
    }


def part_full(args: argparse.Namespace) -> dict[str, Any]:
    warm_up()
    store = StarStore(StoreConfig())
    fill(store, args.full_stars, 1520)
    capacity = store.config.capacity_per_site
    documented = 3 * capacity * RECORD_BYTES + OVERHEAD_BYTES_PER_STAR
    as_filled = store.nbytes() / len(store)
    free_records = store.free_records()
    # A small store is not compacted automatically (under 1 MiB free); a large one would be.
    store.compact()
    per_star = store.nbytes() / len(store)
    # The free-list array is a fixed >= 48 KiB (diagnostic read), large against a few stars.
    free_list = store.arena.free_list.nbytes
    held_per_star = (store.nbytes() - free_list) / len(store)
    return {
        "stars": len(store),
        "counts": store.counts(10**9),
        "nbytes_per_star_as_filled": as_filled,
        "free_records_as_filled": free_records,
        "nbytes_per_star": per_star,
        "free_list_bytes_per_star": free_list / len(store),
        "nbytes_per_star_without_free_list": held_per_star,
        "documented_bytes_per_star": documented,
        "one_million_full_stars_gb": held_per_star * 1e6 / 1e9,
    }


PARTS = {"million": part_million, "full": part_full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--stars", type=int, default=1_000_000)
    parser.add_argument("--points", type=int, default=20, help="observations per star and site")
    parser.add_argument("--full-stars", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    if args.part != "all":
        print(json.dumps(PARTS[args.part](args), default=float))
        return
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, numpy {np.__version__}",
        flush=True,
    )
    sizes = ["--stars", str(args.stars), "--points", str(args.points)]
    sizes += ["--full-stars", str(args.full_stars)]
    results = {}
    for part in PARTS:
        command = [sys.executable, __file__, "--part", part, *sizes]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[part] = json.loads(output.strip().splitlines()[-1])
        print(f"{part}: {json.dumps(results[part])}", flush=True)
    million, full = results["million"], results["full"]
    print(
        f"{million['stars']:,} stars x 3 sites x {args.points} points: "
        f"nbytes {million['nbytes'] / 1e6:,.0f} MB ({million['nbytes_per_star']:,.0f} B/star, "
        f"{million['nbytes_per_observation']:.1f} B/observation), "
        f"RSS +{million['rss_delta'] / 1e6:,.0f} MB ({million['rss_delta_per_star']:,.0f} B/star),"
        f" peak RSS {million['peak_rss'] / 1e6:,.0f} MB, fill {million['fill_s']:.1f} s, "
        f"free-list array {million['free_list_bytes_per_star']:.0f} B/star\n"
        f"full star (3 x 1500): nbytes {full['nbytes_per_star_as_filled']:,.0f} B as filled, "
        f"{full['nbytes_per_star']:,.0f} B compacted, "
        f"{full['nbytes_per_star_without_free_list']:,.0f} B without the free-list array "
        f"(documented {full['documented_bytes_per_star']:,}) -> 1 M full stars "
        f"{full['one_million_full_stars_gb']:.1f} GB"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
