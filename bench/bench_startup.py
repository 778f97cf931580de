"""Benchmark: what a ``lensnet`` process pays before its first batch.

Each repeat is a fresh interpreter (``python -c``) timing, with ``time.perf_counter``, the
daemon's own start-up steps in order: the imports of ``consumer.daemon`` (which imports the
pipeline, the models' code, torch and numba), ``Scorer(settings.model)`` (LensNet, the novelty
network and second opinion, the binary-lens flow) and ``consumer.pipeline.warmup.warm_up``
(every compiled kernel and model run once). Broker and topic checks are left out. Default
settings; with ``--checkout DIR`` the code of another checkout (e.g. a ``git worktree`` of the
commit before a change) runs with this environment's packages, as a same-run baseline.

``python bench/bench_startup.py [--repeat 3] [--checkout DIR ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_TIMED = """
import json, time
t0 = time.perf_counter()
import consumer.daemon
from consumer.pipeline.scoring import Scorer
from consumer.pipeline.warmup import warm_up
from consumer.settings import Settings
t1 = time.perf_counter()
settings = Settings()
scorer = Scorer(settings.model)
t2 = time.perf_counter()
warm_up(settings, scorer)
t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "models": t2 - t1, "warm_up": t3 - t2}))
"""


def start_up(checkout: Path) -> dict[str, float]:
    """Seconds per step in a fresh interpreter running ``checkout``'s code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
    env["PYTHONPATH"] = str(checkout)
    result = subprocess.run(
        [sys.executable, "-c", _TIMED],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    times: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkout", type=Path, action="append", default=[])
    args = parser.parse_args()
    checkouts = [REPO, *args.checkout]
    runs: dict[Path, list[dict[str, float]]] = {c: [] for c in checkouts}
    for _ in range(args.repeat):  # alternated, so drift hits every checkout alike
        for checkout in checkouts:
            runs[checkout].append(start_up(checkout))
    bytecode = os.environ.get("PYTHONDONTWRITEBYTECODE") or "unset"
    print(f"PYTHONDONTWRITEBYTECODE={bytecode}; median of {args.repeat} fresh processes, s:")
    for checkout, times in runs.items():
        medians = {step: statistics.median(t[step] for t in times) for step in times[0]}
        total = sum(medians.values())
        steps = "  ".join(f"{step} {value:.2f}" for step, value in medians.items())
        print(f"{checkout}: {steps}  total {total:.2f}")


if __name__ == "__main__":
    main()
