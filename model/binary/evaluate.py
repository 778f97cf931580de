"""Calibration of the binary-lens flow on held-out simulated events: numbers and plots.

Usage::

    nice -n 19 python -m model.binary.evaluate --checkpoint CKPT [CKPT ...] --split test \\
        --cache /tmp/flow-data --out model/artifacts/binary_flow

Per checkpoint (one per training seed) on the split's events, with ``--samples`` draws each:

- coverage: the share of events whose true value lies in the central 68 % (16th-84th
  percentile) and 95 % (2.5th-97.5th) intervals of the samples, per reported parameter
  (``alpha`` on the line [0, 2 pi), not the circle);
- widths: the median over events of half the 16th-84th percentile range, beside the same for
  the prior (a posterior no narrower than the prior learned nothing);
- log q constrained: the 68 % interval of log10 q is narrower than half the prior's
  (:data:`CONSTRAINED_FRACTION_OF_PRIOR`);
- close/wide: an event is *degenerate* when its light curves with s and 1/s (all else equal)
  differ by chi-square < :data:`DEGENERATE_DCHI2` over its points (true scatter) and
  |log10 s| >= :data:`MIN_ABS_LOG_S` (farther from s = 1 than the two modes' own widths);
  the pair is *recovered* when both sides of s = 1 hold at least
  :data:`model.binary.posterior.MODE_MIN_WEIGHT` of the samples. Also reported for contrast:
  the same two-mode rate for clearly non-degenerate events (chi-square > 100).

Writes ``metrics_<split>.json``, the tables ``calibration_<split>.md`` and, for the first
checkpoint, the plots.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from model.binary.export import load
from model.binary.flow import BinaryFlow, FlowConfig
from model.binary.inputs import FlowInput
from model.binary.posterior import (
    CONSTRAINED_FRACTION_OF_PRIOR,
    MODE_MIN_WEIGHT,
    prior_half_widths,
    sample_inputs,
)
from model.binary.simulate import REPORTED, EventArrays, reported
from model.binary.train import load_split

F64 = npt.NDArray[np.float64]

DEGENERATE_DCHI2: Final = 10.0
MIN_ABS_LOG_S: Final = 0.1
_LOG_Q: Final = REPORTED.index("log_q")
_LOG_S: Final = REPORTED.index("log_s")


def draw_samples(model: BinaryFlow, arrays: EventArrays, n_samples: int, batch: int = 50) -> F64:
    """(N, n_samples, 8) reported-parameter samples for every event of ``arrays``."""
    out = np.zeros((len(arrays), n_samples, len(REPORTED)))
    for start in range(0, len(arrays), batch):
        inputs = [
            FlowInput(arrays.points[i, : arrays.lengths[i]], float(arrays.log_flux_scale[i]), 0.0)
            for i in range(start, min(start + batch, len(arrays)))
        ]
        out[start : start + len(inputs)] = sample_inputs(model, inputs, n_samples)
    return out


def metrics(samples: F64, truth: F64, dchi2: F64, prior_width: F64) -> dict[str, Any]:
    """The numbers of the module docstring; samples (N, n, 8), truth (N, 8) reported."""
    p = np.percentile(samples, [2.5, 16.0, 84.0, 97.5], axis=1)  # (4, N, 8)
    in68 = (truth >= p[1]) & (truth <= p[2])
    in95 = (truth >= p[0]) & (truth <= p[3])
    half = (p[2] - p[1]) / 2.0
    q_width = p[2][:, _LOG_Q] - p[1][:, _LOG_Q]
    constrained = q_width < CONSTRAINED_FRACTION_OF_PRIOR * 2.0 * prior_width[_LOG_Q]
    planetary = truth[:, _LOG_Q] < -2.0
    close_share = np.mean(samples[:, :, _LOG_S] < 0.0, axis=1)
    two_modes = (close_share >= MODE_MIN_WEIGHT) & (1.0 - close_share >= MODE_MIN_WEIGHT)
    far = np.abs(truth[:, _LOG_S]) >= MIN_ABS_LOG_S
    degenerate = far & (dchi2 < DEGENERATE_DCHI2)
    distinct = far & (dchi2 > 100.0)
    true_side = np.where(truth[:, _LOG_S] < 0.0, close_share, 1.0 - close_share)

    def share(mask: npt.NDArray[np.bool_]) -> float:
        return float(np.mean(mask)) if len(mask) else math.nan

    return {
        "n_events": len(truth),
        "n_samples": samples.shape[1],
        "coverage_68": {n: float(in68[:, i].mean()) for i, n in enumerate(REPORTED)},
        "coverage_95": {n: float(in95[:, i].mean()) for i, n in enumerate(REPORTED)},
        "median_half_width_68": {n: float(np.median(half[:, i])) for i, n in enumerate(REPORTED)},
        "prior_half_width_68": {n: float(prior_width[i]) for i, n in enumerate(REPORTED)},
        "log_q_constrained": {
            "all": share(constrained),
            "planetary_truth": share(constrained[planetary]),
            "stellar_truth": share(constrained[~planetary]),
            "threshold_dex": float(CONSTRAINED_FRACTION_OF_PRIOR * 2.0 * prior_width[_LOG_Q]),
        },
        "log_q_constrained_correct_side": share(
            (np.median(samples[:, :, _LOG_Q], axis=1) < -2.0)[constrained] == planetary[constrained]
        ),
        "close_wide": {
            "n_degenerate": int(degenerate.sum()),
            "recovered_both_modes": share(two_modes[degenerate]),
            "n_degenerate_log_q_constrained": int((degenerate & constrained).sum()),
            "recovered_when_log_q_constrained": share(two_modes[degenerate & constrained]),
            "n_distinct": int(distinct.sum()),
            "both_modes_when_distinct": share(two_modes[distinct]),
            "true_side_majority_when_distinct": share(true_side[distinct] > 0.5),
        },
    }


def _plots(
    samples: F64, truth: F64, result: dict[str, Any], history: list[dict[str, float]], out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(REPORTED))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(x - 0.2, [result["coverage_68"][n] for n in REPORTED], 0.4, label="68 % interval")
    ax.bar(x + 0.2, [result["coverage_95"][n] for n in REPORTED], 0.4, label="95 % interval")
    for nominal in (0.68, 0.95):
        ax.axhspan(nominal - 0.03, nominal + 0.03, color="grey", alpha=0.3)
    ax.set_xticks(x, REPORTED, rotation=30)
    ax.set_ylabel("coverage")
    ax.set_ylim(0.4, 1.0)
    ax.set_title("Coverage on held-out events (grey: nominal +- 3 points)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ratio = [result["median_half_width_68"][n] / result["prior_half_width_68"][n] for n in REPORTED]
    ax.bar(x, ratio)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(x, REPORTED, rotation=30)
    ax.set_ylabel("median posterior / prior 68 % width")
    ax.set_title("How much the light curves narrow each parameter")
    fig.tight_layout()
    fig.savefig(out / "widths.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    p16, p50, p84 = np.percentile(samples[:, :, _LOG_Q], [16, 50, 84], axis=1)
    axes[0].errorbar(truth[:, _LOG_Q], p50, yerr=[p50 - p16, p84 - p50], fmt=".", ms=2, lw=0.3)
    axes[0].plot([-4, 0], [-4, 0], "r--", lw=0.8)
    axes[0].set_xlabel("true log10 q")
    axes[0].set_ylabel("posterior median, 16-84 %")
    p16, p50, p84 = np.percentile(samples[:, :, _LOG_S], [16, 50, 84], axis=1)
    axes[1].errorbar(truth[:, _LOG_S], p50, yerr=[p50 - p16, p84 - p50], fmt=".", ms=2, lw=0.3)
    lim = [math.log10(0.3), math.log10(3.0)]
    axes[1].plot(lim, lim, "r--", lw=0.8)
    axes[1].plot(lim, [-v for v in lim], "g:", lw=0.8, label="s -> 1/s")
    axes[1].set_xlabel("true log10 s")
    axes[1].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "recovery_q_s.png", dpi=110)
    plt.close(fig)

    if history:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot([h["train_nll"] for h in history], label="train")
        ax.plot([h["validation_nll"] for h in history], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("NLL (nats)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "training.png", dpi=110)
        plt.close(fig)


def _verdict(value: float, nominal: float) -> str:
    return "met" if abs(value - nominal) <= 0.03 + 1e-9 else "missed"


def report(results: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]], split: str) -> str:
    """Markdown tables of :func:`metrics` per checkpoint (``runs``: training facts per one)."""
    lines = [
        f"## Calibration on the {split} split",
        "",
        "Targets: coverage within ±3 points of nominal (0.65-0.71 for the 68 % interval, "
        "0.92-0.98 for the 95 % one).",
        "",
    ]
    for name, result in results.items():
        run = runs.get(name, {})
        lines += [
            f"### {name}",
            "",
            f"{result['n_events']} events, {result['n_samples']} samples each. "
            + (
                f"Training: seed {run['seed']}, {run['n_train']} events, best epoch "
                f"{run['best_epoch']} of {run['epochs_run']} run (validation NLL "
                f"{run['validation_nll']:.3f}), {run['cpu_seconds'] / 60:.1f} CPU minutes."
                if run
                else ""
            ),
            "",
            "| parameter | 68 % coverage | | 95 % coverage | | median half-width (68 %) "
            "| prior half-width | ratio |",
            "|---|---:|---|---:|---|---:|---:|---:|",
        ]
        for p in REPORTED:
            c68, c95 = result["coverage_68"][p], result["coverage_95"][p]
            width, prior = result["median_half_width_68"][p], result["prior_half_width_68"][p]
            lines.append(
                f"| {p} | {c68:.3f} | {_verdict(c68, 0.68)} | {c95:.3f} | {_verdict(c95, 0.95)} "
                f"| {width:.3g} | {prior:.3g} | {width / prior:.2f} |"
            )
        q = result["log_q_constrained"]
        cw = result["close_wide"]
        lines += [
            "",
            f"log q constrained (68 % interval narrower than {q['threshold_dex']:.2f} dex, half "
            f"the prior's): {q['all']:.3f} of all events; {q['planetary_truth']:.3f} of "
            f"planetary (true q < 0.01), {q['stellar_truth']:.3f} of stellar binaries. Of the "
            f"constrained, {result['log_q_constrained_correct_side']:.3f} have the posterior "
            "median on the true side of q = 0.01.",
            "",
            f"Close/wide: {cw['n_degenerate']} degenerate events; both modes present in "
            f"{cw['recovered_both_modes']:.3f} of them "
            f"({cw['recovered_when_log_q_constrained']:.3f} of the "
            f"{cw['n_degenerate_log_q_constrained']} whose log q is constrained). "
            f"Contrast: of {cw['n_distinct']} clearly distinct events (chi-square > 100), "
            f"{cw['both_modes_when_distinct']:.3f} still show both modes and "
            f"{cw['true_side_majority_when_distinct']:.3f} put most samples on the true side.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True)
    parser.add_argument("--split", default="test", choices=("validation", "test"))
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/flow-data"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    arrays = load_split(args.cache, args.split)
    truth = reported(arrays.theta)
    prior_width = prior_half_widths(200_000)
    results: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for k, path in enumerate(args.checkpoint):
        if path.name.startswith("binary-flow-"):
            model, history = load(path), []
        else:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            config = stored["config"] | {"dilations": tuple(stored["config"]["dilations"])}
            model = BinaryFlow(FlowConfig(**config))
            model.load_state_dict(stored["state_dict"])
            model.eval()
            history = stored["history"]
            best = min(history, key=lambda h: h["validation_nll"])
            runs[path.name] = {
                "seed": stored["training"]["seed"],
                "n_train": stored["training"].get("n_train", 0),
                "best_epoch": int(best["epoch"]),
                "epochs_run": len(history),
                "validation_nll": best["validation_nll"],
                "cpu_seconds": history[-1]["cpu_seconds"],
            }
        torch.manual_seed(0)
        samples = draw_samples(model, arrays, args.samples)
        result = metrics(samples, truth, arrays.dchi2_close_wide, prior_width)
        results[path.name] = result
        print(path.name, json.dumps(result["coverage_68"]), json.dumps(result["coverage_95"]))
        if k == 0:
            _plots(samples, truth, result, history, args.out)
    (args.out / f"metrics_{args.split}.json").write_text(
        json.dumps(results, indent=2) + "\n", encoding="utf-8"
    )
    (args.out / f"calibration_{args.split}.md").write_text(
        report(results, runs, args.split), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
