"""Stage: LensNet on vetted candidates, in batches, and the alerts it decides.

Each candidate star's buffers are read back from the store (decoded to physical units), turned
into the same :class:`~model.features.Candidate` that training and ``lensnet classify`` use
(:func:`model.features.prepare`: cleaning, one dataset per site, outliers, fitted line,
scaling), and scored by the TorchScript artifact in chunks of ``batch_size`` (one forward pass
per chunk, sorted by length to limit padding).

Alert policy: a star is alerted once (its ``alerted_hjd`` annotation is then set and the star
never alerts again; a partition taken over from a checkpoint or rebuilt gets the annotation
from the alert topic, :mod:`consumer.state.alerted`). A candidate scored below ``alert_threshold``
is scored again only after ``rescore_days`` more days of data (``scored_hjd``), which bounds
the model's load from persistent false positives such as variable stars.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from consumer.constants import SITES
from consumer.edge.alert import (
    Alert,
    AlertFinderSummary,
    Classification,
    LightCurve,
    alert_id_for,
    now_utc,
)
from consumer.pipeline.binary_posterior import BinaryPosteriors
from consumer.pipeline.second_opinion import Opinions
from consumer.pipeline.trigger import Triggered
from consumer.pointlens.gate import MagnificationGate, candidate_datasets, fitted_peak_magnification
from consumer.settings import ModelSettings
from consumer.state.store import StarStore
from model.batch_features import DatasetTable, prepare_batch
from model.classify import Score, score
from model.export import load_artifact
from model.features import Candidate, InsufficientDataError


@dataclass
class ScoringResult:
    """What one scoring pass produced."""

    alerts: list[tuple[Pending, Alert]] = field(default_factory=list)
    scored: int = 0
    below_threshold: int = 0
    #: At or above the threshold, but the point-lens fit's peak magnification was too low.
    below_magnification: int = 0
    seconds: float = 0.0  # wall time of the model calls


@dataclass
class Selection:
    """Why triggered stars were or were not sent to the model."""

    pending: list[Pending] = field(default_factory=list)
    insufficient: int = 0
    waiting: int = 0  # scored recently and rejected: not scored again yet
    already_alerted: int = 0


@dataclass(frozen=True, eq=False)
class Pending:
    """A candidate prepared as of its evaluation window, waiting for the model."""

    partition: int
    star_id: int
    candidate: Candidate
    rising: Triggered
    position: int  # index of the star in ``rising``
    #: Kafka timestamp (ms) of the last message that changed the star before this evaluation,
    #: -1 unknown (the observation -> alert latency metric).
    arrival_ms: int


class Scorer:
    """Holds the model; turns triggered stars into candidates, candidates into alerts.

    :meth:`select` runs as of each evaluation window (it reads the store then);
    :meth:`decide` scores everything selected so far in one batched pass, so a replayed batch
    spanning many windows still makes few model calls.
    """

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.module, self.card = load_artifact(settings.path)
        self.model_version = str(self.card.get("version") or Path(str(settings.path)).stem)
        torch.set_num_threads(settings.threads)
        self.gate = MagnificationGate(settings.min_peak_magnification)
        self.opinions = (
            Opinions(settings.opinions, settings.batch_size) if settings.opinions.enabled else None
        )
        self.binary = BinaryPosteriors(settings.binary) if settings.binary.enabled else None

    def select(
        self,
        store: StarStore,
        rising: Triggered,
        keep: npt.NDArray[np.bool_],
        *,
        partition: int,
        arrival: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.int64]] | None = None,
    ) -> Selection:
        """Prepare the triggered, vetted (``keep``) stars of ``rising`` that are neither
        alerted nor rejected within ``rescore_days``; marks them scored as of now. ``arrival``
        gives the stars' latest message timestamps (ms)."""
        out = Selection()
        chosen = np.flatnonzero(rising.triggered & keep)
        if len(chosen) == 0:
            return out
        ids = rising.star_ids[chosen]
        alerted, waiting = self._closed(store, ids)
        out.already_alerted = int(alerted.sum())
        out.waiting = int((waiting & ~alerted).sum())
        todo = ~(alerted | waiting)
        positions, star_ids = chosen[todo].tolist(), ids[todo]
        if not positions:
            return out
        prepared = prepare_batch(
            dataset_table(store, star_ids), [rising.rules[p] for p in positions]
        )
        rows = store.stars.rows(star_ids)
        arrived = arrival(star_ids) if arrival else np.full(len(star_ids), -1)
        for position, star_id, row, stamp, result in zip(
            positions, star_ids.tolist(), rows.tolist(), arrived.tolist(), prepared, strict=True
        ):
            if isinstance(result, InsufficientDataError):
                out.insufficient += 1
                continue
            store.stars.scored_hjd[row] = result.t_last
            out.pending.append(Pending(partition, star_id, result, rising, position, stamp))
        return out

    def open_to_model(
        self, store: StarStore, star_ids: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """(S,) whether :meth:`select` could send each of ``star_ids`` to the model now, were
        it to trigger: not alerted, and not rejected within ``rescore_days`` of its data."""
        alerted, waiting = self._closed(store, star_ids)
        return ~(alerted | waiting)

    def _closed(
        self, store: StarStore, star_ids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """(S,) alerted already, and (S,) scored less than ``rescore_days`` of data ago (its
        newest observation, any site, against the ``scored_hjd`` of its last candidate)."""
        rows = store.stars.rows(star_ids)
        alerted = np.isfinite(store.stars.alerted_hjd[rows])
        last = store.stars.scored_hjd[rows]
        waiting = np.isfinite(last) & (
            store.newest_hjd(star_ids) < last + self.settings.rescore_days
        )
        return alerted, waiting

    def decide(self, stores: Mapping[int, StarStore], pending: list[Pending]) -> ScoringResult:
        """Score ``pending`` (in chunks of ``batch_size``) and alert, in order, each star's
        first candidate at or above ``alert_threshold`` that passes the magnification gate
        (:mod:`consumer.pointlens.gate`); marks those stars alerted. Candidates of partitions
        no longer in ``stores`` are dropped."""
        out = ScoringResult()
        pending = [p for p in pending if p.partition in stores]
        if not pending:
            return out
        started = time.perf_counter()
        scores = score(self.module, [p.candidate for p in pending], self.settings.batch_size)
        out.seconds = time.perf_counter() - started
        out.scored = len(pending)
        for item, result in zip(pending, scores, strict=True):
            store = stores[item.partition]
            if result.p_event < self.settings.alert_threshold:
                out.below_threshold += 1
                continue
            if np.isfinite(store.stars.alerted_hjd[store.stars.row(item.star_id)]):
                continue  # an earlier window's candidate of this star already alerted
            if self.gate.enabled and not self.gate.passes(
                fitted_peak_magnification(candidate_datasets(item.candidate), str(item.star_id))
            ):
                out.below_magnification += 1
                continue
            store.stars.alerted_hjd[store.stars.row(item.star_id)] = item.candidate.t_last
            alert = self.alert(store, item.rising, item.position, item.candidate, result)
            out.alerts.append((item, alert))
        if self.opinions is not None and out.alerts:
            triples = [(item, alert, item.candidate) for item, alert in out.alerts]
            out.alerts = self.opinions.attach(triples)
            out.seconds += self.opinions.seconds
        if self.binary is not None and out.alerts:
            out.alerts = self.binary.attach(out.alerts)
            out.seconds += self.binary.seconds
        return out

    def alert(
        self,
        store: StarStore,
        rising: Triggered,
        position: int,
        candidate: Candidate,
        result: Score,
    ) -> Alert:
        """The alert of one scored star: AlertFinder summary, scores, the light curve seen."""
        star_id = int(rising.star_ids[position])
        verdict, sites, fields = rising.summary(position)
        rule = rising.rules[position]
        primary = fields[0] if fields else int(store.field_tags([star_id])[0, 0])
        return Alert(
            alert_id=alert_id_for(star_id, candidate.t_last),
            star_id=star_id,
            field=primary,
            chip=int(store.stars.chip[store.stars.row(star_id)]),
            ra=float(store.stars.ra[store.stars.row(star_id)]),
            dec=float(store.stars.dec[store.stars.row(star_id)]),
            trigger_hjd=candidate.t_last,
            published_at=now_utc(),
            alertfinder=AlertFinderSummary(
                sites=sites,
                fields=fields,
                t_break=verdict.t_break,
                slope=verdict.slope,
                dchi2=verdict.dchi2,
                n_high=verdict.n_high,
                k=rule.k,
                n=rule.n,
            ),
            lensnet=Classification(
                model_version=self.model_version,
                p_event=result.p_event,
                p_no=result.p_class[0],
                p_maybe=result.p_class[1],
                p_yes=result.p_class[2],
                site_scores=dict(zip(SITES, result.site_scores, strict=True)),
            ),
            light_curve=light_curve(candidate),
        )


def dataset_table(store: StarStore, star_ids: npt.NDArray[np.int64]) -> DatasetTable:
    """The stars' buffers (I band, one dataset per site and field) as the input of
    :func:`model.batch_features.prepare_batch`: the datasets an archive
    :class:`~consumer.seasons.archive.Star` of them would hold, named by star id."""
    data = store.datasets(star_ids)
    return DatasetTable(
        names=tuple(str(star) for star in star_ids.tolist()),
        star_offsets=data.star_offsets,
        dataset_site=data.dataset_site,
        dataset_field=data.dataset_field,
        dataset_offsets=data.dataset_offsets,
        hjd=data.hjd,
        flux=data.flux,
        flux_err=data.flux_err,
        sky=data.sky,
        fwhm=data.fwhm,
        airmass=data.airmass,
        psf_quality=data.psf_quality,
        band=np.zeros(len(data.hjd), dtype=np.uint8),
    )


def light_curve(candidate: Candidate) -> LightCurve:
    """The merged multi-site light curve the classifier saw, time-ordered, physical units."""
    parts: list[dict[str, Any]] = []
    for site, (series, line) in enumerate(zip(candidate.series, candidate.lines, strict=True)):
        if series is None or len(series) == 0:
            continue
        n = len(series)
        parts.append(
            {
                "site": np.full(n, site, dtype=np.uint8),
                "field": np.full(n, series.field, dtype=np.int16),
                "hjd": series.hjd,
                "flux": series.flux,
                "flux_err": series.flux_err,
                "sky": series.sky.astype(np.float32),
                "fwhm": series.fwhm.astype(np.float32),
                "airmass": series.airmass.astype(np.float32),
                "psf_quality": series.psf_quality.astype(np.float32),
                "fitted": np.asarray(line, dtype=np.float64),
            }
        )
    names = (
        "site",
        "field",
        "hjd",
        "flux",
        "flux_err",
        "sky",
        "fwhm",
        "airmass",
        "psf_quality",
        "fitted",
    )
    columns = {name: np.concatenate([p[name] for p in parts]) for name in names}
    order = np.argsort(columns["hjd"], kind="stable")
    return LightCurve(**{name: values[order] for name, values in columns.items()})
