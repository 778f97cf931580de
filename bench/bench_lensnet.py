"""Benchmark of LensNet inference: 3-branch LSTM at L = 1500, by batch size, one thread.

Run by hand from the repository root::

    python bench/bench_lensnet.py [--hidden 32] [--length 1500] [--repeat 5] [--threads 1]

Inputs are random raw features with every site full (L steps each, the worst case of the
1500-point cap). Each row is the best of ``--repeat`` timed calls after one warm-up call,
``torch.set_num_threads(--threads)`` (1 gives per-core figures); the eager model (``torch.no_grad``)
and the TorchScript module from :func:`model.export.script` (the artifact's format) run in the
same process on the same inputs. When the shipped artifact exists its own module is timed too.
Figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from model.export import load_artifact, script, shipped_artifact
from model.lensnet import LensNet, LensNetConfig

BATCH_SIZES = (1, 8, 32, 128)


def best_seconds(call: Callable[[], Any], repeat: int) -> float:
    call()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--length", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    eager = LensNet(LensNetConfig(hidden=args.hidden)).eval()
    modules: dict[str, Any] = {"eager": eager, "torchscript": script(eager)}
    artifact = shipped_artifact()
    if artifact.exists():
        modules["artifact"], card = load_artifact(artifact)
        print(f"artifact: hidden {card.get('model_config', {}).get('hidden')}")
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"threads {torch.get_num_threads()}, hidden {args.hidden}, L {args.length}"
    )
    print("| module | batch | ms / batch | ms / candidate | candidates / s / core | vs batch 1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, module in modules.items():
        single = 0.0
        for batch in BATCH_SIZES:
            x = torch.randn(batch, 3, args.length, 8).abs()
            lengths = torch.full((batch, 3), args.length, dtype=torch.int64)

            def call(module: Any = module, x: torch.Tensor = x, n: torch.Tensor = lengths) -> Any:
                with torch.no_grad():
                    return module(x, n)

            seconds = best_seconds(call, args.repeat)
            per = seconds / batch
            single = single or per
            rate = 1.0 / per / args.threads
            print(
                f"| {name} | {batch} | {1e3 * seconds:.1f} | {1e3 * per:.2f} | {rate:.0f} | "
                f"x{single / per:.1f} |"
            )


if __name__ == "__main__":
    main()
