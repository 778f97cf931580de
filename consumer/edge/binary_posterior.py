"""The binary-lens posterior an alert carries (alert schema 1.3), and its Avro record.

Summaries of the amortised flow's samples (:mod:`model.binary.posterior`, seed paper 002) for
the alert's light curve: per parameter the median and the 16th/84th percentiles, and how wide
that range is against the prior's (``prior_fraction``: near 1 the light curve told the flow
nothing about the parameter, and a subscriber should read the numbers as the prior's); the
close/wide modes of ``s``. Optional in the schema: alerts of older writers, or of a daemon run
without the flow, or whose light curve was too short for it, have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Reported parameters, in the record's order; log is log10, ``t0`` full HJD, ``u0`` and
#: ``alpha`` (radians) in the lens's centre-of-mass frame, ``log_fs`` the source's share of
#: the baseline flux.
PARAMETERS = ("t0", "u0", "log_tE", "log_s", "log_q", "alpha", "log_rho", "log_fs")


@dataclass(frozen=True)
class ParameterSummary:
    """One parameter's posterior: median, 16th and 84th percentiles, and the 16th-84th range
    over the prior's (``constrained`` below ``constrained_below`` of the record)."""

    name: str
    median: float
    p16: float
    p84: float
    prior_fraction: float


@dataclass(frozen=True)
class SeparationMode:
    """One side of ``s = 1`` holding at least 5 % of the samples: ``label`` "close" or "wide",
    its share of the samples, its median separation (Einstein radii)."""

    label: str
    weight: float
    s: float


@dataclass(frozen=True)
class BinaryPosterior:
    """The flow's verdict on one light curve (``fitted_to_hjd``: its newest point)."""

    model_version: str
    n_samples: int
    fitted_to_hjd: float
    parameters: tuple[ParameterSummary, ...]
    s_modes: tuple[SeparationMode, ...]
    #: ``prior_fraction`` under which a parameter counts as constrained.
    constrained_below: float

    def parameter(self, name: str) -> ParameterSummary:
        """The summary of ``name`` (one of :data:`PARAMETERS`)."""
        for summary in self.parameters:
            if summary.name == name:
                return summary
        raise KeyError(name)

    def constrained(self, name: str) -> bool:
        """Whether the light curve narrowed ``name`` to under ``constrained_below`` of its
        prior range."""
        return self.parameter(name).prior_fraction < self.constrained_below


def binary_posterior_to_record(posterior: BinaryPosterior | None) -> dict[str, Any] | None:
    if posterior is None:
        return None
    return {
        "model_version": posterior.model_version,
        "n_samples": posterior.n_samples,
        "fitted_to_hjd": posterior.fitted_to_hjd,
        "parameters": [
            {
                "name": p.name,
                "median": p.median,
                "p16": p.p16,
                "p84": p.p84,
                "prior_fraction": p.prior_fraction,
            }
            for p in posterior.parameters
        ],
        "s_modes": [{"label": m.label, "weight": m.weight, "s": m.s} for m in posterior.s_modes],
        "constrained_below": posterior.constrained_below,
        "log_q_constrained": posterior.constrained("log_q"),
    }


def binary_posterior_from_record(record: dict[str, Any] | None) -> BinaryPosterior | None:
    if record is None:
        return None
    return BinaryPosterior(
        model_version=record["model_version"],
        n_samples=record["n_samples"],
        fitted_to_hjd=record["fitted_to_hjd"],
        parameters=tuple(
            ParameterSummary(p["name"], p["median"], p["p16"], p["p84"], p["prior_fraction"])
            for p in record["parameters"]
        ),
        s_modes=tuple(SeparationMode(m["label"], m["weight"], m["s"]) for m in record["s_modes"]),
        constrained_below=record["constrained_below"],
    )
