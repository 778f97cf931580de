"""Stage: the binary-lens posterior of every alert LensNet decided (seed paper 002).

The amortised flow (:mod:`model.binary`) reads the light curve the alert carries (LensNet's
cleaned, cropped multi-site series: :func:`model.binary.inputs.series_input`) and draws
``settings.samples`` parameter sets; the alert takes their summaries
(:class:`~consumer.edge.binary_posterior.BinaryPosterior`). The draws are seeded by the alert
id, one alert at a time, so an alert's posterior is a function of the alert alone (the same in
a replay, in any batch); torch's global random state is left as it was. A light curve with too
few points for the flow gets none. Like the second opinion, it changes no decision.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

from consumer.edge.alert import Alert, LightCurve
from consumer.edge.binary_posterior import (
    PARAMETERS,
    BinaryPosterior,
    ParameterSummary,
    SeparationMode,
)
from consumer.exceptions import ConfigError
from consumer.settings import BinarySettings

try:  # zuko is a dependency; an older install without it gets a clear error, not a traceback
    from model.binary.export import content_version, load
    from model.binary.flow import BinaryFlow
    from model.binary.inputs import FlowInput, LightCurveInputError, series_input
    from model.binary.posterior import (
        CONSTRAINED_FRACTION_OF_PRIOR,
        prior_fractions,
        prior_half_widths,
        s_modes,
        sample_inputs,
        summarise,
    )
except ImportError as _missing:  # pragma: no cover - exercised only without zuko
    _IMPORT_ERROR: ImportError | None = _missing
else:
    _IMPORT_ERROR = None

T = TypeVar("T")

#: Held while torch's process-wide random generator is seeded and drawn from.
_GLOBAL_RNG = threading.Lock()


class BinaryPosteriors:
    """Holds the flow; annotates alerts with their posterior."""

    def __init__(self, settings: BinarySettings) -> None:
        if _IMPORT_ERROR is not None:
            raise ConfigError(
                f"the binary posterior needs {_IMPORT_ERROR.name} (pip install "
                f"{_IMPORT_ERROR.name}), or LENSNET_MODEL__BINARY__ENABLED=false"
            ) from _IMPORT_ERROR
        self.flow: BinaryFlow = load(settings.path)
        self.model_version = content_version(self.flow)
        self.n_samples = settings.samples
        prior_half_widths()  # the prior's widths, once, at start rather than at the first alert
        self.seconds = 0.0  # wall time of the last :meth:`attach`
        self.skipped = 0  # alerts of the last attach whose light curve was too short

    def posterior(self, alert_id: str, curve: LightCurve) -> BinaryPosterior | None:
        """The posterior of one alert's light curve (None: too few points for the flow)."""
        try:
            inputs = light_curve_input(curve, alert_id)
        except LightCurveInputError:
            return None
        # A generator of its own: torch's global one is the process's, and anything in another
        # thread draws from it, even building a module (its initial weights). Seen in CI: one
        # alert's posterior moved by 1.9, then (with a lock around seed and draws) by 0.755, in
        # a rebalance storm's in-process daemons. The same numbers as the global generator
        # seeded alike.
        generator = torch.Generator().manual_seed(alert_seed(alert_id))
        samples = sample_inputs(self.flow, [inputs], self.n_samples, generator)[0]
        samples[:, 0] += inputs.t_last
        summaries = summarise(samples)
        fractions = prior_fractions(summaries)
        return BinaryPosterior(
            model_version=self.model_version,
            n_samples=self.n_samples,
            fitted_to_hjd=inputs.t_last,
            parameters=tuple(
                ParameterSummary(
                    name=name,
                    median=summaries[name].median,
                    p16=summaries[name].p16,
                    p84=summaries[name].p84,
                    prior_fraction=fractions[name],
                )
                for name in PARAMETERS
            ),
            s_modes=tuple(
                SeparationMode(m.label, m.weight, m.s)
                for m in s_modes(samples[:, PARAMETERS.index("log_s")])
            ),
            constrained_below=CONSTRAINED_FRACTION_OF_PRIOR,
        )

    def warm_up(self) -> None:
        """Draw once from a synthetic light curve: the first draw of a process costs about a second
        (torch's lazy initialisation), which would otherwise fall on the first alert."""
        n = 64
        hjd = 2_461_100.0 + np.arange(n, dtype=np.float64) * 0.5
        flux = np.asarray(100.0 * np.exp(-0.5 * ((hjd - hjd[-8]) / 3.0) ** 2), dtype=np.float64)
        error = np.full(n, 10.0, dtype=np.float64)
        inputs = series_input([(0, hjd, flux, error)], name="warm-up")
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            sample_inputs(self.flow, [inputs], self.n_samples)

    def attach(self, alerts: Sequence[tuple[T, Alert]]) -> list[tuple[T, Alert]]:
        """``(key, alert)`` -> ``(key, alert with its binary posterior)``."""
        started = time.perf_counter()
        out = []
        self.skipped = 0
        for key, alert in alerts:
            posterior = self.posterior(alert.alert_id, alert.light_curve)
            self.skipped += posterior is None
            out.append((key, dataclasses.replace(alert, binary_posterior=posterior)))
        self.seconds = time.perf_counter() - started
        return out


def light_curve_input(curve: LightCurve, name: str = "") -> FlowInput:
    """An alert's light curve as flow input: one series per site (its points, time-ordered)."""
    series = []
    for site in np.unique(curve.site).tolist():
        rows = np.flatnonzero(curve.site == site)
        rows = rows[np.argsort(curve.hjd[rows], kind="stable")]
        series.append((int(site), curve.hjd[rows], curve.flux[rows], curve.flux_err[rows]))
    return series_input(series, name=name)


def alert_seed(alert_id: str) -> int:
    """A 63-bit seed from the alert id (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(alert_id.encode()).digest()[:8], "big") >> 1
