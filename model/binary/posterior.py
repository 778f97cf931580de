"""``posterior(light_curve, n_samples)``: binary-lens posterior samples and their summaries.

Offline API over the shipped flow (:mod:`model.binary.export`); not called by the daemon.
Parameters are :data:`model.binary.simulate.REPORTED` (log is log10): ``t0`` full HJD,
``u0`` and ``alpha`` (radians) in VBMicrolensing's centre-of-mass frame, ``log_tE`` (days),
``log_s``, ``log_q``, ``log_rho``, ``log_fs`` (source share of the baseline flux). The
posterior is the flow's approximation under the simulator's priors
(:mod:`model.binary.simulate`); the model card says how well calibrated it is.

Mode labels for ``s``: the close/wide degeneracy gives posteriors with mass on both sides of
``s = 1``; a side is reported as a mode (``"close"``: log s < 0, ``"wide"``: log s > 0) when it
holds at least :data:`MODE_MIN_WEIGHT` of the samples, with its weight and median ``s``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import torch

from consumer.seasons.archive import Star
from model.binary.export import load
from model.binary.flow import BinaryFlow
from model.binary.inputs import FlowInput, collate, flow_input
from model.binary.simulate import REPORTED, draw_thetas, reported

F64 = npt.NDArray[np.float64]

MODE_MIN_WEIGHT: Final = 0.05
#: A parameter is *constrained* when its 16th-84th percentile range is narrower than this
#: fraction of the prior's (the evaluation's definition for log q).
CONSTRAINED_FRACTION_OF_PRIOR: Final = 0.5


@dataclass(frozen=True)
class Summary:
    """Median and 16th/84th percentiles of one parameter's samples."""

    median: float
    p16: float
    p84: float


@dataclass(frozen=True)
class SMode:
    """One side of s = 1: ``label`` "close" or "wide", ``weight`` its share of the samples,
    ``s`` the median separation of those samples (Einstein radii)."""

    label: str
    weight: float
    s: float


@dataclass(frozen=True, eq=False)
class Posterior:
    """Samples (n, 8) of :data:`~model.binary.simulate.REPORTED` (``t0`` full HJD), their
    per-parameter summaries, and the s modes (heaviest first)."""

    samples: F64
    summaries: dict[str, Summary]
    s_modes: tuple[SMode, ...]
    t_last: float


def summarise(samples: F64) -> dict[str, Summary]:
    """Per-parameter median and 16th/84th percentiles of (n, 8) samples."""
    p16, median, p84 = np.percentile(samples, [16.0, 50.0, 84.0], axis=0)
    return {
        name: Summary(float(median[i]), float(p16[i]), float(p84[i]))
        for i, name in enumerate(REPORTED)
    }


@functools.cache
def prior_half_widths(n: int = 50_000, seed: int = 0) -> F64:
    """Half the 16th-84th percentile range of each reported parameter under the simulator's
    prior, (8,) in :data:`REPORTED` order, from ``n`` draws (deterministic; 50 000 draws,
    ~0.1 s once per process, agree with 200 000 to ~1 %)."""
    theta = reported(draw_thetas(np.random.default_rng(seed), n))
    p16, p84 = np.percentile(theta, [16.0, 84.0], axis=0)
    out = np.asarray((p84 - p16) / 2.0)
    out.flags.writeable = False
    return out


def prior_fractions(summaries: dict[str, Summary]) -> dict[str, float]:
    """Each parameter's 16th-84th percentile range over the prior's: near 1, the light curve
    told the flow nothing about it; below :data:`CONSTRAINED_FRACTION_OF_PRIOR`, constrained."""
    widths = prior_half_widths()
    return {
        name: (summaries[name].p84 - summaries[name].p16) / (2.0 * float(widths[i]))
        for i, name in enumerate(REPORTED)
    }


def s_modes(log_s: F64) -> tuple[SMode, ...]:
    """Close/wide modes of log10 s samples (module docstring), heaviest first."""
    modes = []
    for label, side in (("close", log_s < 0.0), ("wide", log_s >= 0.0)):
        weight = float(np.mean(side)) if len(log_s) else 0.0
        if weight >= MODE_MIN_WEIGHT:
            modes.append(SMode(label, weight, float(10.0 ** np.median(log_s[side]))))
    return tuple(sorted(modes, key=lambda m: -m.weight))


def sample_inputs(
    model: BinaryFlow,
    inputs: list[FlowInput],
    n_samples: int,
    generator: torch.Generator | None = None,
) -> F64:
    """Reported-parameter samples, (B, n_samples, 8), ``t0`` relative to each last point;
    drawn from ``generator`` when given, else from torch's global generator."""
    points, mask, scale = collate(inputs)
    with torch.no_grad():
        embedding = model.embed(
            torch.from_numpy(points), torch.from_numpy(mask), torch.from_numpy(scale)
        )
        theta = model.sample(embedding, n_samples, generator).double().numpy()  # (n, B, 8)
    return reported(np.transpose(theta, (1, 0, 2)))


def posterior(
    light_curve: Star | FlowInput,
    n_samples: int = 1000,
    *,
    as_of: float = np.inf,
    model: BinaryFlow | None = None,
    seed: int | None = None,
) -> Posterior:
    """The binary-lens posterior of one light curve.

    Parameters
    ----------
    light_curve : a star (all its datasets; cleaned as :func:`model.binary.inputs.flow_input`
        does) or an already prepared input.
    n_samples : posterior draws.
    as_of : full HJD; only observations up to it (stars only).
    model : the flow (default: the shipped artifact, loaded once).
    seed : torch seed for reproducible draws (default: torch's global state).
    """
    inputs = light_curve if isinstance(light_curve, FlowInput) else flow_input(light_curve, as_of)
    model = model or _shipped()
    if seed is not None:
        torch.manual_seed(seed)
    samples = sample_inputs(model, [inputs], n_samples)[0]
    samples[:, 0] += inputs.t_last
    return Posterior(samples, summarise(samples), s_modes(samples[:, 3]), inputs.t_last)


_MODEL: list[BinaryFlow] = []


def _shipped(path: Path | None = None) -> BinaryFlow:
    if not _MODEL:
        _MODEL.append(load(path))
    return _MODEL[0]
