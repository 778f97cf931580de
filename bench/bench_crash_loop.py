"""A crash loop: the daemon killed -9 every few seconds on a long season, with and without
checkpoints by rows (``state.checkpoint_rows``). Does each life make progress, and does the
restore time stay flat as the history grows?

Run by hand from the repository root::

    python bench/bench_crash_loop.py [--mix realistic] [--stars 2000] [--partitions 4]
        [--kill-after 5] [--loop 120] [--bootstrap HOST:PORT] [--cache DIR]

The season is replayed unpaced into fresh topics. Then, for each setting (``checkpoint_rows``
0, i.e. by time only every 300 s, as before; and the default): ``lensnet run --until-end`` is
started, killed -9 ``--kill-after`` seconds after its ``started`` line (the interpreter and
model start, a few seconds here, is not counted in the life), and started again, for
``--loop`` seconds; then one last daemon runs to the end of the input. Per life: how its
partitions were opened (checkpoint or rebuild), the seconds until they were all restored
(caught up with the commits), and the input committed when it died. The same code path as
production: the daemons are ``lensnet run`` processes with default settings apart from the
one compared.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from daemons import (
    bench_settings,
    broker,
    committed,
    end_offsets,
    season,
    start_daemon,
)

from consumer.seasons.replay import ReplayOptions, replay
from consumer.settings import Settings


def progress(settings: Settings, group: str, ends: dict[tuple[str, int], int]) -> float:
    """Fraction of the input's messages the group committed."""
    done = committed(settings, group)
    return sum(max(done.get(k, 0), 0) for k in ends) / max(sum(ends.values()), 1)


def crash_loop(
    settings: Settings, work: Path, name: str, extra: dict[str, str], args: argparse.Namespace
) -> None:
    ends = end_offsets(settings)
    group = f"{name}-{uuid.uuid4().hex[:6]}"
    loop_end = time.monotonic() + args.loop
    print(f"\n{name}: {extra or 'defaults'}")
    print("life | opened from | restored after (s) | committed at death")
    life = 0
    while time.monotonic() < loop_end:
        life += 1
        log = work / f"{group}-{life}.log"
        daemon = start_daemon(settings, group=group, state=work / "state", log=log, extra=extra)
        started = None
        while daemon.process.poll() is None:
            if started is None and daemon.events("started"):
                started = time.monotonic()
            if started is not None and time.monotonic() - started >= args.kill_after:
                break
            time.sleep(0.05)
        daemon.process.kill()
        daemon.process.wait()
        opened = daemon.events("partition opened")
        restored = [line["seconds"] for line in daemon.events("partition restored")]
        sources = sorted({line["source"] for line in opened}) or ["-"]
        restore = f"{max(restored):.1f}" if len(restored) == len(opened) and opened else "not"
        print(
            f"{life:4d} | {'+'.join(sources):11s} | {restore:>18s} | "
            f"{100 * progress(settings, group, ends):5.1f} %"
        )
    log = work / f"{group}-last.log"
    last = start_daemon(settings, group=group, state=work / "state", log=log, extra=extra)
    begun = time.monotonic()
    status = last.wait(args.timeout)
    restored = [line["seconds"] for line in last.events("partition restored")]
    print(
        f"last life: exit {status}, to the end in {time.monotonic() - begun:.1f} s "
        f"(restored after {max(restored, default=float('nan')):.1f} s), "
        f"committed {100 * progress(settings, group, ends):.1f} %"
    )
    checkpoints = sum(
        1
        for path in work.glob(f"{group}-*.log")
        for line in path.read_text().splitlines()
        if line.startswith("{") and json.loads(line).get("event") == "checkpoint"
    )
    print(f"checkpoints written over all lives: {checkpoints}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mix", default="realistic", choices=["demo", "realistic"])
    parser.add_argument("--stars", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--kill-after", type=float, default=5.0, help="seconds of each life")
    parser.add_argument("--loop", type=float, default=120.0, help="seconds of killing")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--bootstrap")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "lensnet-bench")
    args = parser.parse_args()
    path = season(args.mix, args.stars, args.seed, args.cache)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        run_both(args, path, work)


def run_both(args: argparse.Namespace, path: Path, work: Path) -> None:
    with broker(args.bootstrap, work) as bootstrap:
        name = f"crash-{uuid.uuid4().hex[:6]}"
        settings = bench_settings(bootstrap, name, args.partitions)
        replay(settings, path, ReplayOptions(progress=False))
        rows = sum(end_offsets(settings).values())
        print(f"season {path}: {rows} messages in {args.partitions} partitions per site")
        crash_loop(settings, work, "by time only", {"LENSNET_STATE__CHECKPOINT_ROWS": "0"}, args)
        crash_loop(settings, work, "by rows too", {}, args)


if __name__ == "__main__":
    main()
