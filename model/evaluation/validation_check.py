"""Artifacts on the validation seasons only, under one trigger: the daemon's outcomes, for
choosing a recipe (a trigger rule, a fine-tune) without touching the test seasons.

    python -m model.evaluation.validation_check --artifact A.pt --artifact B.pt \\
        [--rules 'name=HIGH;LOW'] [--workers 2] [--device auto] [--out calls.npz]
    python -m model.evaluation.validation_check --calls calls.npz [--gates 0,2,3,4]

Every artifact is scored at the same calls: those of ``--rules`` (default: the first
artifact's card, :func:`model.timeline.card_cadence`), so a model can also be tried on calls
it was not trained on. Prints, per artifact, the Generalise issue's figures with the daemon's
magnification gate (and event recall without it). ``--calls`` reads calls saved by ``--out``
instead of scoring (seconds instead of minutes): the same figures at other gates.

With a gate, each block also says how often the first alerting call's fit sits at the prior:
a peak magnification within 0.1 of ``A(u0)`` at the prior's centre
(:data:`consumer.pointlens.fit.PRIOR_U0`), where the data do not yet constrain ``u0`` and the
gate passes on the prior alone.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from consumer.pointlens.fit import PRIOR_U0, magnification
from consumer.pointlens.gate import MIN_PEAK_MAGNIFICATION, MagnificationGate
from model.dataset import VALIDATION_SEASONS
from model.evaluation.cadence import StarCalls, cadence_metrics, load_calls, run_seasons, save_calls
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


#: Peak magnification of a fit at its prior's centre, and how close counts as "at the prior".
PRIOR_MAGNIFICATION: Final = float(magnification(PRIOR_U0))
AT_PRIOR: Final = 0.1


def at_prior(
    stars: Sequence[StarCalls], model: int, threshold: float, gate: float
) -> dict[str, float]:
    """Per label (``YES`` and ``NO``): the share of the stars that alert (``model`` at
    ``threshold``, the gate at ``gate``) whose first alerting call's fitted peak magnification
    is within :data:`AT_PRIOR` of :data:`PRIOR_MAGNIFICATION` (NaN without alerting stars)."""
    check = MagnificationGate(gate)
    hits: dict[str, list[bool]] = {"YES": [], "NO": []}
    for star in stars:
        if star.label not in hits or star.peak_magnification is None:
            continue
        magnifications = star.peak_magnification.tolist()
        for score, value in zip(star.p_event[model].tolist(), magnifications, strict=True):
            if score >= threshold and check.passes(value):
                hits[star.label].append(abs(value - PRIOR_MAGNIFICATION) < AT_PRIOR)
                break
    return {label: float(np.mean(v)) if v else math.nan for label, v in hits.items()}


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
        if "at_prior" in entry:
            share = entry["at_prior"]
            lines.append(
                f"  first alerting call @ 0.45 with the fit at the prior (A "
                f"{PRIOR_MAGNIFICATION:.2f} +- {AT_PRIOR}): events {_pct(share['YES'])}, "
                f"non-events {_pct(share['NO'])}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, action="append", default=[])
    parser.add_argument(
        "--calls", type=Path, default=None, help="calls saved by --out: report, do not score"
    )
    parser.add_argument(
        "--gates",
        default=f"{MIN_PEAK_MAGNIFICATION:g},0",
        help="comma-separated minimum peak magnifications, one block each (0: no gate)",
    )
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
    if not args.artifact and args.calls is None:
        parser.error("give --artifact (to score) or --calls (saved calls)")
    try:
        gates = [float(g) for g in args.gates.split(",")]
    except ValueError:
        parser.error(f"--gates: comma-separated numbers, got {args.gates!r}")
    torch.set_num_threads(args.threads)
    loaded = [load_artifact(path) for path in args.artifact]
    names = [
        str(card.get("version") or path.stem)
        for path, (_, card) in zip(args.artifact, loaded, strict=True)
    ]
    if args.calls is not None:
        stars, probes = load_calls(args.calls)
        n_models = stars[0].p_event.shape[0] if stars else 0
        names = names if len(names) == n_models else [f"model {m}" for m in range(n_models)]
        print(f"{args.calls}: {len(stars)} stars, {n_models} models")
    else:
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
    others = sorted({s.subclass for s in stars if s.label == "NO"})
    for gate in gates:
        title = "without the magnification gate" if gate <= 0 else f"with the gate at A >= {gate:g}"
        print(f"{title}{' (the daemon default)' if gate == MIN_PEAK_MAGNIFICATION else ''}:")
        metrics = cadence_metrics(stars, probes, (0.45, 0.955), min_magnification=gate)
        if gate > 0:
            for model, entry in enumerate(metrics["per_model"]):
                entry["at_prior"] = at_prior(stars, model, 0.45, gate)
        for line in report({**metrics, "non_event_subclasses": others}, names):
            print(line)


if __name__ == "__main__":
    main()
