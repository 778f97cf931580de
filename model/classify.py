"""Score stars with the LensNet artifact: the batch API the daemon calls, and offline scoring.

Scoring a batch of stars (what the daemon does)::

    module, card = load_artifact()                     # once, at startup
    candidates = [prepare(star, as_of=hjd, rule=rule) for star in stars]
    scores = score(module, candidates)                 # one forward pass per chunk

:func:`prepare` raises :class:`~model.features.InsufficientDataError` for a star with fewer than
10 valid I-band points in every site; the caller reports it. :func:`classify_season` is the
offline path of ``lensnet classify``: it reads a season directory (native, ``.pysis`` or
magnitude files), and yields one JSON-ready dict per star, including stars that cannot be
scored (with ``status`` and ``reason``) and unreadable files: nothing is skipped silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from consumer.alertfinder.api import TriggerRule
from consumer.constants import SITES
from consumer.pointlens.gate import MagnificationGate, candidate_datasets, fitted_peak_magnification
from consumer.seasons.archive import ReadReport, Star, iter_season
from model.export import THRESHOLD_BALANCED, THRESHOLD_HIGH_PURITY
from model.features import Candidate, InsufficientDataError, collate, prepare
from model.lensnet import CLASS_NAMES
from model.second_opinion import OpinionModels
from model.timeline import DEFAULT_CADENCE, Cadence

#: Candidates per forward pass (the padded length is the longest in the chunk).
BATCH_SIZE: Final = 32


@dataclass(frozen=True)
class Score:
    """LensNet's output for one candidate.

    Attributes
    ----------
    p_event : probability of Yes or Maybe (binary head).
    p_class : probabilities of No, Maybe, Yes (3-class head).
    site_scores : per site (CTIO, SAAO, SSO), the binary probability from that branch alone.
    """

    p_event: float
    p_class: tuple[float, float, float]
    site_scores: tuple[float, float, float]

    @property
    def label(self) -> str:
        """The 3-class head's most probable class."""
        return CLASS_NAMES[int(np.argmax(self.p_class))]


@torch.no_grad()
def score(
    module: Any, candidates: Sequence[Candidate], batch_size: int = BATCH_SIZE
) -> list[Score]:
    """Run the artifact (or an eager :class:`~model.lensnet.LensNet`) on candidates, in chunks
    of ``batch_size`` sorted by length to limit padding; results in input order."""
    results: list[Score | None] = [None] * len(candidates)
    order = sorted(range(len(candidates)), key=lambda i: int(candidates[i].lengths.max()))
    # Lengths only group similar candidates to save padding: a star's scores do not depend on
    # its batch (see model.lensnet), so the chunking cannot change a result.
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        x, lengths = collate([candidates[i] for i in chunk])
        p_event, p_class, sites = module(torch.from_numpy(x), torch.from_numpy(lengths))
        for row, i in enumerate(chunk):
            pc = p_class[row].tolist()
            ss = sites[row].tolist()
            results[i] = Score(float(p_event[row]), (pc[0], pc[1], pc[2]), (ss[0], ss[1], ss[2]))
    return [r for r in results if r is not None]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def candidate_record(star: Star, candidate: Candidate, result: Score) -> dict[str, Any]:
    """The JSON-ready line of one scored star. ``peak_magnification``: of the point-lens fit
    of the points LensNet saw; ``magnification_gate``: whether it passes the daemon's default
    gate (:mod:`consumer.pointlens.gate`), so a star alerts in the daemon when it triggered,
    ``p_event`` reaches the threshold and this is true."""
    trigger = candidate.trigger
    magnification = fitted_peak_magnification(candidate_datasets(candidate), star.name)
    return {
        "star": star.name,
        "star_id": star.star_id,
        "status": "scored",
        "p_event": round(result.p_event, 6),
        "p_no": round(result.p_class[0], 6),
        "p_maybe": round(result.p_class[1], 6),
        "p_yes": round(result.p_class[2], 6),
        "label": result.label,
        "binary_balanced": result.p_event >= THRESHOLD_BALANCED,
        "binary_high_purity": result.p_event >= THRESHOLD_HIGH_PURITY,
        "peak_magnification": _finite(round(magnification, 3)),
        "magnification_gate": MagnificationGate().passes(magnification),
        "site_scores": {
            site: round(value, 6) for site, value in zip(SITES, result.site_scores, strict=True)
        },
        "n_points": {
            site: int(n) for site, n in zip(SITES, candidate.lengths.tolist(), strict=True)
        },
        "fields": dict(zip(SITES, candidate.fields, strict=True)),
        "triggered": trigger.triggered,
        "passed_rising": trigger.passed_rising,
        "dchi2": round(trigger.dchi2, 3),
        "trigger_sites": [SITES[i] for i in trigger.datasets],
        "t_break": _finite(trigger.t_break),
        "slope": trigger.slope,
        "n_high": trigger.n_high,
        "t_last": candidate.t_last,
        "n_removed": candidate.n_removed,
        "n_dropped": dict(candidate.dropped),
    }


def classify_stars(
    module: Any,
    stars: Sequence[Star],
    *,
    as_of: float = math.inf,
    rule: TriggerRule | None = None,
    cadence: Cadence = DEFAULT_CADENCE,
    opinions: OpinionModels | None = None,
) -> list[dict[str, Any]]:
    """One record per star, in order: scored, or ``status: "insufficient_data"`` and why.
    ``rule`` None: each star's rule from its fields' cadence, as the daemon chooses it, among
    ``cadence``'s (use the artifact's, :func:`model.timeline.card_cadence`);
    ``opinions``: also the novelty score and the second opinion of every scored star."""
    records: list[dict[str, Any] | None] = [None] * len(stars)
    scored: list[tuple[int, Candidate]] = []
    for i, star in enumerate(stars):
        star_rule = rule or cadence.rule_for([d.field for d in star.datasets])
        try:
            scored.append((i, prepare(star, as_of=as_of, rule=star_rule)))
        except InsufficientDataError as error:
            records[i] = {
                "star": star.name,
                "star_id": star.star_id,
                "status": "insufficient_data",
                "reason": str(error),
            }
    results = score(module, [c for _, c in scored])
    extras = (
        opinions.records([c for _, c in scored]) if opinions is not None else [{}] * len(scored)
    )
    for (i, candidate), result, extra in zip(scored, results, extras, strict=True):
        records[i] = {**candidate_record(stars[i], candidate, result), **extra}
    return [r for r in records if r is not None]


def classify_season(
    module: Any,
    season_dir: Path,
    *,
    as_of: float = math.inf,
    rule: TriggerRule | None = None,
    cadence: Cadence = DEFAULT_CADENCE,
    chunk: int = 256,
    opinions: OpinionModels | None = None,
) -> Iterator[dict[str, Any]]:
    """Records for every star of ``season_dir`` (name order), then one per skipped entry
    (``status: "skipped"``: unreadable files, non-star entries) and one per file read in part
    (``status: "read_in_part"``: what was ignored, e.g. extra columns)."""
    report = ReadReport()
    stars: list[Star] = []
    for star in iter_season(season_dir, report, skip_bad_files=True):
        stars.append(star)
        if len(stars) >= chunk:
            yield from classify_stars(
                module, stars, as_of=as_of, rule=rule, cadence=cadence, opinions=opinions
            )
            stars = []
    yield from classify_stars(
        module, stars, as_of=as_of, rule=rule, cadence=cadence, opinions=opinions
    )
    for path, reason in report.skipped:
        yield {"path": path, "status": "skipped", "reason": reason}
    for path, what in report.ignored:
        yield {"path": path, "status": "read_in_part", "ignored": what}
