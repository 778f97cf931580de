"""Restore time against history: does a restarted daemon's restore grow with what it has seen?

Run by hand from the repository root::

    python bench/bench_restore.py [--stars 2000] [--epochs 250 500 1000 1500 3000 6000]
        [--repeat 3] [--json PATH]

One partition's store, with the daemon's default state settings (``StateSettings()``: memory-
mapped arena beside the checkpoint, hot tails in RAM, 1 500 points per star and site), is fed
``--stars`` stars at three sites, one observation per star and site an epoch (0.02 d apart,
chips of 1 000 stars per message, as ``bench_state.py`` streams them). At each of ``--epochs``
the store is checkpointed into the partition's folder and restored from it ``--repeat`` times
with :meth:`Partitions.store_config <consumer.state.partitions.Partitions.store_config>` and
:meth:`StarStore.restore <consumer.state.store.StarStore.restore>`, the calls
:meth:`Partitions.open <consumer.state.partitions.Partitions.open>` makes (the product's code;
the loop that feeds the store is this script's).

A restart costs the restore plus the replay from the checkpoint's offsets to the committed
ones, at most ``state.checkpoint_rows`` photometry rows (RELIABILITY.md); this measures the
first part. Reported per history length: records held, checkpoint bytes, checkpoint and
restore seconds (median), and the restore's ratio to the one at the first history length
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_state import stream, warm_up

from consumer.settings import StateSettings
from consumer.state.partitions import Partitions
from consumer.state.store import StarStore

CHIP = 1000


def measure(stars: int, milestones: list[int], repeat: int) -> list[dict[str, Any]]:
    """Feed one store and checkpoint / restore it at each history length in ``milestones``."""
    root = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    try:
        topics = ("ctio", "saao", "sso")
        partitions = Partitions(StateSettings(directory=root / "live"), topics)
        # Restores map their arenas elsewhere: the live store goes on using its own files.
        restoring = Partitions(StateSettings(directory=root / "restored"), topics)
        folder = partitions.directory(0)
        store = StarStore(partitions.store_config(0))
        rows = 0
        results: list[dict[str, Any]] = []
        epochs = iter(stream(stars, CHIP, range(max(milestones)), 0.0, seed=3))
        for target in sorted(milestones):
            for epoch, site, batch in epochs:
                store.append(site, batch)
                rows += len(batch.star_id)
                if epoch == target - 1 and site == 2 and batch.star_id[-1] == stars - 1:
                    break
            start = time.perf_counter()
            path = store.checkpoint(folder, {"ctio": rows})
            checkpoint_s = time.perf_counter() - start
            restores: list[float] = []
            for _ in range(repeat):
                start = time.perf_counter()
                restored = StarStore.restore(folder, restoring.store_config(0))
                restores.append(time.perf_counter() - start)
                assert restored is not None
                assert len(restored[0]) == stars
                del restored
            restore_s = statistics.median(restores)
            results.append(
                {
                    "epochs": target,
                    "rows_seen": rows,
                    "records_held": int(store.records()),
                    "checkpoint_mb": path.stat().st_size / 1e6,
                    "checkpoint_s": checkpoint_s,
                    "restore_s": restore_s,
                    "restore_all_s": restores,
                }
            )
            first_s = float(results[0]["restore_s"])
            print(
                f"epochs {target:>6}  rows seen {rows:>11,}  held {store.records():>10,}  "
                f"checkpoint {path.stat().st_size / 1e6:7.1f} MB {checkpoint_s:6.2f} s  "
                f"restore {restore_s:6.3f} s (x{restore_s / first_s:.2f})",
                flush=True,
            )
        return results
    finally:
        shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, default=2000)
    parser.add_argument("--epochs", type=int, nargs="+", default=[250, 500, 1000, 1500, 3000, 6000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    warm_up()
    results = measure(args.stars, args.epochs, args.repeat)
    if args.json:
        args.json.write_text(json.dumps({"stars": args.stars, "results": results}, indent=1))


if __name__ == "__main__":
    main()
