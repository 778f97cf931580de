"""The novelty score and the second opinion an alert carries (alert schema 1.2), and their Avro
records. Both are optional in the schema: alerts of 1.0 writers, or of a daemon running without
the two models, have neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LABELS = ("NO", "MAYBE", "YES")


@dataclass(frozen=True)
class NoveltyScore:
    """How unlike the training seasons the candidate's light curve is (model/novelty.py).

    ``energy`` is the Gaussian-mixture sample energy (higher: less like anything in training);
    ``unusual`` is ``energy > energy_cut``; ``nearest_subclass`` the training subclass whose
    mixture component claims the candidate most.
    """

    model_version: str
    energy: float
    energy_cut: float
    unusual: bool
    nearest_subclass: str


@dataclass(frozen=True)
class SecondOpinion:
    """The gradient-boosting classifier's scores (model/second_opinion.py), LensNet's heads'
    counterparts."""

    model_version: str
    p_event: float
    p_no: float
    p_maybe: float
    p_yes: float

    @property
    def label(self) -> str:
        """Most probable of NO, MAYBE, YES."""
        return LABELS[int(np.argmax([self.p_no, self.p_maybe, self.p_yes]))]


def agreement(p_event: float, opinion: SecondOpinion | None) -> float | None:
    """``1 - |p_event - opinion.p_event|``: 1 when LensNet and the second opinion give the same
    binary score, 0 when one says 0 and the other 1; None without a second opinion."""
    return None if opinion is None else 1.0 - abs(p_event - opinion.p_event)


def novelty_to_record(score: NoveltyScore | None) -> dict[str, Any] | None:
    if score is None:
        return None
    return {
        "model_version": score.model_version,
        "energy": score.energy,
        "energy_cut": score.energy_cut,
        "unusual": score.unusual,
        "nearest_subclass": score.nearest_subclass,
    }


def novelty_from_record(record: dict[str, Any] | None) -> NoveltyScore | None:
    if record is None:
        return None
    return NoveltyScore(
        model_version=record["model_version"],
        energy=record["energy"],
        energy_cut=record["energy_cut"],
        unusual=record["unusual"],
        nearest_subclass=record["nearest_subclass"],
    )


def second_opinion_to_record(opinion: SecondOpinion | None) -> dict[str, Any] | None:
    if opinion is None:
        return None
    return {
        "model_version": opinion.model_version,
        "p_event": opinion.p_event,
        "p_no": opinion.p_no,
        "p_maybe": opinion.p_maybe,
        "p_yes": opinion.p_yes,
        "label": opinion.label,
    }


def second_opinion_from_record(record: dict[str, Any] | None) -> SecondOpinion | None:
    if record is None:
        return None
    return SecondOpinion(
        model_version=record["model_version"],
        p_event=record["p_event"],
        p_no=record["p_no"],
        p_maybe=record["p_maybe"],
        p_yes=record["p_yes"],
    )
