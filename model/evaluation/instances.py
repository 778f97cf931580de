"""Evaluate the LensNet artifact on the held-out simulated test set; write plots and a report.

The test stars are regenerated from the model card's recipe (simulator seed and star count,
:func:`model.dataset.split_indices`), so the same card always gives the same test set. Three
views of it (paper §8):

- **augmented**: the test stars cropped like the training data (random rise fraction in
  [min_fraction, 1], random left crops): the headline metrics;
- **full visibility**: every rising star cut at its peak with all history (the operational
  case, paper's non-augmented figures);
- **fraction of the rise visible** 0-100 % in steps of 10 % (paper Fig. 11), no left crop;
  stars without a rise window are cut at their last observation and appear at every fraction.

Accuracies are per class (paper §8.2: correct / instances of the class) and their mean. The
binary head is read at the paper's thresholds 0.45 (balanced) and 0.955 (high purity).

Baseline (paper §6: "features from the fitted piece-wise function ... classical ML"): a
regularised logistic / softmax regression on 40 summary statistics of the same preprocessed
arrays (per site: points, flux moments, peak, recent level, slope and scatter about the fitted
line before and after the break), fitted on the training split with L-BFGS in torch: no
scikit-learn dependency.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from model.dataset import CropConfig, Instances, load_split
from model.export import THRESHOLD_BALANCED, THRESHOLD_HIGH_PURITY, load_artifact
from model.lensnet import CLASS_NAMES
from model.simulate import SimulationConfig
from model.train import balanced_accuracy, predict

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

FRACTIONS: Final = tuple(round(0.1 * i, 1) for i in range(11))
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


def summary_features(instances: Instances) -> F64:
    """(N, 40) summary statistics per instance for the baseline (NaN-free)."""
    rows = np.zeros((len(instances), 40))
    for i in range(len(instances)):
        x, lengths = instances.item(i)
        values: list[float] = []
        for s in range(3):
            n = int(lengths[s])
            if n < 3:
                values += [0.0] * 13
                continue
            site = x[s, x.shape[1] - n :]
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


# ------------------------------------------------------------------------------------ report


def _recipe(card: dict[str, Any]) -> tuple[SimulationConfig, CropConfig]:
    config = card["training"]["config"]
    crop = CropConfig(**config["crop"])
    return SimulationConfig(n_stars=config["n_stars"], seed=config["seed"]), crop


def _scores(module: Any, instances: Instances) -> Scores:
    p_event, p_class, _ = predict(module, instances)
    return Scores(p_event, p_class)


def fraction_curve(
    module: Any,
    simulation: SimulationConfig,
    crop: CropConfig,
    cache: Path | None,
    progress: bool,
) -> dict[str, Any]:
    """Per-class accuracies vs the fraction of the rise visible (paper Fig. 11)."""
    curve: dict[str, Any] = {"fraction": list(FRACTIONS), "binary": {}, "three_class": {}}
    for key in (*BINARY_NAMES, "mean"):
        curve["binary"][key] = []
    for key in (*CLASS_NAMES, "mean"):
        curve["three_class"][key] = []
    for fraction in FRACTIONS:
        instances = load_split(
            simulation,
            "test",
            crop,
            fraction=fraction,
            left_crop=False,
            cache=cache,
            progress=progress,
        )
        scores = _scores(module, instances)
        binary = binary_metrics(instances.label, scores.p_event, THRESHOLD_BALANCED)
        for key in BINARY_NAMES:
            curve["binary"][key].append(binary["accuracy_per_class"][key])
        curve["binary"]["mean"].append(binary["mean_accuracy"])
        classes = class_metrics(instances.label, scores.p_class)
        for key in CLASS_NAMES:
            curve["three_class"][key].append(classes["accuracy_per_class"][key])
        curve["three_class"]["mean"].append(classes["mean_accuracy"])
    return curve


def evaluate_artifact(
    artifact: Path,
    out_dir: Path,
    *,
    cache: Path | None = None,
    progress: bool = False,
    update_card: bool = True,
) -> dict[str, Any]:
    """Score the regenerated test set, write ``out_dir/report.md`` and PNGs; returns metrics.

    With ``update_card`` the metrics (and what the thresholds give) go into the artifact's
    ``model_card.json``.
    """
    module, card = load_artifact(artifact)
    simulation, crop = _recipe(card)
    test = load_split(simulation, "test", crop, cache=cache, progress=progress)
    full = load_split(
        simulation, "test", crop, fraction=1.0, left_crop=False, cache=cache, progress=progress
    )
    test_scores = _scores(module, test)
    full_scores = _scores(module, full)
    train = load_split(simulation, "train", crop, cache=cache, progress=progress)
    baseline = Baseline.fit(summary_features(train), train.label)
    metrics: dict[str, Any] = {
        "test_augmented": set_metrics(test, test_scores),
        "test_full_visibility": set_metrics(full, full_scores),
        "baseline_test_augmented": set_metrics(test, baseline.predict(summary_features(test))),
        "baseline_test_full_visibility": set_metrics(
            full, baseline.predict(summary_features(full))
        ),
        "threshold_curve": threshold_curve(test.label, test_scores.p_event),
        "fraction_curve": fraction_curve(module, simulation, crop, cache, progress),
        "test_stars": len(np.unique(test.star_index)),
        "dropped_crops": int(test.n_dropped),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _plots(metrics, out_dir)
    (out_dir / "report.md").write_text(_report(card, metrics))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    if update_card:
        card["metrics"] = {
            key: metrics[key]
            for key in (
                "test_augmented",
                "test_full_visibility",
                "baseline_test_augmented",
                "baseline_test_full_visibility",
            )
        }
        for name, key in (("balanced", "binary_balanced"), ("high_purity", "binary_high_purity")):
            result = metrics["test_augmented"][key]
            card["thresholds"][name] |= {
                "accuracy_per_class": result["accuracy_per_class"],
                "mean_accuracy": result["mean_accuracy"],
                "purity_yes_maybe": result["purity_yes_maybe"],
            }
        (artifact.parent / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return metrics


def _plots(metrics: dict[str, Any], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = metrics["threshold_curve"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["threshold"], curve["NO"], color="tab:red", label="No")
    ax.plot(curve["threshold"], curve["YES+MAYBE"], color="tab:green", label="Yes + Maybe")
    ax.plot(curve["threshold"], curve["mean"], color="tab:brown", label="mean")
    for t in (THRESHOLD_BALANCED, THRESHOLD_HIGH_PURITY):
        ax.axvline(t, color="black", linestyle="--", linewidth=0.8)
    ax.set(xlabel="threshold on p_event", ylabel="accuracy", ylim=(0, 1.02))
    ax.set_title("Binary accuracy vs threshold (test, augmented)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out_dir / "threshold.png", dpi=110)
    plt.close(fig)

    curve = metrics["fraction_curve"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    percent = [100 * f for f in curve["fraction"]]
    for ax, task, keys in (
        (axes[0], "binary", (*BINARY_NAMES, "mean")),
        (axes[1], "three_class", (*CLASS_NAMES, "mean")),
    ):
        for name in keys:
            style = "k-" if name == "mean" else "-"
            ax.plot(percent, curve[task][name], style, marker="o", markersize=3, label=name)
        ax.set(xlabel="fraction of the rise visible (%)", ylim=(0, 1.02))
        ax.set_title(f"{task.replace('_', '-')} accuracy (test)")
        ax.legend(loc="lower right")
    axes[0].set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(out_dir / "fraction_visible.png", dpi=110)
    plt.close(fig)

    test = metrics["test_augmented"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    panels: tuple[tuple[Any, tuple[str, ...], str], ...] = (
        (test["binary_balanced"]["confusion"], BINARY_NAMES, "binary @ 0.45"),
        (test["binary_high_purity"]["confusion"], BINARY_NAMES, "binary @ 0.955"),
        (test["three_class"]["confusion"], CLASS_NAMES, "3-class (argmax)"),
    )
    for ax, (matrix, names, title) in zip(axes, panels, strict=True):
        counts = np.asarray(matrix, dtype=np.float64)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (r, c), value in np.ndenumerate(counts):
            color = "white" if rates[r, c] > 0.6 else "black"
            ax.text(c, r, f"{int(value)}\n{rates[r, c]:.1%}", ha="center", va="center", color=color)
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png", dpi=110)
    plt.close(fig)


def _row(name: str, result: dict[str, Any]) -> str:
    per = result["accuracy_per_class"]
    cells = " / ".join(f"{k} {v:.1%}" for k, v in per.items())
    return f"| {name} | {result['mean_accuracy']:.2%} | {cells} |"


def _report(card: dict[str, Any], metrics: dict[str, Any]) -> str:
    lines = [
        "# LensNet evaluation (simulated test set)",
        "",
        "Regenerated by `lensnet evaluate` from the artifact's model card: "
        f"`{card['training']['command']}`. Test stars: {metrics['test_stars']} (held out by "
        "star); accuracies are per class and their mean (paper §8.2).",
        "",
    ]
    for key, title in (
        ("test_augmented", "Test set, augmented crops (as in training)"),
        ("test_full_visibility", "Test set, full visibility (cut at the peak, all history)"),
        ("baseline_test_augmented", "Baseline (linear model on summary features), augmented"),
        ("baseline_test_full_visibility", "Baseline, full visibility"),
    ):
        result = metrics[key]
        counts = ", ".join(f"{k} {v}" for k, v in result["n_per_class"].items())
        lines += [
            f"## {title}",
            "",
            f"{result['n_instances']} instances ({counts}).",
            "",
            "| head | mean accuracy | per class |",
            "|---|---|---|",
            _row("binary @ 0.45", result["binary_balanced"]),
            _row("binary @ 0.955", result["binary_high_purity"]),
            _row("3-class", result["three_class"]),
            "",
            f"Purity of Yes+Maybe predictions: @0.45 "
            f"{_percent(result['binary_balanced']['purity_yes_maybe'])}, @0.955 "
            f"{_percent(result['binary_high_purity']['purity_yes_maybe'])}.",
            "",
            "Confusion (rows true, columns predicted): binary @0.45 "
            f"`{result['binary_balanced']['confusion']}`, @0.955 "
            f"`{result['binary_high_purity']['confusion']}`, 3-class (No, Maybe, Yes) "
            f"`{result['three_class']['confusion']}`.",
            "",
        ]
    lines += [
        "## Binary accuracy @ 0.45 per subclass (test, augmented)",
        "",
        "| subclass | instances | accuracy |",
        "|---|---:|---:|",
    ]
    per_subclass = metrics["test_augmented"]["binary_balanced_per_subclass"]
    for name, entry in per_subclass.items():
        lines.append(f"| {name} | {entry['n']} | {entry['accuracy']:.1%} |")
    lines.append("")
    curve = metrics["fraction_curve"]
    lines += [
        "## Accuracy vs fraction of the rise visible (paper Fig. 11)",
        "",
        "| visible | binary mean | 3-class mean |",
        "|---|---|---|",
    ]
    for i, fraction in enumerate(curve["fraction"]):
        lines.append(
            f"| {fraction:.0%} | {curve['binary']['mean'][i]:.1%} | "
            f"{curve['three_class']['mean'][i]:.1%} |"
        )
    lines += [
        "",
        "![fraction](fraction_visible.png)",
        "",
        "![threshold](threshold.png)",
        "",
        "![confusion](confusion.png)",
        "",
    ]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
