"""Stage: the novelty score and the second opinion of every alert LensNet decided.

LensNet decides which candidates alert (:mod:`consumer.pipeline.scoring`); this stage runs the
two other light-curve networks on exactly those candidates, the same
:class:`~model.features.Candidate` LensNet saw, in one batched pass
(:func:`model.second_opinion.assess`), and returns the alerts with their ``novelty`` and
``second_opinion`` records set. It changes no decision: an unusual light curve or a dissenting
second opinion is information for the observer, not a veto.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from consumer.edge.alert import Alert
from consumer.edge.opinions import NoveltyScore, SecondOpinion
from consumer.exceptions import LensNetError
from consumer.settings import OpinionSettings
from model.export_novelty import SECOND_OPINION_DIR, load_novelty, named_artifact
from model.features import Candidate
from model.second_opinion import assess, load_booster

T = TypeVar("T")


class Opinions:
    """Holds the two artifacts; annotates alerts."""

    def __init__(self, settings: OpinionSettings, batch_size: int = 32) -> None:
        self.novelty, card = load_novelty(settings.novelty_path)
        self.novelty_version = str(card.get("version", ""))
        self.components = [str(name) for name in card.get("components", [])]
        path = settings.second_opinion_path or SECOND_OPINION_DIR
        self.booster = load_booster(named_artifact(path) if Path(path).is_dir() else Path(path))
        if self.booster.novelty_version != self.novelty_version:
            raise LensNetError(
                f"second-opinion artifact {self.booster.version} was trained on the features "
                f"of novelty {self.booster.novelty_version}, not {self.novelty_version} "
                "(LENSNET_MODEL__OPINIONS__NOVELTY_PATH / __SECOND_OPINION_PATH)"
            )
        self.batch_size = batch_size
        self.seconds = 0.0  # wall time of the last :meth:`attach`

    def attach(self, alerts: Sequence[tuple[T, Alert, Candidate]]) -> list[tuple[T, Alert]]:
        """``(key, alert, candidate)`` -> ``(key, alert with novelty and second opinion)``."""
        started = time.perf_counter()
        opinions = assess(
            self.novelty,
            self.booster,
            self.components,
            [candidate for _, _, candidate in alerts],
            self.batch_size,
        )
        cut = float(self.novelty.energy_cut)
        out = []
        for (key, alert, _), opinion in zip(alerts, opinions, strict=True):
            novelty = NoveltyScore(
                model_version=self.novelty_version,
                energy=opinion.energy,
                energy_cut=cut,
                unusual=opinion.unusual,
                nearest_subclass=opinion.nearest,
            )
            second = SecondOpinion(
                model_version=self.booster.version,
                p_event=opinion.p_event,
                p_no=opinion.p_class[0],
                p_maybe=opinion.p_class[1],
                p_yes=opinion.p_class[2],
            )
            out.append((key, dataclasses.replace(alert, novelty=novelty, second_opinion=second)))
        self.seconds = time.perf_counter() - started
        return out
