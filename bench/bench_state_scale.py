"""Per-star state at survey scale: one store of 10^5 .. 10^7 stars through a realistic night.

Run by hand from the repository root (each size in a fresh process, so RSS is its own)::

    python bench/bench_state_scale.py --stars 100000 1000000 10000000 --layout ram \
        [--nights 2] [--per-night 8] [--directory /tmp/scale-bench] [--json PATH]

What one size does, with the product's own code (:class:`consumer.state.store.StarStore` and
:class:`consumer.pipeline.trigger.TriggerStage`, default settings):

- **nights**: ``--nights`` nights, each ``--per-night`` epochs per site; an epoch is one
  observation of every star at one site (sites 0.01 d apart, epochs 0.1 d apart), appended in
  batches of ``--batch`` rows sorted by star as the decoder hands them over. Star ``i`` has one
  field tag (10 % in a high-cadence field, rule 5 of 5; the rest low cadence, 10 of 10), a
  constant flux ~ N(10^4, 10^3) with Gaussian noise of its flux error (30), and
  ``--rising-fraction`` of the stars (events, variables and artefacts alike) rise by 0.5
  sigma per epoch through the last night. With the default short history (16 points per
  site, size class 16, chosen so that 10^7 stars fit this machine's RAM and disk) only the
  high-cadence risers can pass (5 of 5 above the median; 10 of 10 needs > 20 points a site).
- **rising test** after each night on every star (:meth:`TriggerStage.rising`, cached medians
  refreshed as the daemon refreshes them), in chunks of ``--batch`` stars; with the short
  history every cache is stale after a night (more than 10 % new points), so this is the
  test *with* every median recomputed from the full buffers; then a second pass, every cache
  fresh, the test as it runs between refreshes (``rising_fresh``).
- **candidate fetch**: the whole light curve of one passer (:meth:`StarStore.datasets`, what
  LensNet and the alert read) for up to 2 000 passers, one call each: p50 / p99 latency.
- **checkpoint** to ``--directory`` and **restore** from it (after the store is dropped).

Reported: ``VmRSS`` with its anonymous and file-backed parts (``RssAnon``, ``RssFile``), peak
``VmHWM``, ``nbytes`` per star, bytes on disk per star (arena files and checkpoint), bytes the
process wrote (``/proc/self/io`` ``write_bytes``), ingest observations/s, rising-test stars/s,
and the decisions (passers) so that layouts can be compared on the same input.

``--layout ram`` is one tier, the arena in anonymous memory (the daemon's default before
issue 21); ``mmap`` one tier, the same arena in memory-mapped files under ``--directory``;
``two`` the two tiers of :mod:`consumer.state.tiers` (hot tails of ``--hot-points`` in RAM, the
arena on disk; the daemon's default since issue 21). RAM outside the page cache is
``VmRSS - RssFile`` (anonymous plus shared anonymous memory).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import mmap
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from consumer.edge.photometry import Observations
from consumer.pipeline.trigger import TriggerStage
from consumer.settings import TriggerSettings
from consumer.state.store import StarStore, StoreConfig

T0 = 2_460_000.5  # HJD of the first night's first epoch
EPOCH_DAYS = 0.1
SITE_DAYS = 0.01
FLUX_ERR = 30.0
FIRST_ID = 10**9
LAYOUTS = ("ram", "mmap", "two")


def memory() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem, VmHWM of this process, bytes (an arena in RAM is
    an anonymous shared mapping: RssShmem)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def written_bytes() -> int:
    """Bytes this process caused to be written to storage so far (``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (sparse files count what they hold)."""
    if not path.exists():
        return 0
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


class Field:
    """The simulated field: per-star constants and one epoch's observations of a star range."""

    def __init__(self, stars: int, rising_fraction: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.stars = stars
        high = rng.random(stars) < 0.1
        self.field = np.where(high, 1, 4 + (np.arange(stars) // 100_000) % 16).astype(np.int16)
        self.base = rng.normal(1e4, 1e3, stars)
        self.rising = rng.random(stars) < rising_fraction
        self.seed = seed

    def epoch(
        self, first: int, stop: int, night: int, epoch: int, site: int, nights: int, per_night: int
    ) -> Observations:
        """Site ``site``'s observation of stars ``first:stop`` at one epoch of one night."""
        n = stop - first
        rng = np.random.default_rng((self.seed, night, epoch, site, first))
        flux = self.base[first:stop] + rng.normal(0.0, FLUX_ERR, n)
        if night == nights - 1:  # the risers climb through the last night
            step = epoch + 1
            flux += np.where(self.rising[first:stop], 0.5 * FLUX_ERR * step * (1 + site), 0.0)
        ones = np.ones(n)
        hjd = T0 + night + epoch * EPOCH_DAYS + site * SITE_DAYS
        return Observations.from_columns(
            star_id=FIRST_ID + np.arange(first, stop),
            field=self.field[first:stop],
            chip=ones * 0,
            ra=ones * 268.0,
            dec=ones * -29.0,
            x=ones * 100.0,
            y=ones * 200.0,
            hjd=ones * hjd,
            band=ones * 0,
            flux=flux,
            flux_err=ones * FLUX_ERR,
            sky=ones * 1000.0,
            fwhm=ones * 1.5,
            airmass=ones * 1.2,
            psf_quality=ones * 90.0,
        )


def evict(paths: list[Path]) -> None:
    """Drop the (clean) page-cache pages of ``paths``: the next reads go to the disk."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def unmap_pages(store: StarStore) -> None:
    """Drop this process's mappings of a memory-mapped arena's pages (the data stays in the
    files), so that :func:`evict` can drop them from the page cache."""
    for column in store.arena.columns.values():
        handle = getattr(column, "_mmap", None)
        if handle is not None:
            handle.madvise(mmap.MADV_DONTNEED)


def cold_cache(
    store: StarStore, directory: Path, passers: npt.NDArray[np.int64], stage: TriggerStage
) -> dict[str, Any]:
    """A memory-mapped arena read from the disk rather than the page cache: the whole light
    curve of up to 2 000 passers one by one, then the rising test on 10 000 random stars."""
    store.flush()
    files = sorted((directory / "arena").glob("arena-*.bin"))
    unmap_pages(store)
    evict(files)
    fetch_ms = []
    for star in passers[:2000]:
        start = time.perf_counter()
        store.datasets(np.array([star]))
        fetch_ms.append((time.perf_counter() - start) * 1e3)
    unmap_pages(store)
    evict(files)
    rng = np.random.default_rng(3)
    sample = np.unique(rng.choice(store.star_ids, 10_000, replace=False))
    start = time.perf_counter()
    stage.rising(store, sample)
    rising_s = time.perf_counter() - start
    return {
        "fetch_ms_p50": float(np.percentile(fetch_ms, 50)) if fetch_ms else None,
        "fetch_ms_p99": float(np.percentile(fetch_ms, 99)) if fetch_ms else None,
        "rising_stars_per_s": len(sample) / rising_s,
        "rss_after": memory(),
    }


def log_alternative(directory: Path, stars: int, per_night: int) -> dict[str, Any]:
    """The other cold-tier design's write side, as a loop in this benchmark (not product
    code): one night's new records (14 bytes each, plus a 4-byte star row) appended to one
    per-partition log file in 8 MiB writes, then fsync; and the disk's random 4 KiB read
    latency with the page cache dropped (what each run of a star costs a log-structured
    fetch)."""
    rng = np.random.default_rng(5)
    record = np.dtype(
        [
            ("row", "<u4"),
            ("t", "<u4"),
            ("flux", "<f4"),
            ("ferr", "<u2"),
            ("sky", "u1"),
            ("fwhm", "u1"),
            ("airmass", "u1"),
            ("psf", "u1"),
        ]
    )
    night = np.zeros(3 * per_night * stars, dtype=record)
    night["row"] = np.tile(np.arange(stars, dtype=np.uint32), 3 * per_night)
    night["flux"] = rng.normal(1e4, 30.0, len(night))
    raw = night.view(np.uint8)
    path = directory / "log-alternative.bin"
    chunk = 8 << 20
    start = time.perf_counter()
    with path.open("wb") as handle:
        for offset in range(0, len(raw), chunk):
            handle.write(raw[offset : offset + chunk].data)
        handle.flush()
        os.fsync(handle.fileno())
    write_s = time.perf_counter() - start
    evict([path])
    size = path.stat().st_size
    offsets = rng.integers(0, max(size // 4096 - 1, 1), 2000) * 4096
    read_ms = []
    descriptor = os.open(path, os.O_RDONLY)
    try:
        for offset in offsets:
            start = time.perf_counter()
            os.pread(descriptor, 4096, int(offset))
            read_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        os.close(descriptor)
    path.unlink()
    return {
        "night_bytes_per_star": size / stars,
        "night_write_s": write_s,
        "write_mb_per_s": size / write_s / 1e6,
        "random_4k_read_ms_p50": float(np.percentile(read_ms, 50)),
        "random_4k_read_ms_p99": float(np.percentile(read_ms, 99)),
    }


def store_config(args: argparse.Namespace, directory: Path) -> StoreConfig:
    return StoreConfig(
        max_stars=max(args.stars_one, 1),
        directory=None if args.layout == "ram" else directory / "arena",
        hot_points_per_site=args.hot_points if args.layout == "two" else 0,
    )


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One size in this process (see the module docstring)."""
    directory = Path(args.directory) / f"{args.layout}-{args.stars_one}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    field = Field(args.stars_one, args.rising_fraction, seed=7)
    stage = TriggerStage(TriggerSettings())
    warm = StarStore(StoreConfig())  # compile / load the kernels before measuring memory
    warm.append(0, field.epoch(0, 10, 0, 0, 0, 1, 1))
    stage.rising(warm, warm.star_ids)
    warm.datasets(warm.star_ids[:1])
    del warm
    gc.collect()
    before = memory()
    written_before = written_bytes()
    store = StarStore(store_config(args, directory))
    ingest_s = 0.0
    rising_s = 0.0
    fresh_s = 0.0
    observations = 0
    passers: list[npt.NDArray[np.int64]] = []
    refreshed = 0
    nights: list[dict[str, Any]] = []
    for night in range(args.nights):
        night_ingest = 0.0
        for epoch in range(args.per_night):
            for site in range(3):
                for first in range(0, args.stars_one, args.batch):
                    stop = min(first + args.batch, args.stars_one)
                    obs = field.epoch(first, stop, night, epoch, site, args.nights, args.per_night)
                    start = time.perf_counter()
                    store.append(site, obs)
                    night_ingest += time.perf_counter() - start
                    observations += len(obs)
        night_rising = 0.0
        night_passers = []
        ids = store.star_ids
        ids.sort()
        for first in range(0, len(ids), args.batch):
            start = time.perf_counter()
            outcome = stage.rising(store, ids[first : first + args.batch])
            night_rising += time.perf_counter() - start
            refreshed += outcome.refreshed
            night_passers.append(outcome.passers)
        flush_s = 0.0
        if args.layout != "ram":  # the night's dirty pages to disk, as writeback would
            start = time.perf_counter()
            store.flush()
            flush_s = time.perf_counter() - start
        night_written = written_bytes() - written_before - sum(n["written"] for n in nights)
        # Again, every cache now fresh: the test as it runs between refreshes (hot tier only).
        start = time.perf_counter()
        for first in range(0, len(ids), args.batch):
            again = stage.rising(store, ids[first : first + args.batch])
            assert again.refreshed == 0
        night_fresh = time.perf_counter() - start
        ingest_s += night_ingest
        rising_s += night_rising
        fresh_s += night_fresh
        passed = np.concatenate(night_passers)
        passers.append(passed)
        nights.append(
            {
                "night": night,
                "ingest_obs_per_s": 3 * args.per_night * args.stars_one / night_ingest,
                "rising_stars_per_s": len(ids) / night_rising,
                "rising_fresh_stars_per_s": len(ids) / night_fresh,
                "passers": len(passed),
                "flush_s": flush_s,
                "written": night_written,
                "written_per_star": night_written / args.stars_one,
                "rss": memory(),
            }
        )
        print(json.dumps({"stars": args.stars_one, **nights[-1]}), file=sys.stderr, flush=True)
    after_fill = memory()
    written_fill = written_bytes() - written_before
    last_passers = passers[-1]
    sample = last_passers[:2000]
    fetch_ms = []
    for star in sample:
        start = time.perf_counter()
        data = store.datasets(np.array([star]))
        fetch_ms.append((time.perf_counter() - start) * 1e3)
        assert len(data.hjd) == 3 * args.nights * args.per_night
    hot_nbytes = store.hot_nbytes()
    merge_s = 0.0
    if args.layout == "two":  # the last rows to the arena before the cold-tier reads
        start = time.perf_counter()
        store.merge_pending()
        merge_s = time.perf_counter() - start
    cold = cold_cache(store, directory, last_passers, stage) if args.layout != "ram" else {}
    log = log_alternative(directory, args.stars_one, args.per_night)
    digest = hashlib.sha256(b"".join(p.tobytes() for p in passers)).hexdigest()[:16]
    nbytes = store.nbytes()
    arena_disk = disk_bytes(directory / "arena")
    start = time.perf_counter()
    path = store.checkpoint(directory / "checkpoint", {"photometry": observations})
    checkpoint_s = time.perf_counter() - start
    checkpoint_bytes = path.stat().st_size
    config = store.config
    del store
    gc.collect()
    start = time.perf_counter()
    restored = StarStore.restore(directory / "checkpoint", config)
    restore_s = time.perf_counter() - start
    assert restored is not None
    assert len(restored[0]) == args.stars_one
    after_restore = memory()
    del restored
    shutil.rmtree(directory, ignore_errors=True)
    stars = args.stars_one
    return {
        "layout": args.layout,
        "stars": stars,
        "nights": args.nights,
        "observations": observations,
        "points_per_star": 3 * args.nights * args.per_night,
        "ingest_s": ingest_s,
        "ingest_obs_per_s": observations / ingest_s,
        "rising_s": rising_s,
        "rising_stars_per_s": args.nights * stars / rising_s,
        "rising_fresh_stars_per_s": args.nights * stars / fresh_s,
        "baselines_refreshed": refreshed,
        "passers_per_night": [len(p) for p in passers],
        "passers_digest": digest,
        "fetch_ms_p50": float(np.percentile(fetch_ms, 50)) if fetch_ms else None,
        "fetch_ms_p99": float(np.percentile(fetch_ms, 99)) if fetch_ms else None,
        "fetched": len(fetch_ms),
        "nbytes_per_star": nbytes / stars,
        "hot_nbytes_per_star": hot_nbytes / stars,
        "ram_delta_per_star": (
            after_fill["VmRSS"] - after_fill["RssFile"] - before["VmRSS"] + before["RssFile"]
        )
        / stars,
        "final_merge_s": merge_s,
        "rss_before": before,
        "rss_after_fill": after_fill,
        "rss_delta_per_star": (after_fill["VmRSS"] - before["VmRSS"]) / stars,
        "anon_delta_per_star": (after_fill["RssAnon"] - before["RssAnon"]) / stars,
        "file_delta_per_star": (after_fill["RssFile"] - before["RssFile"]) / stars,
        "arena_disk_per_star": arena_disk / stars,
        "written_during_fill_per_star": written_fill / stars,
        "checkpoint_s": checkpoint_s,
        "checkpoint_bytes_per_star": checkpoint_bytes / stars,
        "restore_s": restore_s,
        "rss_after_restore": after_restore,
        "cold_cache": cold,
        "log_alternative": log,
        "nights_detail": nights,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--layout", choices=LAYOUTS, default="ram")
    parser.add_argument("--nights", type=int, default=2)
    parser.add_argument("--per-night", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500_000)
    parser.add_argument("--hot-points", type=int, default=10)
    parser.add_argument("--rising-fraction", type=float, default=0.02)
    parser.add_argument("--directory", default="/tmp/scale-bench")
    parser.add_argument("--json")
    parser.add_argument("--stars-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stars_one is not None:
        print(json.dumps(run_one(args)))
        return
    results = []
    for stars in args.stars:
        command = [sys.executable, __file__, *sys.argv[1:], "--stars-one", str(stars)]
        output = subprocess.run(command, check=True, capture_output=False, stdout=subprocess.PIPE)
        result = json.loads(output.stdout)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "nights_detail"}), flush=True)
    if args.json:
        meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "argv": sys.argv[1:]}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
