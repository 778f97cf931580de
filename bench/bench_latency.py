"""The daemon end to end: maximum rate, and observation -> alert latency at half of it.

Run by hand from the repository root::

    python bench/bench_latency.py [--mix realistic|demo] [--stars N] [--seed 1] [--repeat 1]
        [--baseline DIR] [--partitions 4] [--bootstrap HOST:PORT] [--cache DIR]

Without ``--bootstrap`` it starts a local broker (``deploy/local-kafka/kafka.sh``) and stops it
at the end. Every daemon is ``lensnet run`` in its own process (``bench/daemons.py``: exactly
once, default settings, LensNet with one torch thread), pinned to CPU ``--cpu``; the replays
run in this process on the other CPUs. The season is simulated once per mix, stars and seed
(``--mix realistic``: the field of ``daemons.REALISTIC``; ``demo``: the simulator's defaults,
as ``make demo``) and kept in ``--cache``.

1. **Maximum rate.** The season is replayed unpaced into the photometry topics; then a daemon
   drains them, ``--repeat`` times, each in a fresh consumer group with its own alert topic.
   Rate = observations / (start of its first batch -> end of its last). With ``--baseline
   DIR`` (another checkout, e.g. the commit before a change) its daemon drains the same topics
   before each of ours: the ratio of the two is measured in the same run, and its alerts are
   compared with ours (same stars, trigger times and scores).
2. **Latency.** A daemon of this checkout runs first, on fresh topics; the season is replayed
   at half the maximum rate while it consumes. For every alert, the latency is the alert
   message's Kafka timestamp (producer create time) minus that of the photometry message that
   carried the star's observation at the alert's trigger time (the newest the trigger saw),
   both read back from the topics.

With ``--profile FILE`` part 1 ends with one more drain of this checkout under cProfile (not
in the rate), its statistics written to FILE and the top functions printed.

The last two lines are ``maximum rate: <N> obs/s`` and ``latency p50 <a> s p99 <b> s``.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import numpy.typing as npt
from daemons import (
    DEFAULT_STARS,
    MIXES,
    REPO,
    Daemon,
    Published,
    alerts_of,
    bench_settings,
    broker,
    compare,
    observation_times,
    rate_of,
    season,
    season_counts,
    start_daemon,
    trigger_code,
    updates_of,
    wait_committed,
    with_outputs,
)

from consumer.logs import configure_logging
from consumer.seasons.replay import ReplayOptions, replay
from consumer.settings import LogSettings, Settings

#: Each drain's event updates by its name (``daemons.updates_of``), compared with the
#: baseline's.
UPDATES: dict[str, list[str]] = {}


def drain(
    name: str,
    settings: Settings,
    code: Path,
    args: argparse.Namespace,
    work: Path,
    extra: dict[str, str],
    profile: Path | None = None,
) -> tuple[float, int, list[Published]]:
    """One daemon of ``code`` draining the topics of ``settings`` into its own alert topic,
    decisions a function of the input alone (``trigger.evaluate_when_caught_up`` off: with
    the input all there, it would only change the last windows); (rate, observations,
    alerts). Under cProfile when ``profile`` (its statistics file) is given."""
    out = with_outputs(settings, name)
    daemon = start_daemon(
        out,
        group=name,
        state=work / "state",
        log=work / f"{name}.log",
        cpus={args.cpu},
        code=code,
        extra={"LENSNET_TRIGGER__EVALUATE_WHEN_CAUGHT_UP": "false", **extra},
        profile=profile,
    )
    status = daemon.wait(args.timeout)
    if status != 0:
        raise SystemExit(f"daemon exited with {status} (log: {daemon.log})")
    rate = rate_of([daemon])
    scored = sum(int(b.get("scored", 0)) for b in daemon.events("batch"))
    print(
        f"  {name}: {rate.batches} batches in {rate.seconds:.1f} s using {rate.cpu_seconds:.1f} "
        f"CPU s = {rate.per_cpu_second:.0f} obs per CPU second; {scored} candidates scored "
        f"({scored / rate.seconds if rate.seconds else 0:.0f} candidates/s)"
    )
    UPDATES[name] = updates_of(out)
    return rate.per_second, rate.observations, alerts_of(out)


def wait_assigned(daemon: Daemon, partitions: int, timeout_s: float) -> None:
    """Until the daemon opened all ``partitions`` (an empty topic: restored at once)."""
    deadline = time.monotonic() + timeout_s
    while len(daemon.events("partition opened")) < partitions:
        if time.monotonic() > deadline or daemon.process.poll() is not None:
            raise SystemExit(f"daemon not assigned within {timeout_s} s (log: {daemon.log})")
        time.sleep(0.1)


def maximum_rate(
    args: argparse.Namespace, bootstrap: str, path: Path, work: Path, extra: dict[str, str]
) -> tuple[float, list[Published]]:
    """Part 1: the median rate of this checkout's daemons over ``--repeat`` drains (each
    after a baseline drain when ``--baseline``), and the alerts of the first."""
    run = f"bench-{args.mix}-{uuid.uuid4().hex[:6]}"
    # Numba compiles on first use and caches in each checkout: warm both on a small season
    # first, so that no timed run pays for compiling.
    warm = bench_settings(bootstrap, f"{run}-warm", args.partitions)
    replay(warm, season("demo", 20, 1, args.cache), ReplayOptions(progress=False))
    for code in [REPO] + ([args.baseline] if args.baseline else []):
        drain(f"{run}-warm-{uuid.uuid4().hex[:4]}", warm, code, args, work, {})
    settings = bench_settings(bootstrap, run, args.partitions)
    replay(settings, path, ReplayOptions(progress=False))
    ours: list[float] = []
    base: list[float] = []
    reference: list[Published] = []
    for attempt in range(args.repeat):
        if args.baseline is not None:
            rate, rows, baseline_alerts = drain(
                f"{run}-base{attempt}", settings, args.baseline, args, work, {}
            )
            base.append(rate)
            print(f"baseline: {rows} observations, {rate:.0f} obs/s, {len(baseline_alerts)} alerts")
        rate, rows, alerts = drain(f"{run}-ours{attempt}", settings, REPO, args, work, extra)
        ours.append(rate)
        print(f"this checkout: {rows} observations, {rate:.0f} obs/s, {len(alerts)} alerts")
        if attempt == 0:
            reference = alerts
        else:
            same = compare(alerts, reference)
            print(f"  decisions as its first run: {same.identical} ({same.same} stars)")
        if args.baseline is not None:
            same = compare(alerts, baseline_alerts)
            print(
                f"  decisions as the baseline's: {same.identical} ({same.same} stars)"
                + "".join(f"\n    {line}" for line in same.differing[:20])
            )
            ours_updates = UPDATES[f"{run}-ours{attempt}"]
            base_updates = UPDATES[f"{run}-base{attempt}"]
            print(
                f"  event updates as the baseline's: {ours_updates == base_updates} "
                f"({len(ours_updates)} and {len(base_updates)}, "
                f"{len(set(ours_updates) ^ set(base_updates))} in one run only)"
            )
            print(f"  ratio to the baseline: x{rate / base[-1]:.2f}")
    if args.profile is not None:
        rate, rows, _ = drain(
            f"{run}-profile", settings, REPO, args, work, extra, profile=args.profile
        )
        print(f"profiled drain (not timed): {rows} observations, {rate:.0f} obs/s under cProfile")
        print_profile(args.profile)
    maximum = statistics.median(ours)
    print(f"this checkout, {len(ours)} runs: median {maximum:.0f} obs/s ({spread(ours)})")
    if base:
        ratios = [o / b for o, b in zip(ours, base, strict=True)]
        print(
            f"baseline, {len(base)} runs: median {statistics.median(base):.0f} obs/s "
            f"({spread(base)}); ratio median x{statistics.median(ratios):.2f} "
            f"({min(ratios):.2f} .. {max(ratios):.2f})"
        )
    return maximum, reference


def latency(
    args: argparse.Namespace,
    bootstrap: str,
    path: Path,
    work: Path,
    extra: dict[str, str],
    rate: float,
    reference: list[Published],
) -> npt.NDArray[np.float64]:
    """Part 2: a daemon consuming live while the season is replayed at ``rate``; per alert,
    the seconds from the trigger observation's message to the alert message."""
    name = f"bench-{args.mix}-{uuid.uuid4().hex[:6]}-live"
    live = bench_settings(bootstrap, name, args.partitions)
    daemon = start_daemon(
        live,
        group=name,
        state=work / "state",
        log=work / "live.log",
        cpus={args.cpu},
        until_end=False,
        extra=extra,
    )
    wait_assigned(daemon, args.partitions, 120)
    started = time.perf_counter()
    summary = replay(live, path, ReplayOptions(max_rate=rate, progress=False))
    wait_committed(live, name, args.timeout)
    elapsed = time.perf_counter() - started
    daemon.stop()
    alerts = alerts_of(live)
    wanted = {(a.star_id, trigger_code(a.trigger_hjd)) for a in alerts}
    produced = observation_times(live, wanted)
    latencies = np.array(
        [
            (a.produced_ms - produced[(a.star_id, trigger_code(a.trigger_hjd))]) / 1000
            for a in alerts
            if (a.star_id, trigger_code(a.trigger_hjd)) in produced
        ]
    )
    same = compare(alerts, reference)
    print(
        f"paced replay: {summary.sent} observations at <= {rate:.0f} obs/s in {elapsed:.1f} s; "
        f"{len(alerts)} alerts ({len(latencies)} matched to their observation); decisions as "
        f"the maximum-rate run: {same.identical} ({same.same} stars, {len(same.differing)} not)"
    )
    batches = daemon.events("batch")
    if batches:
        ms = np.array([b["ms"] for b in batches])
        print(
            f"live batches: {len(ms)}, ms p50 {np.median(ms):.0f} p99 {np.percentile(ms, 99):.0f}"
        )
    return latencies


def print_profile(path: Path, top: int = 30) -> None:
    """The ``top`` functions of a profile by own time, then by cumulative time."""
    stats = pstats.Stats(str(path))
    for order in ("tottime", "cumulative"):
        stats.sort_stats(order).print_stats(top)


def spread(values: list[float]) -> str:
    return f"{min(values):.0f} .. {max(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mix", choices=sorted(MIXES), default="realistic")
    parser.add_argument("--stars", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--cpu", type=int, default=0, help="CPU the daemons are pinned to")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "lensnet-bench")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--no-latency", action="store_true", help="part 1 only")
    parser.add_argument(
        "--profile", type=Path, default=None, help="one more drain under cProfile, stats here"
    )
    parser.add_argument("--rate", type=float, default=None, help="no part 1; part 2 at half this")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="LENSNET_X=Y",
        help="a setting of this checkout's daemons (repeatable)",
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    stars = args.stars or DEFAULT_STARS[args.mix]
    configure_logging(LogSettings(level="WARNING"))
    others = os.sched_getaffinity(0) - {args.cpu}
    if others:
        os.sched_setaffinity(0, others)  # replays and readers off the daemons' CPU
    args.cache.mkdir(parents=True, exist_ok=True)
    path = season(args.mix, stars, args.seed, args.cache)
    kinds = "; ".join(
        f"{label} {sum(c.values())} ({', '.join(f'{k} {v}' for k, v in sorted(c.items()))})"
        for label, c in season_counts(path).items()
    )
    print(f"season {path}: {stars} stars, mix {args.mix}: {kinds}")
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    try:
        with broker(args.bootstrap, work) as bootstrap:
            reference: list[Published] = []
            maximum = args.rate
            if maximum is None:
                maximum, reference = maximum_rate(args, bootstrap, path, work, extra)
            if args.no_latency:
                print(f"maximum rate: {maximum:.0f} obs/s")
                return
            latencies = latency(args, bootstrap, path, work, extra, maximum / 2, reference)
            if len(latencies) == 0:
                raise SystemExit("no alerts: no latency to report")
            p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
            print(
                f"latency p90 {p90:.3f} s, max {latencies.max():.3f} s, "
                f"min {latencies.min():.3f} s ({len(latencies)} alerts)"
            )
            print(f"maximum rate: {maximum:.0f} obs/s")
            print(f"latency p50 {p50:.3f} s p99 {p99:.3f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
