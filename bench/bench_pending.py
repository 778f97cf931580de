"""Benchmark of partial merges of a two-tier store's pending rows (``StarStore.merge_pending``
of a few stars, :meth:`consumer.state.tiers.HotTier.take_pending`), on a workload shaped like
the daemon's: windows that append a frame of every star at each site (5 % of rows late), each
followed by a few partial merges of 1-10 % of the stars (stale medians, candidates) and many of
one star each (the event model reads followed stars one at a time), so the queue grows between
full merges as it does in the daemon.

Run by hand from the repository root::

    python bench/bench_pending.py [--stars 10000 100000] [--windows 12] [--merges 4]
        [--singles 200] [--baseline DIR]

``--baseline DIR`` runs the same workload, same seed, in a subprocess importing ``consumer``
from ``DIR`` (a checkout of another commit) right after this one, and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_state import frame_batch

from consumer.edge.photometry import Observations
from consumer.state.store import StarStore, StoreConfig

T0 = 2_460_000.5


def frame(n_stars: int, hjd: float, rng: np.random.Generator) -> Observations:
    """One site's frame of stars ``0 .. n_stars - 1``, one observation each, 5 % up to 2 d
    late."""
    return frame_batch(0, n_stars, hjd, rng, 0.05, late_days=2.0)


def run(n_stars: int, windows: int, merges: int, singles: int, seed: int) -> dict[str, Any]:
    """Seconds spent in appends and in partial merges over the whole workload."""
    rng = np.random.default_rng(seed)
    append_s = merge_s = 0.0
    merged_stars = 0
    with tempfile.TemporaryDirectory() as folder:
        store = StarStore(StoreConfig(directory=Path(folder), hot_points_per_site=10))
        for window in range(windows):
            for site in range(3):
                obs = frame(n_stars, T0 + 0.02 * window + 0.003 * site, rng)
                start = time.perf_counter()
                store.append(site, obs)
                append_s += time.perf_counter() - start
            sizes = [int(rng.uniform(0.01, 0.10) * n_stars) for _ in range(merges)]
            for size in sizes + [1] * singles:
                slots = rng.choice(n_stars, size, replace=False).astype(np.int64)
                merged_stars += len(slots)
                start = time.perf_counter()
                store.merge_pending(slots)
                merge_s += time.perf_counter() - start
        assert store.hot is not None
        left = store.hot.pending_rows
    return {
        "stars": n_stars,
        "windows": windows,
        "partial_merges": windows * (merges + singles),
        "stars_merged": merged_stars,
        "pending_rows_left": left,
        "append_s": round(append_s, 3),
        "partial_merge_s": round(merge_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stars", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--merges", type=int, default=4, help="merges of 1-10 %% a window")
    parser.add_argument("--singles", type=int, default=200, help="one-star merges a window")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="checkout to compare with")
    parser.add_argument("--json", action="store_true", help="one JSON line per size, no ratio")
    args = parser.parse_args()
    for n_stars in args.stars:
        result = run(n_stars, args.windows, args.merges, args.singles, args.seed)
        if args.json or args.baseline is None:
            print(json.dumps(result), flush=True)
            continue
        command = [sys.executable, __file__, "--json", "--stars", str(n_stars)]
        command += ["--windows", str(args.windows), "--merges", str(args.merges)]
        command += ["--singles", str(args.singles)]
        command += ["--seed", str(args.seed)]
        env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
        line = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        baseline = json.loads(line.stdout.strip().splitlines()[-1])
        ratio = baseline["partial_merge_s"] / max(result["partial_merge_s"], 1e-9)
        print(json.dumps({"this": result, "baseline": baseline, "speedup": round(ratio, 1)}))


if __name__ == "__main__":
    main()
