"""Benchmark: the binary-lens posterior per alert (1000 samples), one core.

Light curves: the first ``--events`` events of test season 3201 as the flow sees them
(:func:`model.binary.simulate.simulate_events`, at most 256 points each). Timed:
:func:`model.binary.posterior.posterior` with 1000 samples (embedding, sampling, the map back
to physical parameters, summaries and s modes) with the shipped artifact. Same-run baseline:
one VBMicrolensing light curve (``BinaryLightCurve``, finite source, the simulator's tolerance)
of the event's true parameters at the same points, i.e. one forward-model evaluation of the
kind a sampler would need thousands of.

Times are CPU time of the benchmarking thread (``time.thread_time``), best of ``--repeat``,
pinned to one core with one torch thread.

``python bench/bench_binary_flow.py [--events 100] [--repeat 3] [--samples 1000]``
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from model.binary.export import load, shipped_artifact
from model.binary.inputs import TIME_UNIT_DAYS, FlowInput
from model.binary.posterior import posterior
from model.binary.simulate import magnification, make_vbm, reported, simulate_events


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """Smallest CPU time of the calling thread over ``repeat`` runs, seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time()
        work()
        best = min(best, time.thread_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    model = load()
    events = simulate_events((3201,), args.events, progress=False)
    vbm = make_vbm()
    flow_ms, vbm_ms = [], []
    posterior(FlowInput(events.points[0, : events.lengths[0]], 2.0, 0.0), 10, model=model)
    for i in range(len(events)):
        item = FlowInput(
            events.points[i, : events.lengths[i]], float(events.log_flux_scale[i]), 0.0
        )
        flow_ms.append(
            1e3 * best_of(args.repeat, partial(posterior, item, args.samples, model=model))
        )
        hjd = item.points[:, 0].astype(np.float64) * TIME_UNIT_DAYS
        t0 = float(reported(events.theta[i])[0])
        vbm_ms.append(
            1e3 * best_of(args.repeat, partial(magnification, vbm, events.theta[i], t0, hjd))
        )
    flow, forward = np.asarray(flow_ms), np.asarray(vbm_ms)
    print(
        f"artifact {shipped_artifact().name}, torch {torch.__version__}, "
        f"{len(events)} light curves, median {np.median(events.lengths):.0f} points"
    )
    print(
        f"posterior ({args.samples} samples) ms: mean {flow.mean():.1f}  median "
        f"{np.median(flow):.1f}  p95 {np.percentile(flow, 95):.1f}  max {flow.max():.1f}"
    )
    print(
        f"one VBMicrolensing light curve ms: mean {forward.mean():.2f}  median "
        f"{np.median(forward):.2f}  p95 {np.percentile(forward, 95):.2f}  max {forward.max():.2f}"
    )
    print(
        "ratio of medians (posterior / one forward model): "
        f"{np.median(flow) / np.median(forward):.1f}"
    )


if __name__ == "__main__":
    main()
