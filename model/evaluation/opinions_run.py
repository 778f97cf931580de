"""The novelty and second-opinion report (``lensnet novelty choose-cut`` and ``lensnet novelty
evaluate``): the seasons, the order of the choices and what is written.

1. **Validation** (:func:`choose_cut`): each held-out-subclass model (``lensnet novelty train
   --holdout NAME``) scores the validation seasons' instances; the training percentile with the
   best mean F1 over the held-out subclasses (:func:`model.evaluation.opinions.choose_percentile`)
   becomes the shipped model's cut, written into its artifact (a new version: the cut is a
   buffer of the module).
2. **Test, once** (:func:`evaluate_opinions`): the held-out-subclass models at the chosen
   percentile, the shipped model's unusual share per subclass, and the second opinion beside
   LensNet (AUC-ROC, accuracies at 0.45 and 0.955, per subclass), on the test seasons.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.dataset import TEST_SEASONS, VALIDATION_SEASONS, CropConfig, SeasonSet, load_set
from model.evaluation.instances import Scores
from model.evaluation.opinions import (
    choose_percentile,
    comparison,
    energies,
    flagged_by_subclass,
    holdout_metrics,
    second_opinion_scores,
    write_json,
)
from model.export import shipped_cadence
from model.export_novelty import load_novelty, named_artifact, save_novelty
from model.novelty import NoveltyConfig, NoveltyNet


def choose_cut(
    holdout_artifacts: Sequence[Path],
    shipped: Path,
    out_dir: Path,
    *,
    validation_seasons: SeasonSet = VALIDATION_SEASONS,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Choose the cut's training percentile on validation; re-save ``shipped`` (a folder) with
    its energy cut at that percentile of its own training energies. Writes
    ``out_dir/novelty-validation.json``."""
    instances = load_set(validation_seasons, CropConfig(), cadence=shipped_cadence(), cache=cache)
    per_model = []
    for path in holdout_artifacts:
        module, card = load_novelty(path)
        per_model.append(holdout_metrics(energies(module, instances), instances.subclass, card))
    percentile, means = choose_percentile(per_model)
    metrics = {
        "seasons": [validation_seasons.seeds, validation_seasons.n_stars],
        "holdout_models": [str(p) for p in holdout_artifacts],
        "per_model": per_model,
        "mean_f1_by_percentile": means,
        "chosen_percentile": percentile,
    }
    metrics["shipped"] = str(set_cut(shipped, percentile, means[percentile]))
    write_json(metrics, out_dir / "novelty-validation.json")
    return metrics


def set_cut(folder: Path, percentile: str, validation_f1: float) -> Path:
    """Re-save the novelty artifact in ``folder`` with its cut at its training ``percentile``."""
    module, card = load_novelty(folder)
    model = NoveltyNet(NoveltyConfig(**card["model_config"]))
    model.load_state_dict(module.state_dict())
    cut = float(card["energy_cut"]["training_percentiles"][percentile])
    model.energy_cut.fill_(torch.tensor(cut, dtype=torch.float64))
    old = card["energy_cut"]["training_percentile"]
    card["energy_cut"] = {
        **card["energy_cut"],
        "value": cut,
        "training_percentile": float(percentile),
        "chosen_on": "validation seasons: the best mean F1 over held-out subclasses "
        f"({validation_f1:.4f}; evaluation/novelty-validation.json)",
    }
    training = card["training"]
    training["command"] = training["command"].replace(
        f"--cut-percentile {old:g}", f"--cut-percentile {float(percentile):g}"
    )
    return save_novelty(model, card, folder)


def evaluate_opinions(
    holdout_artifacts: Sequence[Path],
    lensnet: Path | None,
    out_dir: Path,
    *,
    test_seasons: SeasonSet = TEST_SEASONS,
    cache: Path | None = None,
) -> dict[str, Any]:
    """The test-season figures (run once, after :func:`choose_cut`); writes
    ``out_dir/opinions-test.json`` and ``out_dir/opinions.md``."""
    from model.export import load_artifact
    from model.export_novelty import SECOND_OPINION_DIR
    from model.second_opinion import load_booster
    from model.train import predict

    validation = json.loads((out_dir / "novelty-validation.json").read_text())
    percentile = validation["chosen_percentile"]
    instances = load_set(test_seasons, CropConfig(), cadence=shipped_cadence(), cache=cache)
    per_model = []
    for path in holdout_artifacts:
        module, card = load_novelty(path)
        per_model.append(holdout_metrics(energies(module, instances), instances.subclass, card))
    novelty, novelty_card = load_novelty()
    shipped_energy = energies(novelty, instances)
    booster = load_booster(named_artifact(SECOND_OPINION_DIR))
    lensnet_module, lensnet_card = load_artifact(lensnet)
    p_event, p_class, _ = predict(lensnet_module, instances, 256, "cpu")
    models = {
        "lensnet": Scores(p_event=p_event, p_class=p_class),
        "second_opinion": second_opinion_scores(novelty, booster, instances),
    }
    metrics = {
        "seasons": [test_seasons.seeds, test_seasons.n_stars],
        "n_instances": len(instances),
        "chosen_percentile": percentile,
        "holdout": per_model,
        "shipped_novelty": {
            "version": novelty_card.get("version"),
            "cut": float(novelty.energy_cut),
            "unusual_by_subclass": flagged_by_subclass(
                shipped_energy, instances.subclass, float(novelty.energy_cut)
            ),
        },
        "versions": {
            "lensnet": lensnet_card.get("version"),
            "novelty": novelty_card.get("version"),
            "second_opinion": booster.version,
        },
        "comparison": comparison(instances, models),
    }
    write_json(metrics, out_dir / "opinions-test.json")
    (out_dir / "opinions.md").write_text(markdown(validation, metrics))
    return metrics


def _holdout_table(per_model: Sequence[dict[str, Any]], percentile: str) -> list[str]:
    lines = [
        "| held-out subclass | AUC-ROC | recall | FPR | precision (mix) | F1 (mix) "
        "| precision (paper ratio) | F1 (paper ratio) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    f1s = []
    for model in per_model:
        for name, entry in model.items():
            f = entry["at_percentile"][percentile]
            f1s.append(f["f1_paper_ratio"])
            lines.append(
                f"| {name} (n={f['n_novel']}, normal {f['n_normal']}) | {entry['auroc']:.3f} "
                f"| {f['recall']:.3f} | {f['false_positive_rate']:.3f} | {f['precision']:.3f} "
                f"| {f['f1']:.3f} | {f['precision_paper_ratio']:.3f} | {f['f1_paper_ratio']:.3f} |"
            )
    lines.append(f"| **mean** | | | | | | | **{np.mean(f1s):.3f}** |")
    return lines


def markdown(validation: dict[str, Any], test: dict[str, Any]) -> str:
    """``opinions.md``: the tables of the module docstring."""
    p = test["chosen_percentile"]
    means = sorted(validation["mean_f1_by_percentile"].items(), key=lambda kv: float(kv[0]))
    out = [
        "# Novelty and second opinion: evaluation",
        "",
        "Written by `lensnet novelty choose-cut` (validation seasons "
        f"{validation['seasons'][0]}, {validation['seasons'][1]} stars each) and `lensnet "
        f"novelty evaluate` (test seasons {test['seasons'][0]}, {test['seasons'][1]} stars "
        f"each, {test['n_instances']} instances, scored once). Versions: {test['versions']}.",
        "",
        "## Novelty: held-out subclasses (Tsang & Schultz 2019, §3.2)",
        "",
        "Each model was trained without one subclass; flagged = energy above the training "
        "percentile chosen on validation. Precision and F1 are given in the seasons' own mix "
        "and at the paper's ratio (0.55 novel per normal instance).",
        "",
        "Mean F1 (paper ratio) over the held-out subclasses on validation, per training "
        "percentile: " + ", ".join(f"p{k}: {v:.3f}" for k, v in means) + f"; chosen: p{p}.",
        "",
        f"### Validation, at p{p}",
        "",
        *_holdout_table(validation["per_model"], p),
        "",
        f"### Test, at p{p}",
        "",
        *_holdout_table(test["holdout"], p),
        "",
        "## Shipped novelty model: unusual share per subclass (test)",
        "",
        f"Cut {test['shipped_novelty']['cut']:.3f} (training p{p}).",
        "",
        "| subclass | n | unusual |",
        "|---|---|---|",
    ]
    for name, entry in test["shipped_novelty"]["unusual_by_subclass"].items():
        out.append(f"| {name} | {entry['n']} | {entry['unusual']:.3f} |")
    comp = test["comparison"]
    out += [
        "",
        "## Second opinion vs LensNet (test)",
        "",
        "| model | AUC-ROC | mean accuracy @0.45 | mean accuracy @0.955 | 3-class accuracy |",
        "|---|---|---|---|---|",
    ]
    for name, m in comp["models"].items():
        out.append(
            f"| {name} | {m['auroc']:.4f} | {m['binary_balanced']['mean_accuracy']:.4f} "
            f"| {m['binary_high_purity']['mean_accuracy']:.4f} "
            f"| {m['three_class']['mean_accuracy']:.4f} |"
        )
    if "agreement" in comp:
        a = comp["agreement"]
        out += [
            "",
            f"Agreement (1 - |p_event difference|): mean {a['mean']:.3f}; same side of 0.45: "
            f"{a['same_side_0.45']:.3f}.",
        ]
    out += [
        "",
        "Share of each subclass's instances called positive (p_event at or above the "
        "threshold; positive is right for label 1-2, wrong for 0):",
        "",
        "| subclass | label | n | LensNet @0.45 | 2nd @0.45 | LensNet @0.955 | 2nd @0.955 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in comp["per_subclass"].items():
        a, b = e["lensnet"], e["second_opinion"]
        out.append(
            f"| {name} | {e['label']} | {e['n']} | {a['positive_0.45']:.3f} "
            f"| {b['positive_0.45']:.3f} | {a['positive_0.955']:.3f} | {b['positive_0.955']:.3f} |"
        )
    return "\n".join(out) + "\n"
