"""Evaluation of the novelty network and the second opinion (``lensnet novelty evaluate``).

**Novelty, the paper's way** (Tsang & Schultz 2019, §3.2): a model trained without some
subclasses (``lensnet novelty train --holdout ...``) flags an instance as novel when its energy
is above a percentile of its training energies; for each held-out subclass, precision, recall
and F1 of flagging its instances among the instances of the subclasses it was trained on.
Precision depends on how many novel instances the mix holds, so it is given twice: in the
seasons' own mix (every instance of the held-out subclass among every normal instance) and at
the paper's ratio (its ~5 300 VAR sequences among its ~9 600 validation sequences: 0.55 novel
per normal instance), from the same true- and false-positive rates. AUC-ROC of the energy,
which no mix changes, beside them. The percentile is chosen on the validation seasons (the
best mean F1 at the paper's ratio over the held-out subclasses); the test seasons are then
scored once at that percentile.

**Second opinion vs LensNet** on the test seasons' instances: AUC-ROC of the binary score,
binary mean accuracy at 0.45 and 0.955 and 3-class accuracy
(:func:`model.evaluation.instances.set_metrics`, LensNet's report's metrics) and, per subclass,
the share of instances each model calls Yes + Maybe at both thresholds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from model.dataset import Instances, Rows
from model.evaluation.instances import Scores, set_metrics
from model.export import THRESHOLD_BALANCED, THRESHOLD_HIGH_PURITY
from model.second_opinion import Booster, features, novelty_outputs

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

#: Novel instances per normal instance in the paper's test mix (5 300 VAR / ~9 600).
PAPER_NOVEL_RATIO: Final = 5300 / 9600


def auroc(positive: F64, negative: F64) -> float:
    """Area under the ROC curve of ``positive`` scored above ``negative`` (ties count half)."""
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks of ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def flagging(novel: F64, normal: F64, cut: float) -> dict[str, float]:
    """Precision, recall and F1 of ``energy > cut`` (seasons' mix and the paper's ratio)."""
    tp = float(np.sum(novel > cut))
    fp = float(np.sum(normal > cut))
    recall = tp / max(len(novel), 1)
    fpr = fp / max(len(normal), 1)
    precision = tp / (tp + fp) if tp + fp else 0.0
    paper = PAPER_NOVEL_RATIO * recall
    precision_paper = paper / (paper + fpr) if paper + fpr else 0.0

    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r) if p + r else 0.0

    return {
        "cut": cut,
        "recall": recall,
        "false_positive_rate": fpr,
        "precision": precision,
        "f1": f1(precision, recall),
        "precision_paper_ratio": precision_paper,
        "f1_paper_ratio": f1(precision_paper, recall),
        "n_novel": len(novel),
        "n_normal": len(normal),
    }


@torch.no_grad()
def energies(novelty: Any, rows: Rows, batch_size: int = 128) -> F64:
    """(N,) energies of every instance (LensNet's full input, as the daemon sends it)."""
    out = np.zeros(len(rows))
    order = np.argsort(rows.lengths.max(axis=1), kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        x, lengths = rows.batch(index)
        energy, _, _ = novelty_outputs(novelty, x, lengths)
        out[index] = energy
    return out


def holdout_metrics(
    energy: F64, subclass: npt.NDArray[np.str_], card: dict[str, Any]
) -> dict[str, Any]:
    """Per held-out subclass of ``card``'s model, flagging at each recorded training
    percentile, and the energy's AUC-ROC."""
    holdout = list(card.get("holdout", []))
    normal = ~np.isin(subclass, holdout)
    percentiles = card["energy_cut"]["training_percentiles"]
    out: dict[str, Any] = {}
    for name in holdout:
        novel = subclass == name
        out[name] = {
            "auroc": auroc(energy[novel], energy[normal]),
            "at_percentile": {
                p: flagging(energy[novel], energy[normal], cut) for p, cut in percentiles.items()
            },
        }
    return out


def choose_percentile(per_model: Sequence[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """The training percentile with the best mean F1 at the paper's ratio over every held-out
    subclass of every model (validation), and that mean for each percentile."""
    means: dict[str, list[float]] = {}
    for metrics in per_model:
        for entry in metrics.values():
            for p, figures in entry["at_percentile"].items():
                means.setdefault(p, []).append(figures["f1_paper_ratio"])
    mean = {p: float(np.mean(v)) for p, v in means.items()}
    return max(mean, key=lambda p: mean[p]), mean


def flagged_by_subclass(energy: F64, subclass: npt.NDArray[np.str_], cut: float) -> dict[str, Any]:
    """Share of each subclass's instances the shipped model calls unusual."""
    return {
        str(name): {
            "n": int(np.sum(subclass == name)),
            "unusual": float(np.mean(energy[subclass == name] > cut)),
        }
        for name in sorted(set(subclass.tolist()))
    }


# ---------------------------------------------------------------------------------- second opinion


@torch.no_grad()
def second_opinion_scores(
    novelty: Any, booster: Booster, rows: Rows, batch_size: int = 128
) -> Scores:
    """The second opinion's probabilities on every instance."""
    p_event = np.zeros(len(rows))
    p_class = np.zeros((len(rows), 3))
    order = np.argsort(rows.lengths.max(axis=1), kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        x, lengths = rows.batch(index)
        energy, z, _ = novelty_outputs(novelty, x, lengths)
        p_event[index], p_class[index] = booster.predict(features(energy, z, x, lengths))
    return Scores(p_event=p_event, p_class=p_class)


def comparison(instances: Instances, models: dict[str, Scores]) -> dict[str, Any]:
    """Each model's instance metrics, AUC-ROC and per-subclass positive rates."""
    truth = instances.label > 0
    out: dict[str, Any] = {"models": {}, "per_subclass": {}}
    for name, scores in models.items():
        metrics = set_metrics(instances, scores)
        metrics["auroc"] = auroc(scores.p_event[truth], scores.p_event[~truth])
        out["models"][name] = metrics
    for sub in sorted(set(instances.subclass.tolist())):
        rows = instances.subclass == sub
        entry: dict[str, Any] = {"n": int(rows.sum()), "label": int(instances.label[rows][0])}
        for name, scores in models.items():
            entry[name] = {
                "positive_0.45": float(np.mean(scores.p_event[rows] >= THRESHOLD_BALANCED)),
                "positive_0.955": float(np.mean(scores.p_event[rows] >= THRESHOLD_HIGH_PURITY)),
            }
        out["per_subclass"][sub] = entry
    names = list(models)
    if len(names) == 2:
        a, b = models[names[0]], models[names[1]]
        agree = 1.0 - np.abs(a.p_event - b.p_event)
        out["agreement"] = {
            "mean": float(agree.mean()),
            "same_side_0.45": float(
                np.mean((a.p_event >= THRESHOLD_BALANCED) == (b.p_event >= THRESHOLD_BALANCED))
            ),
        }
    return out


def write_json(metrics: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
