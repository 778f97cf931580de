"""The second opinion: gradient boosting on the novelty encoder's features and the AlertFinder's
figures (after Yang, "Machine learning for real time classification of transient events: a
recurrent neural network auto-encoder and gradient boosting classifier"), and the batch API
that scores candidates with both new models.

Features per candidate (:func:`features`), all computed from LensNet's own input ``(x,
lengths)`` (:func:`model.features.collate`), so training instances and the daemon's candidates
go through one path:

- the novelty network's estimation input ``z`` (embedding, reconstruction errors, summaries)
  and its sample energy (:mod:`model.novelty`);
- the AlertFinder's figures recomputed from the candidate's flux, error and fitted-line
  features (:func:`trigger_figures`): Δχ² of the broken line against per-site weighted means
  (the AlertFinder's own statistic: flux and error are divided by the same scale, so χ² is
  unchanged), the line's rise at the last point and its slope, the days since the break, the
  share of the last 10 points 3 sigma above the site median, sites with data and in the fitted
  combination, points and days covered.

Library: LightGBM (see :data:`LIBRARY_DECISION`). The artifact is one JSON file holding the
binary and the 3-class boosters as LightGBM's text model format, the feature names and the
version of the novelty artifact whose features it was trained on; its name carries a hash of
its content (``second-opinion-<version>.json``), like LensNet's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt
import torch

from consumer.exceptions import LensNetError
from model.features import Candidate, collate
from model.novelty import SUMMARY_NAMES

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: Why LightGBM (recorded in the card).
LIBRARY_DECISION: Final = (
    "LightGBM: its text model format is stable across versions and read by LightGBM's C API "
    "and other tools (a portable artifact, unlike scikit-learn's pickles, which load only on "
    "the version that wrote them); both boosters predict a batch of 32 in ~5 ms with one "
    "thread (432 + 3 x 280 trees, bench/bench_opinions.py); the wheel is small, where "
    "XGBoost's Linux wheel pulls in CUDA's NCCL and scikit-learn's HistGradientBoosting "
    "saves as a pickle."
)
#: :func:`trigger_figures` column names.
FIGURE_NAMES: Final = (
    "log_dchi2",
    "rise",
    "asinh_slope",
    "log_days_since_break",
    "high_fraction_last10",
    "sites_with_data",
    "sites_in_fit",
    "log_points",
)
#: Points of the merged light curve whose share of 3-sigma highs is a feature (the
#: low-cadence rule's n).
LAST_POINTS: Final = 10
HIGH_SIGMA: Final = 3.0


def trigger_figures(x: F32, lengths: I64) -> F64:
    """The AlertFinder's figures from LensNet's input (one compiled pass per candidate).

    Parameters
    ----------
    x : (B, S, L, 8) raw features (``time``, ``flux`` = arcsinh((f - median) / scale),
        ``flux_err`` / scale, ..., ``fitted`` = arcsinh((line - median) / scale)).
    lengths : (B, S) real steps per site.

    Returns
    -------
    (B, len(FIGURE_NAMES)) float64, see the module docstring. A site's line is *in the fit*
    when it varies (the datasets outside the reported combination get their flat mean); the
    break is the last point before the line leaves its flat level, and the rise, slope and
    days since the break are those of the fitted site whose line ends highest.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    out = np.zeros((x.shape[0], len(FIGURE_NAMES)))
    _figures(x, lengths, LAST_POINTS, HIGH_SIGMA, out)
    return out


@numba.njit(cache=True)
def _figures(  # pragma: no cover - numba
    x: F32, lengths: I64, last_points: int, high_sigma: float, out: F64
) -> None:
    b, s = lengths.shape
    newest_t = np.empty(s * last_points)
    newest_high = np.empty(s * last_points, dtype=np.bool_)
    for i in range(b):
        dchi2 = 0.0
        rise, slope, since = -np.inf, 0.0, 0.0
        top = -np.inf  # highest last fitted value of any site (when none is in the fit)
        in_fit, present, points, m = 0, 0, 0, 0
        for site in range(s):
            n = lengths[i, site]
            if n == 0:
                continue
            present += 1
            points += n
            sw = swf = swff = swr = 0.0
            flat = np.sinh(np.float64(x[i, site, 0, 7]))
            tol = 1e-3 * max(1.0, abs(flat))
            first = -1
            for k in range(n):
                flux = np.sinh(np.float64(x[i, site, k, 1]))
                error = max(np.float64(x[i, site, k, 2]), 1e-9)
                line = np.sinh(np.float64(x[i, site, k, 7]))
                w = 1.0 / (error * error)
                sw += w
                swf += w * flux
                swff += w * flux * flux
                swr += w * (flux - line) ** 2
                if first < 0 and abs(line - flat) > tol:
                    first = k
                if k >= n - last_points:
                    newest_t[m] = x[i, site, k, 0]
                    newest_high[m] = flux >= high_sigma * error
                    m += 1
            dchi2 += (swff - swf * swf / sw) - swr
            last_fitted = np.float64(x[i, site, n - 1, 7])
            top = max(top, last_fitted)
            if first >= 0:
                in_fit += 1
                t_break = x[i, site, max(first - 1, 0), 0]
                days = max(np.float64(x[i, site, n - 1, 0]) - t_break, 1e-3)
                if last_fitted > rise:
                    rise = last_fitted
                    slope = (np.sinh(last_fitted) - flat) / days
                    since = days
        if present == 0:
            continue
        # the share of highs among the newest points of the merged light curve
        order = np.argsort(-newest_t[:m], kind="mergesort")
        k = min(last_points, m)
        n_high = 0
        for j in range(k):
            n_high += newest_high[order[j]]
        out[i, 0] = np.log10(1.0 + max(dchi2, 0.0))
        out[i, 1] = rise if in_fit else top
        out[i, 2] = np.arcsinh(slope)
        out[i, 3] = np.log10(1.0 + since)
        out[i, 4] = n_high / max(k, 1)
        out[i, 5] = present
        out[i, 6] = in_fit
        out[i, 7] = np.log10(max(points, 1))


def feature_names(embedding: int) -> list[str]:
    """Column names of :func:`features` for an encoder of ``embedding`` dimensions."""
    return [
        *(f"embedding_{i}" for i in range(embedding)),
        "reconstruction_distance",
        "reconstruction_cosine",
        *SUMMARY_NAMES,
        "energy",
        *FIGURE_NAMES,
    ]


@torch.no_grad()
def novelty_outputs(novelty: Any, x: F32, lengths: I64) -> tuple[F64, F32, F32]:
    """``(energy (B,), z (B, D), gamma (B, K))`` of the novelty module on one batch."""
    energy, z, gamma = novelty(torch.from_numpy(x), torch.from_numpy(lengths))
    return energy.numpy(), z.numpy(), gamma.numpy()


def features(energy: F64, z: F32, x: F32, lengths: I64) -> F64:
    """(B, D + 1 + 8) boosting input: ``z``, energy, AlertFinder figures."""
    return np.concatenate(
        [z.astype(np.float64), energy.reshape(-1, 1), trigger_figures(x, lengths)], axis=1
    )


# ---------------------------------------------------------------------------------- artifact


@dataclass(frozen=True)
class Booster:
    """The second opinion's two boosters and what they were trained on."""

    binary: Any  # lightgbm.Booster
    classes: Any  # lightgbm.Booster, 3 classes (No, Maybe, Yes)
    feature_names: tuple[str, ...]
    novelty_version: str
    version: str

    def predict(self, table: F64) -> tuple[F64, F64]:
        """``(p_event (B,), p_class (B, 3))``."""
        if len(table) == 0:
            return np.zeros(0), np.zeros((0, 3))
        p_event = np.asarray(self.binary.predict(table, num_threads=1), dtype=np.float64)
        p_class = np.asarray(self.classes.predict(table, num_threads=1), dtype=np.float64)
        return p_event.reshape(-1), p_class.reshape(-1, 3)


def booster_document(binary: Any, classes: Any, names: Sequence[str], novelty_version: str) -> str:
    """The artifact's JSON text (deterministic: the version hashes it)."""
    return json.dumps(
        {
            "format": "lightgbm-text",
            "feature_names": list(names),
            "novelty_version": novelty_version,
            "binary": binary.model_to_string(),
            "classes": classes.model_to_string(),
        },
        sort_keys=True,
    )


def content_version(document: str) -> str:
    """10 hex digits of SHA-256 over the artifact's text."""
    return hashlib.sha256(document.encode()).hexdigest()[:10]


def load_booster(path: Path) -> Booster:
    """Read a ``second-opinion-<version>.json`` artifact.

    Raises
    ------
    LensNetError
        Unreadable, or not a second-opinion artifact.
    """
    import lightgbm

    try:
        text = path.read_text()
        document = json.loads(text)
        binary = lightgbm.Booster(model_str=document["binary"])
        classes = lightgbm.Booster(model_str=document["classes"])
    except (OSError, ValueError, KeyError, lightgbm.basic.LightGBMError) as error:
        raise LensNetError(f"{path}: not a second-opinion artifact ({error})") from error
    return Booster(
        binary=binary,
        classes=classes,
        feature_names=tuple(document["feature_names"]),
        novelty_version=str(document["novelty_version"]),
        version=content_version(text),
    )


# ---------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Opinion:
    """The two new models' verdict on one candidate.

    Attributes
    ----------
    energy : the novelty network's sample energy (higher: less like the training data).
    unusual : ``energy`` above the novelty artifact's cut.
    nearest : the mixture component (training subclass) with the highest membership.
    p_event, p_class : the second opinion's binary and 3-class (No, Maybe, Yes) probabilities.
    """

    energy: float
    unusual: bool
    nearest: str
    p_event: float
    p_class: tuple[float, float, float]


#: Candidates per forward pass, as LensNet's :data:`model.classify.BATCH_SIZE`.
BATCH_SIZE: Final = 32


def assess(
    novelty: Any,
    booster: Booster,
    components: Sequence[str],
    candidates: Sequence[Candidate],
    batch_size: int = BATCH_SIZE,
) -> list[Opinion]:
    """Novelty and second opinion for candidates, in chunks sorted by length (as
    :func:`model.classify.score`); results in input order and independent of the chunking."""
    cut = float(novelty.energy_cut)
    results: list[Opinion | None] = [None] * len(candidates)
    order = sorted(range(len(candidates)), key=lambda i: int(candidates[i].lengths.max()))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        x, lengths = collate([candidates[i] for i in chunk])
        energy, z, gamma = novelty_outputs(novelty, x, lengths)
        p_event, p_class = booster.predict(features(energy, z, x, lengths))
        for row, i in enumerate(chunk):
            pc = p_class[row]
            results[i] = Opinion(
                energy=float(energy[row]),
                unusual=bool(energy[row] > cut),
                nearest=str(components[int(np.argmax(gamma[row]))]),
                p_event=float(p_event[row]),
                p_class=(float(pc[0]), float(pc[1]), float(pc[2])),
            )
    return [r for r in results if r is not None]


class OpinionModels:
    """The novelty artifact and the second opinion's boosters, loaded together (offline
    ``lensnet classify``; the daemon's stage is :mod:`consumer.pipeline.second_opinion`)."""

    def __init__(self, novelty_path: Path | None = None, booster_path: Path | None = None) -> None:
        from model.export_novelty import SECOND_OPINION_DIR, load_novelty, named_artifact

        self.novelty, card = load_novelty(novelty_path)
        self.novelty_version = str(card.get("version", ""))
        self.components = [str(name) for name in card.get("components", [])]
        path = booster_path or SECOND_OPINION_DIR
        self.booster = load_booster(named_artifact(path) if path.is_dir() else path)
        if self.booster.novelty_version != self.novelty_version:
            raise LensNetError(
                f"second-opinion artifact {self.booster.version} was trained on the features of "
                f"novelty {self.booster.novelty_version}, not {self.novelty_version}"
            )

    def records(self, candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
        """Per candidate, the JSON-ready ``novelty`` and ``second_opinion`` entries."""
        cut = float(self.novelty.energy_cut)
        out = []
        for opinion in assess(self.novelty, self.booster, self.components, candidates):
            p_no, p_maybe, p_yes = opinion.p_class
            out.append(
                {
                    "novelty": {
                        "model_version": self.novelty_version,
                        "energy": round(opinion.energy, 4),
                        "energy_cut": round(cut, 4),
                        "unusual": opinion.unusual,
                        "nearest_subclass": opinion.nearest,
                    },
                    "second_opinion": {
                        "model_version": self.booster.version,
                        "p_event": round(opinion.p_event, 6),
                        "p_no": round(p_no, 6),
                        "p_maybe": round(p_maybe, 6),
                        "p_yes": round(p_yes, 6),
                    },
                }
            )
        return out
