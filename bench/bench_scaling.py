"""Scale-out: N daemon processes in one consumer group draining the same topics (N = 1, 2).

Run by hand from the repository root::

    python bench/bench_scaling.py [--mix realistic|demo] [--stars N] [--seed 1]
        [--partitions 4] [--processes 1,2] [--repeat 1] [--bootstrap HOST:PORT]
        [--join-window S | --form-group-first]

The season (``bench/daemons.py``, as ``bench_latency.py``) is replayed unpaced once into fresh
photometry topics; then, for each N, N ``lensnet run --until-end`` processes (exactly once,
default settings) in a fresh consumer group with their own alert topic drain them, process i
pinned to CPU ``i % cpus`` (the replay is over before they start). The aggregate rate is
taken over the wall time from the first batch's start to the last one's end (all processes'
``batch`` log lines), so it includes the group's rebalances; the alerts of every N are compared
with those of N = 1 (same stars, trigger times and scores).

With ``--join-window S`` the local broker makes a new group wait S seconds for more members
before its first assignment (``group.initial.rebalance.delay.ms``; Kafka's default is 3 s, the
test broker's 0): the N processes, started together on the filled topics, all join the first
generation, so no partition moves and nothing is re-read, and the replay is over before they
start (it does not compete with them for the cores). The wait is outside the measured span.

With ``--form-group-first`` each N gets fresh topics instead: its daemons start on them
empty, and the season is replayed (unpaced, a few seconds) once every partition is assigned,
each process holding some; they are stopped once the group committed the end of the input.
No partition moves during the drain, so nothing is re-read and the rate is the group's
settled rate (the rebalances of start-up are not in it).

The scaling compares rates of the season's observations counted once (those re-read after a
rebalance are work, not throughput). The last line is ``scaling: <x> (2 processes / 1)`` when
both N were run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from daemons import (
    DEFAULT_STARS,
    MIXES,
    Daemon,
    Published,
    alerts_of,
    bench_settings,
    broker,
    compare,
    rate_of,
    season,
    start_daemon,
    wait_committed,
    with_outputs,
)

from consumer.logs import configure_logging
from consumer.seasons.replay import ReplayOptions, replay
from consumer.settings import LogSettings, Settings


def drain(
    settings: Settings, processes: int, cpus: list[int], work: Path, timeout_s: float
) -> tuple[float, int, list[Published]]:
    """``processes`` daemons in one fresh group draining ``settings``' photometry topics;
    (seconds from the first batch's start to the last one's end, observations processed,
    alerts). Processed observations include those a process read again after a rebalance
    moved a partition to it (it restores the partition's checkpoint and replays from there)."""
    name = f"scale{processes}-{uuid.uuid4().hex[:6]}"
    out = with_outputs(settings, name)
    daemons = start(out, name, processes, cpus, work, until_end=True)
    for daemon in daemons:
        status = daemon.wait(timeout_s)
        if status != 0:
            raise SystemExit(f"daemon exited with {status} (log: {daemon.log})")
    return report(daemons, processes, out)


def drain_assigned(
    settings: Settings,
    season_path: Path,
    processes: int,
    cpus: list[int],
    work: Path,
    timeout_s: float,
) -> tuple[float, int, list[Published]]:
    """As :func:`drain`, but the group is formed first: the daemons start on the empty topics
    of ``settings``, and once every partition is assigned (each process holding some) the
    season is replayed unpaced while they consume; they are stopped (SIGTERM) once the group
    committed the end of the input."""
    name = f"scale{processes}-{uuid.uuid4().hex[:6]}"
    daemons = start(settings, name, processes, cpus, work, until_end=False)
    deadline = time.monotonic() + timeout_s
    while True:
        owned = [latest_assignment(d) for d in daemons]
        if all(owned) and set().union(*owned) == set(range(settings.topics.partitions)):
            break
        if time.monotonic() > deadline or any(d.process.poll() is not None for d in daemons):
            raise SystemExit(f"group {name} not formed within {timeout_s} s ({work})")
        time.sleep(0.2)
    replay(settings, season_path, ReplayOptions(progress=False))
    wait_committed(settings, name, timeout_s)
    for daemon in daemons:
        if daemon.stop() != 0:
            raise SystemExit(f"daemon did not stop cleanly (log: {daemon.log})")
    return report(daemons, processes, settings)


def latest_assignment(daemon: Daemon) -> set[int]:
    """Partitions a daemon holds by its log: those opened, less those revoked since."""
    held: set[int] = set()
    for line in daemon.log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "partition opened":
            held.add(int(event["partition"]))
        elif event.get("event") in (
            "partition revoked",
            "partition lost (no checkpoint, nothing committed)",
        ):
            held.discard(int(event["partition"]))
    return held


def start(
    settings: Settings,
    name: str,
    processes: int,
    cpus: list[int],
    work: Path,
    *,
    until_end: bool,
) -> list[Daemon]:
    return [
        start_daemon(
            settings,
            group=name,
            state=work / "state",
            log=work / f"{name}-{i}.log",
            instance=str(i),
            cpus={cpus[i % len(cpus)]},
            until_end=until_end,
            extra={"LENSNET_TRIGGER__EVALUATE_WHEN_CAUGHT_UP": "false"},
        )
        for i in range(processes)
    ]


def report(
    daemons: list[Daemon], processes: int, settings: Settings
) -> tuple[float, int, list[Published]]:
    rate = rate_of(daemons)
    shares = [rate_of([d]).observations for d in daemons]
    print(
        f"{processes} process(es): {rate.observations} observations in {rate.seconds:.1f} s "
        f"= {rate.per_second:.0f} obs/s (per process {shares}, {rate.batches} batches); "
        f"{rate.cpu_seconds:.1f} CPU s = {rate.per_cpu_second:.0f} obs per CPU second"
    )
    return rate.seconds, rate.observations, alerts_of(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mix", choices=sorted(MIXES), default="realistic")
    parser.add_argument("--stars", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--processes", default="1,2", help="comma-separated N")
    parser.add_argument("--repeat", type=int, default=1, help="drains per N, alternating")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "lensnet-bench")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--form-group-first",
        action="store_true",
        help="start the daemons on empty topics, replay once all partitions are assigned",
    )
    parser.add_argument(
        "--join-window",
        type=float,
        default=0.0,
        help="seconds a new group waits for its members (local broker only; see above)",
    )
    args = parser.parse_args()
    if args.join_window and (args.form_group_first or args.bootstrap):
        parser.error("--join-window needs the local broker and excludes --form-group-first")
    counts = [int(n) for n in args.processes.split(",")]
    stars = args.stars or DEFAULT_STARS[args.mix]
    configure_logging(LogSettings(level="WARNING"))
    cpus = sorted(os.sched_getaffinity(0))
    args.cache.mkdir(parents=True, exist_ok=True)
    path = season(args.mix, stars, args.seed, args.cache)
    print(f"season {path}: {stars} stars, mix {args.mix}; CPUs {cpus}")
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    try:
        with broker(args.bootstrap, work, int(1000 * args.join_window)) as bootstrap:
            run = f"bench-scaling-{uuid.uuid4().hex[:6]}"
            # Numba's caches and the model load warm on a small season first.
            warm = bench_settings(bootstrap, f"{run}-warm", args.partitions)
            replay(warm, season("demo", 20, 1, args.cache), ReplayOptions(progress=False))
            drain(warm, 1, cpus, work, args.timeout)
            settings = bench_settings(bootstrap, run, args.partitions)
            if not args.form_group_first:
                replay(settings, path, ReplayOptions(progress=False))
            rates: dict[int, list[float]] = {n: [] for n in counts}
            reference: list[Published] | None = None
            season_rows = 0  # the first drain's: the season's observations, read once
            for _ in range(args.repeat):
                for n in counts:
                    if args.form_group_first:
                        fresh = bench_settings(
                            bootstrap, f"{run}-{uuid.uuid4().hex[:4]}", args.partitions
                        )
                        seconds, rows, alerts = drain_assigned(
                            fresh, path, n, cpus, work, args.timeout
                        )
                    else:
                        seconds, rows, alerts = drain(settings, n, cpus, work, args.timeout)
                    season_rows = season_rows or rows
                    rates[n].append(season_rows / seconds)
                    print(f"  the season's {season_rows} observations: {rates[n][-1]:.0f} obs/s")
                    if reference is None:
                        reference = alerts
                        print(f"  {len(alerts)} alerts (the reference)")
                        continue
                    same = compare(alerts, reference)
                    print(
                        f"  {len(alerts)} alerts; decisions as the first drain's: "
                        f"{same.identical} ({same.same} stars, {len(same.differing)} not)"
                        + "".join(f"\n    {line}" for line in same.differing[:20])
                    )
            medians = {n: statistics.median(r) for n, r in rates.items()}
            for n, r in rates.items():
                print(f"N = {n}: median {medians[n]:.0f} obs/s over {len(r)} drain(s) {r}")
            if 1 in medians and 2 in medians:
                print(f"scaling: {medians[2] / medians[1]:.2f} (2 processes / 1)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
