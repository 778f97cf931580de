"""Evaluate one or more LensNet artifacts (training seeds) on seasons nobody tuned on.

``lensnet evaluate --artifact A [--artifact B ...]`` runs, for every artifact:

1. **Instance metrics** (paper §8) on the test seasons' instances, cut as in training but with
   every auxiliary column present, and again with all of them removed (magnitude-only inputs):
   binary accuracy at 0.45 / 0.955, 3-class accuracy, per subclass, per-site scores against
   per-site labels, recall vs the fraction of the rise visible, and the linear baseline.
2. **The daemon's outcomes** (:mod:`model.evaluation.cadence`) on whole validation and test
   seasons: stars alerted at least once per class and subclass, event recall by lead time,
   time in the season and baseline magnitude, lead times, events staying events after the
   peak, and site scores of constant stars.

Validation seasons serve only to choose which seed is shipped (:func:`choose`); the test
seasons are reported once, for every seed, as mean ± sd.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from consumer.pointlens.gate import MIN_PEAK_MAGNIFICATION
from model.dataset import (
    TEST_SEASONS,
    TRAIN_SEASONS,
    VALIDATION_SEASONS,
    CropConfig,
    SeasonSet,
    code_version,
    load_set,
)
from model.evaluation import report
from model.evaluation.cadence import (
    Probes,
    StarCalls,
    cadence_metrics,
    run_seasons,
    save_calls,
    summarise,
)
from model.evaluation.instances import (
    Baseline,
    Scores,
    fraction_accuracy,
    set_metrics,
    site_metrics,
    summary_features,
    threshold_curve,
)
from model.export import load_artifact
from model.timeline import DEFAULT_CADENCE, Cadence, card_cadence
from model.train import predict, resolve_device

#: Test instances with every auxiliary column, and with none (magnitude-only archives).
FULL_COLUMNS = CropConfig(magnitude_only_probability=0.0, aux_missing_probability=0.0)
MAGNITUDE_ONLY = CropConfig(magnitude_only_probability=1.0)
#: Training instances the baseline is fitted on (a random subset; it is a linear model).
BASELINE_INSTANCES = 8000


def choose(validation: dict[str, Any]) -> int:
    """The shipped seed: the best validation figure of merit, the mean of event recall before
    the peak @ 0.45 (peaks >= 20 d into the season) and the share of non-event stars never
    alerted @ 0.955. Test seasons play no part."""
    merits = [
        0.5 * m["0.45"]["event_recall_before_peak_t0_ge_20"]
        + 0.5 * (1.0 - m["0.955"]["alerted_per_class"]["NO"])
        for m in validation["per_model"]
    ]
    return int(np.nanargmax(merits))


def _instance_metrics(
    modules: Sequence[Any], seasons: SeasonSet, crop: CropConfig, **load: Any
) -> dict[str, Any]:
    instances = load_set(seasons, crop, **{k: v for k, v in load.items() if k != "device"})
    per_model = []
    for module in modules:
        p_event, p_class, site_scores = predict(module, instances, 512, str(load["device"]))
        entry = set_metrics(instances, Scores(p_event, p_class))
        entry["sites"] = site_metrics(instances, site_scores)
        entry["recall_by_fraction_visible"] = fraction_accuracy(instances, p_event)
        entry["threshold_curve"] = threshold_curve(instances.label, p_event)
        per_model.append(entry)
    keep = (
        "binary_balanced",
        "binary_high_purity",
        "three_class",
        "sites",
        "recall_by_fraction_visible",
    )
    return {
        "n_instances": len(instances),
        "n_stars": len(
            set(zip(instances.season.tolist(), instances.star_index.tolist(), strict=True))
        ),
        "per_model": per_model,
        "summary": summarise([{k: m[k] for k in keep if k in m} for m in per_model]),
    }


def evaluate(
    artifacts: Sequence[Path],
    out_dir: Path,
    *,
    cache: Path | None = None,
    workers: int = 1,
    device: str = "auto",
    progress: bool = False,
    validation_seasons: SeasonSet | None = None,
    test_seasons: SeasonSet = TEST_SEASONS,
    train_seasons: SeasonSet | None = None,
    baseline: bool = True,
    validation_calls: tuple[Sequence[StarCalls], Probes] | None = None,
) -> dict[str, Any]:
    """Evaluate the artifacts; writes ``report.md``, ``metrics.json``, the scored calls
    (``calls-*.npz``) and PNGs in ``out_dir`` and returns the metrics (``metrics["chosen"]`` is
    the index of the seed to ship). Training and validation seasons default to those in the
    first artifact's card. ``validation_calls``: the validation seasons already scored by these
    artifacts, in this order (e.g. :func:`load_calls` of an earlier run), instead of rescoring."""
    where = resolve_device(device)
    loaded = [load_artifact(path) for path in artifacts]
    modules = [module.to(where) for module, _ in loaded]
    cards = [card for _, card in loaded]
    cadence = cards_cadence(cards)
    train_seasons = train_seasons or _card_seasons(cards[0], "train_seasons", TRAIN_SEASONS)
    validation_seasons = validation_seasons or _card_seasons(
        cards[0], "validation_seasons", VALIDATION_SEASONS
    )
    load = {
        "cache": cache,
        "workers": workers,
        "progress": progress,
        "device": where,
        "cadence": cadence,
    }
    metrics: dict[str, Any] = {
        "artifacts": [str(path) for path in artifacts],
        "versions": [card.get("version") for card in cards],
        "code_version": code_version(),
        "trigger": cadence.describe(),
        "seasons": {
            "train": [train_seasons.seeds, train_seasons.n_stars],
            "validation": [validation_seasons.seeds, validation_seasons.n_stars],
            "test": [test_seasons.seeds, test_seasons.n_stars],
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    validation_stars, validation_probes = validation_calls or run_seasons(
        modules,
        validation_seasons,
        cadence=cadence,
        workers=workers,
        device=where,
        progress=progress,
    )
    if validation_stars and validation_stars[0].p_event.shape[0] != len(modules):
        raise ValueError("validation_calls were scored by another number of artifacts")
    save_calls(validation_stars, validation_probes, out_dir / "calls-validation.npz")
    metrics["validation_cadence"] = cadence_metrics(
        validation_stars, validation_probes, (0.45, 0.955)
    )
    metrics["chosen"] = choose(metrics["validation_cadence"])
    test_stars, test_probes = run_seasons(
        modules, test_seasons, cadence=cadence, workers=workers, device=where, progress=progress
    )
    save_calls(test_stars, test_probes, out_dir / "calls-test.npz")
    metrics["test_cadence"] = cadence_metrics(test_stars, test_probes, (0.45, 0.955))
    metrics["test_cadence_no_gate"] = cadence_metrics(
        test_stars, test_probes, (0.45, 0.955), min_magnification=0.0
    )
    metrics["test_full"] = _instance_metrics(modules, test_seasons, FULL_COLUMNS, **load)
    metrics["test_magnitude_only"] = _instance_metrics(
        modules, test_seasons, MAGNITUDE_ONLY, **load
    )
    if baseline:
        metrics["baseline_test_full"] = _baseline(train_seasons, test_seasons, load)
    render(metrics, cards, out_dir)
    return metrics


def render(metrics: dict[str, Any], cards: Sequence[dict[str, Any]], out_dir: Path) -> None:
    """Write ``metrics.json``, the PNGs and ``report.md`` into ``out_dir``."""
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=_json) + "\n")
    images = report.plots(metrics, out_dir)
    (out_dir / "report.md").write_text(markdown(metrics, cards, images))


def _baseline(train: SeasonSet, test: SeasonSet, load: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in load.items() if k != "device"}
    train_set = load_set(train, CropConfig(), **options)
    rng = np.random.default_rng(5)
    subset = np.sort(
        rng.choice(len(train_set), min(BASELINE_INSTANCES, len(train_set)), replace=False)
    )
    model = Baseline.fit(summary_features(train_set, subset), train_set.label[subset])
    test_set = load_set(test, FULL_COLUMNS, **options)
    return set_metrics(test_set, model.predict(summary_features(test_set)))


def cards_cadence(cards: Sequence[dict[str, Any]]) -> Cadence:
    """The schedule and trigger rules every artifact was trained on (the daemon's defaults for
    older cards); ValueError when they differ, since one evaluation replays one schedule."""
    cadences = [card_cadence(card) for card in cards]
    if any(c != cadences[0] for c in cadences):
        raise ValueError(
            "the artifacts were trained on different trigger rules: "
            + "; ".join(c.describe() for c in cadences)
        )
    return cadences[0] if cadences else DEFAULT_CADENCE


def _card_seasons(card: dict[str, Any], key: str, default: SeasonSet) -> SeasonSet:
    try:
        entry = card["training"]["config"][key]
        return SeasonSet(
            str(entry["name"]), tuple(int(s) for s in entry["seeds"]), int(entry["n_stars"])
        )
    except (KeyError, TypeError, ValueError):
        return default


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON: {type(value)}")


def markdown(
    metrics: dict[str, Any], cards: Sequence[dict[str, Any]], images: Sequence[str]
) -> str:
    """The report's text."""
    n = len(cards)
    chosen = metrics["chosen"]
    seeds = metrics["seasons"]
    lines = [
        "# LensNet evaluation",
        "",
        f"Written by `lensnet evaluate` for {n} model(s) trained with different seeds "
        f"(versions {', '.join(str(v) for v in metrics['versions'])}); figures are the mean ± "
        f"sd over the {n} seed(s). Simulator and feature code version "
        f"`{metrics['code_version']}`.",
        "",
        f"- Trigger rules (from the cards; the daemon must run the same): "
        f"{metrics.get('trigger', DEFAULT_CADENCE.describe())} "
        "(k/n@n_sigma:dchi2_min[~average][^part]).",
        f"- Training seasons: seeds {seeds['train'][0]}, {seeds['train'][1]} stars each.",
        f"- Validation seasons (epoch and shipped seed chosen here only): seeds "
        f"{seeds['validation'][0]}, {seeds['validation'][1]} stars each.",
        f"- **Test seasons** (never used for any choice; reported once): seeds "
        f"{seeds['test'][0]}, {seeds['test'][1]} stars each. Different frames, nights, weather, "
        "site calendars and cadence mix from every training season.",
        f"- Shipped: seed index {chosen} (version {metrics['versions'][chosen]}), the best "
        "validation figure of merit (`model.evaluation.run.choose`).",
        "",
        "## Targets (test seasons)",
        "",
        *report.targets_table(metrics),
        "",
        "## What the daemon does with whole test seasons",
        "",
        "Every star of the test seasons goes through the daemon's schedule "
        "(`model.timeline`: the AlertFinder at every closed 0.25-d window with new data, LensNet "
        "on triggered stars, a rejected star rescored after 1 d of data); an alert at threshold "
        "T is the first call scoring >= T whose point-lens fit peaks at least "
        f"{MIN_PEAK_MAGNIFICATION:g} times magnified (the daemon's magnification gate, below). "
        "Alerted fractions count stars alerted at least once "
        f"in the season ({metrics['test_cadence']['n_stars']} stars, "
        f"{metrics['test_cadence']['n_calls']} LensNet calls).",
        "",
        *report.cadence_tables(metrics["test_cadence"]),
        "",
        *_gate_lines(metrics),
        "## Instance metrics (paper §8), test seasons",
        "",
        "Instances cut at the daemon's calls as in training (plus random-time cuts of never-"
        "triggered non-events). Accuracies are per class and their mean.",
        "",
        "| inputs | instances | binary @ 0.45 | binary @ 0.955 | 3-class | purity Y+M @ 0.45 |",
        "|---|---:|---|---|---|---|",
        *report.instance_table("all columns", metrics["test_full"]),
        *report.instance_table(
            "magnitude-only (no sky, FWHM, airmass, PSF)", metrics["test_magnitude_only"]
        ),
    ]
    if "baseline_test_full" in metrics:
        b = metrics["baseline_test_full"]
        lines.append(
            f"| baseline (linear, summary features), all columns | {b['n_instances']} | "
            f"{report.fmt(b['binary_balanced']['mean_accuracy'])} | "
            f"{report.fmt(b['binary_high_purity']['mean_accuracy'])} | "
            f"{report.fmt(b['three_class']['mean_accuracy'])} | "
            f"{report.fmt(b['binary_balanced']['purity_yes_maybe'] or math.nan)} |"
        )
    sites = metrics["test_full"]["summary"]["sites"]
    fraction = metrics["test_full"]["summary"]["recall_by_fraction_visible"]
    lines += [
        "",
        "**Site scores** (all columns): on YES/MAYBE instances, sites whose own signal is flat "
        f"score <= 0.1 in {report.fmt(sites['flat_le_0.1'])} and >= 0.45 in "
        f"{report.fmt(sites['flat_ge_0.45'])}; sites showing the rise score >= 0.45 in "
        f"{report.fmt(sites['signal_ge_0.45'])}; every site of NO instances <= 0.1 in "
        f"{report.fmt(sites['no_class_le_0.1'])}. Constant stars at random times: "
        f"{report.fmt(metrics['test_cadence']['summary']['constant_site_scores_le_0.1'])} of "
        f"{metrics['test_cadence']['n_constant_probes']} site scores <= 0.1.",
        "",
        "**Recall of YES instances @ 0.45 by the fraction of the rise visible** (paper Fig. 11; "
        "above 1: after the peak): "
        + ", ".join(f"{key}: {report.fmt(value)}" for key, value in fraction.items())
        + ".",
        "",
        "## Validation seasons (for the choice of seed)",
        "",
        *report.cadence_tables(metrics["validation_cadence"], subclasses=False),
        "",
        "## Plots",
        "",
        *[f"![{name}]({name})" for name in images],
        "",
    ]
    return "\n".join(lines)


def _gate_lines(metrics: dict[str, Any]) -> list[str]:
    """The magnification gate's effect on the test seasons: the daemon's figures with and
    without it (same calls, same scores)."""
    if "test_cadence_no_gate" not in metrics:
        return []
    rows = []
    for threshold in ("0.45", "0.955"):
        cells = []
        for key in ("test_cadence_no_gate", "test_cadence"):
            entry = metrics[key]["summary"][threshold]
            cells.append(
                (
                    report.fmt(entry["event_recall_before_peak_t0_ge_20"]),
                    report.fmt(entry["alerted_per_class"]["NO"]),
                    report.fmt(entry["alerted_per_subclass"]["slow_trend"]),
                    report.fmt(entry["alerted_per_class"]["MAYBE"]),
                )
            )
        for name, (before, no, slow, maybe) in zip(("without", "with"), cells, strict=True):
            rows.append(f"| {threshold} | {name} | {before} | {no} | {slow} | {maybe} |")
    return [
        "**The magnification gate** (`model.min_peak_magnification`, "
        f"{MIN_PEAK_MAGNIFICATION:g}; `consumer/pointlens/gate.py`): a call at or above the "
        "threshold alerts only if the point-lens fit of its light curve peaks at least that "
        "magnified. Same calls and scores, with and without it:",
        "",
        "| threshold | gate | events (t0 >= 20 d) alerted before the peak | non-event stars "
        "alerted | slow trends | artefacts (MAYBE) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


__all__ = ["choose", "evaluate", "markdown"]
