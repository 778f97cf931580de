"""Artifacts on the validation seasons only, under one trigger: the daemon's outcomes, for
choosing a recipe (a trigger rule, a fine-tune) without touching the test seasons.

    python -m model.evaluation.validation_check --artifact A.pt --artifact B.pt \\
        [--rules 'name=HIGH;LOW'] [--workers 2] [--device auto] [--out calls.npz]

Every artifact is scored at the same calls: those of ``--rules`` (default: the first
artifact's card, :func:`model.timeline.card_cadence`), so a model can also be tried on calls
it was not trained on. Prints, per artifact, the Generalise issue's figures with the daemon's
magnification gate (and event recall without it).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from consumer.pointlens.gate import MIN_PEAK_MAGNIFICATION
from model.dataset import VALIDATION_SEASONS
from model.evaluation.cadence import cadence_metrics, run_seasons, save_calls
from model.evaluation.trigger_scan import parse_rules
from model.export import load_artifact
from model.timeline import DEFAULT_CADENCE, card_cadence
from model.train import resolve_device

#: (label, threshold, key) of the figures printed per artifact.
FIGURES = (
    ("events t0>=20 d alerted before the peak", "0.45", "event_recall_before_peak_t0_ge_20"),
    ("same", "0.955", "event_recall_before_peak_t0_ge_20"),
    ("events t0 10-40 d alerted before the peak", "0.45", "event_recall_before_peak_early"),
    (
        "LensNet's share among events triggered before the peak",
        "0.45",
        "triggered_before_peak_recall",
    ),
)


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f} %"


def report(metrics: dict[str, Any], names: list[str]) -> list[str]:
    """One block of lines per artifact (``metrics`` from
    :func:`~model.evaluation.cadence.cadence_metrics`, plus ``non_event_subclasses``: the
    subclasses whose alerts are false, listed when 5 % or more of their stars alert)."""
    lines = [
        f"{metrics['n_stars']} stars, {metrics['n_calls']} LensNet calls, "
        f"trigger before the peak {_pct(metrics['trigger_before_peak_t0_ge_20'])} (t0 >= 20 d), "
        f"{_pct(metrics['trigger_before_peak_early'])} (t0 10-40 d)"
    ]
    for name, entry in zip(names, metrics["per_model"], strict=True):
        lines.append(f"{name}:")
        for label, threshold, key in FIGURES:
            lines.append(f"  {label} @ {threshold}: {_pct(entry[threshold][key])}")
        for threshold in ("0.45", "0.955"):
            per_class = entry[threshold]["alerted_per_class"]
            lines.append(
                f"  non-event stars alerted @ {threshold}: {_pct(per_class['NO'])}, "
                f"artefacts (MAYBE) {_pct(per_class['MAYBE'])}"
            )
        lines.append(f"  events staying events to peak + 20 d: {_pct(entry['events_stay_events'])}")
        shares = entry["0.45"]["alerted_per_subclass"]
        worst = sorted(
            (share, name)
            for name, share in shares.items()
            if name in metrics.get("non_event_subclasses", ()) and share >= 0.05
        )[::-1]
        if worst:
            lines.append(
                "  non-event subclasses alerted >= 5 % @ 0.45: "
                + ", ".join(f"{name} {_pct(share)}" for share, name in worst)
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, action="append", required=True)
    parser.add_argument(
        "--rules", default=None, help="name=HIGH;LOW (k/n@n_sigma:dchi2_min[~average][^part])"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--validation-stars", type=int, default=VALIDATION_SEASONS.n_stars, help="a season"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when present)")
    parser.add_argument("--out", type=Path, default=None, help="save the scored calls here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = [load_artifact(path) for path in args.artifact]
    device = resolve_device(args.device)
    loaded = [(module.to(device), card) for module, card in loaded]
    cadence = (
        next(iter(parse_rules([args.rules], DEFAULT_CADENCE).values()))
        if args.rules
        else card_cadence(loaded[0][1])
    )
    seasons = replace(VALIDATION_SEASONS, n_stars=args.validation_stars)
    print(
        f"validation seasons {list(seasons.seeds)} ({seasons.n_stars} stars each), "
        f"trigger {cadence.describe()}"
    )
    stars, probes = run_seasons(
        [module for module, _ in loaded],
        seasons,
        cadence=cadence,
        workers=args.workers,
        device=device,
        progress=True,
    )
    if args.out is not None:
        save_calls(stars, probes, args.out)
    names = [
        str(card.get("version") or path.stem)
        for path, (_, card) in zip(args.artifact, loaded, strict=True)
    ]
    others = sorted({s.subclass for s in stars if s.label == "NO"})
    for title, gate in (
        ("with the magnification gate (the daemon's default)", MIN_PEAK_MAGNIFICATION),
        ("without it", 0.0),
    ):
        print(f"{title}:")
        metrics = cadence_metrics(stars, probes, (0.45, 0.955), min_magnification=gate)
        for line in report({**metrics, "non_event_subclasses": others}, names):
            print(line)


if __name__ == "__main__":
    main()
