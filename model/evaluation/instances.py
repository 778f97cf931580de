"""Instance metrics (paper §8) and the linear baseline they are compared with.

Accuracies are per class (paper §8.2: correct / instances of the class) and their mean; the
binary head is read at the paper's thresholds 0.45 (balanced) and 0.955 (high purity).

Baseline (paper §6: "features from the fitted piece-wise function ... classical ML"): a
regularised logistic / softmax regression on 40 summary statistics of the same preprocessed
arrays (per site: points, flux moments, peak, recent level, slope and scatter about the fitted
line before and after the break), fitted with L-BFGS in torch: no scikit-learn dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from model.dataset import Instances
from model.export import THRESHOLD_BALANCED, THRESHOLD_HIGH_PURITY
from model.lensnet import CLASS_NAMES
from model.train import balanced_accuracy

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

THRESHOLD_GRID: Final = np.round(np.linspace(0.0, 1.0, 201), 3)
BINARY_NAMES: Final = ("NO", "YES+MAYBE")


@dataclass(frozen=True)
class Scores:
    """Model outputs on a set of instances, aligned with it."""

    p_event: F64
    p_class: F64


def confusion(truth: I64, predicted: I64, n_classes: int) -> list[list[int]]:
    """Counts[true][predicted]."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix.tolist()


def per_class_accuracy(truth: I64, predicted: I64, names: tuple[str, ...]) -> dict[str, float]:
    return {
        name: float(np.mean(predicted[truth == c] == c)) if np.any(truth == c) else float("nan")
        for c, name in enumerate(names)
    }


def binary_metrics(label: I64, p_event: F64, threshold: float) -> dict[str, Any]:
    """Per-class and mean accuracy, confusion and purity of the binary head at ``threshold``."""
    truth = (label > 0).astype(np.int64)
    predicted = (p_event >= threshold).astype(np.int64)
    positive = predicted == 1
    return {
        "threshold": threshold,
        "accuracy_per_class": per_class_accuracy(truth, predicted, BINARY_NAMES),
        "mean_accuracy": balanced_accuracy(truth, predicted, 2),
        "overall_accuracy": float(np.mean(truth == predicted)),
        "purity_yes_maybe": float(np.mean(truth[positive] == 1)) if positive.any() else None,
        "confusion": confusion(truth, predicted, 2),
    }


def class_metrics(label: I64, p_class: F64) -> dict[str, Any]:
    predicted = p_class.argmax(axis=1)
    return {
        "accuracy_per_class": per_class_accuracy(label, predicted, CLASS_NAMES),
        "mean_accuracy": balanced_accuracy(label, predicted, 3),
        "overall_accuracy": float(np.mean(label == predicted)),
        "confusion": confusion(label, predicted, 3),
    }


def set_metrics(instances: Instances, scores: Scores) -> dict[str, Any]:
    return {
        "n_instances": len(instances),
        "n_per_class": {
            name: int(np.sum(instances.label == c)) for c, name in enumerate(CLASS_NAMES)
        },
        "binary_balanced": binary_metrics(instances.label, scores.p_event, THRESHOLD_BALANCED),
        "binary_high_purity": binary_metrics(
            instances.label, scores.p_event, THRESHOLD_HIGH_PURITY
        ),
        "three_class": class_metrics(instances.label, scores.p_class),
        "binary_balanced_per_subclass": subclass_accuracy(instances, scores.p_event),
    }


def subclass_accuracy(instances: Instances, p_event: F64) -> dict[str, dict[str, float]]:
    """Binary accuracy at the balanced threshold for each simulated subclass."""
    correct = (p_event >= THRESHOLD_BALANCED) == (instances.label > 0)
    return {
        str(name): {
            "n": int(np.sum(instances.subclass == name)),
            "accuracy": float(np.mean(correct[instances.subclass == name])),
        }
        for name in sorted(set(instances.subclass.tolist()))
    }


def threshold_curve(label: I64, p_event: F64) -> dict[str, list[float]]:
    """Binary per-class and mean accuracy over :data:`THRESHOLD_GRID` (paper Fig. 12)."""
    truth = label > 0
    no = [float(np.mean(p_event[~truth] < t)) for t in THRESHOLD_GRID]
    yes = [float(np.mean(p_event[truth] >= t)) for t in THRESHOLD_GRID]
    return {
        "threshold": THRESHOLD_GRID.tolist(),
        "NO": no,
        "YES+MAYBE": yes,
        "mean": [(a + b) / 2 for a, b in zip(no, yes, strict=True)],
    }


# ---------------------------------------------------------------------------------- baseline


def summary_features(instances: Instances, index: I64 | None = None) -> F64:
    """(N, 40) summary statistics of the instances ``index`` (all when None) for the baseline
    (NaN-free)."""
    chosen = np.arange(len(instances)) if index is None else index
    rows = np.zeros((len(chosen), 40))
    for i, position in enumerate(chosen.tolist()):
        x, lengths = instances.item(position)
        values: list[float] = []
        for s in range(3):
            n = int(lengths[s])
            if n < 3:
                values += [0.0] * 13
                continue
            site = x[s, :n]
            flux, fitted, time = site[:, 1], site[:, 7], site[:, 0]
            residual = flux - fitted
            rising = fitted > fitted[0] + 1e-6
            before = residual[~rising] if (~rising).sum() > 2 else residual
            after = residual[rising] if rising.sum() > 2 else np.zeros(1)
            centred = flux - flux.mean()
            sd = float(centred.std()) or 1.0
            slope = (fitted[-1] - fitted[0]) / max(float(time[-1] - time[0]), 1e-3)
            values += [
                np.log1p(n),
                float(flux.mean()),
                sd,
                float(np.mean(centred**3)) / sd**3,
                float(np.mean(centred**4)) / sd**4,
                float(flux.max()),
                float(flux[-5:].mean()),
                float(fitted[-1]),
                float(np.tanh(slope)),
                float(before.std()),
                float(after.std()),
                np.log1p(float(rising.sum())),
                float(np.nanmean(site[:, 4])) if np.isfinite(site[:, 4]).any() else 0.0,
            ]
        values.append(float(np.log1p(lengths.sum())))
        rows[i] = values
    return np.nan_to_num(rows, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class Baseline:
    """Standardised linear models (binary logistic and 3-class softmax) on summary features."""

    mean: F64
    std: F64
    binary: torch.Tensor  # (41,)
    classes: torch.Tensor  # (41, 3)

    @classmethod
    def fit(cls, features: F64, label: I64, l2: float = 1e-3) -> Baseline:
        mean, std = features.mean(axis=0), features.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        z = torch.tensor((features - mean) / std, dtype=torch.float64)
        z = torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], dim=1)
        y = torch.tensor(label)
        counts = torch.bincount(y, minlength=3).double().clamp_min(1)
        class_w = (len(y) / (3 * counts))[y]
        yb = (y > 0).double()
        n_pos = yb.sum().clamp_min(1)
        n_neg = (len(yb) - yb.sum()).clamp_min(1)
        binary_w = torch.where(yb > 0, len(yb) / (2 * n_pos), len(yb) / (2 * n_neg))
        wb = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
        wc = torch.zeros(z.shape[1], 3, dtype=torch.float64, requires_grad=True)

        def solve(w: torch.Tensor, loss_of: Any) -> None:
            optimiser = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                optimiser.zero_grad()
                loss = loss_of(w) + l2 * (w[:-1] ** 2).sum()
                loss.backward()
                return loss

            optimiser.step(closure)

        solve(
            wb,
            lambda w: (
                torch.nn.functional.binary_cross_entropy_with_logits(z @ w, yb, reduction="none")
                * binary_w
            ).mean(),
        )
        solve(
            wc,
            lambda w: (
                torch.nn.functional.cross_entropy(z @ w, y, reduction="none") * class_w
            ).mean(),
        )
        return cls(mean, std, wb.detach(), wc.detach())

    def predict(self, features: F64) -> Scores:
        z = torch.tensor((features - self.mean) / self.std, dtype=torch.float64)
        z = torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], dim=1)
        return Scores(
            p_event=torch.sigmoid(z @ self.binary).numpy(),
            p_class=torch.softmax(z @ self.classes, dim=1).numpy(),
        )


# ------------------------------------------------------------------------------ site scores


def site_metrics(instances: Instances, site_scores: F64) -> dict[str, Any]:
    """How per-site scores (N, 3) relate to per-site labels, over the sites with data.

    ``flat`` sites are those of YES/MAYBE instances whose own signal does not show the rise
    (site label 0), ``signal`` sites those whose does; ``no_class`` every site of a NO
    instance.
    """
    present = instances.lengths > 0
    positive = (instances.label > 0)[:, None] & present
    flat = positive & (instances.site_target < 0.5)
    signal = positive & (instances.site_target >= 0.5)
    no_class = (instances.label == 0)[:, None] & present

    def share(mask: npt.NDArray[np.bool_], test: npt.NDArray[np.bool_]) -> float:
        return float(test[mask].mean()) if mask.any() else float("nan")

    return {
        "n_flat_sites": int(flat.sum()),
        "n_signal_sites": int(signal.sum()),
        "flat_le_0.1": share(flat, site_scores <= 0.1),
        "flat_ge_0.45": share(flat, site_scores >= 0.45),
        "signal_ge_0.45": share(signal, site_scores >= 0.45),
        "no_class_le_0.1": share(no_class, site_scores <= 0.1),
    }


#: Bins of the fraction of the rise visible (above 1: after the peak).
FRACTION_BINS: Final = (
    (0.0, 0.25),
    (0.25, 0.5),
    (0.5, 0.75),
    (0.75, 1.0),
    (1.0, 1.5),
    (1.5, 100.0),
)


def fraction_accuracy(instances: Instances, p_event: F64) -> dict[str, float]:
    """Binary recall @ 0.45 of YES instances by the fraction of the rise visible (Fig. 11)."""
    yes = instances.label == 2
    hit = p_event >= THRESHOLD_BALANCED
    out = {}
    for low, high in FRACTION_BINS:
        chosen = yes & (instances.fraction >= low) & (instances.fraction < high)
        out[f"{low:g}-{high:g}"] = float(hit[chosen].mean()) if chosen.any() else float("nan")
    return out
