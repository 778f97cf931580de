"""When a followed event deserves a new message: the update rule, and when to stop following.

After a star's alert, every evaluation window with new data refits it. What was last published
for the star (:class:`Published`, read back from the events topic after a restart) and the new
fit decide, in this order:

- nothing was published yet: ``initial`` (the fit at the alert);
- the star was finished: nothing, ever again;
- an anomaly is found and the last message had none: ``anomaly``, at once;
- the fit says the event returned to baseline (``A < BASELINE_MAGNIFICATION``) more than
  ``stop_days`` ago, or the star has been followed for ``max_days`` since its alert (a variable
  star or an artefact that alerted never returns to a point lens's baseline): ``final``, and
  the star is finished;
- the predicted peak moved by more than the last published one-sigma (at least
  ``min_shift_days``), or the anomaly ended: ``update``;
- a day (``every_days``) of data since the last message: ``update`` (at most daily otherwise).

The rule is a function of the last message and the new fit alone, so a daemon restarted from
the events topic decides as an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from consumer.pointlens.anomaly import Anomaly
from consumer.pointlens.fit import PointLensFit

Kind = Literal["initial", "update", "anomaly", "final"]
KINDS: Final = ("initial", "update", "anomaly", "final")

#: The event is at baseline once the magnification is below this (1 %).
BASELINE_MAGNIFICATION: Final = 1.01
#: u at which A = BASELINE_MAGNIFICATION (A(u) = 1 + 2/u**4 + ... for large u).
_U_BASELINE: Final = 3.0617


@dataclass(frozen=True)
class UpdateRule:
    """Settings of the rule (see the module docstring); days of observation time."""

    every_days: float = 1.0
    min_shift_days: float = 0.05
    stop_days: float = 10.0
    max_days: float = 150.0


@dataclass(frozen=True)
class Published:
    """What the last message about a star said, as far as the rule needs it."""

    sequence: int
    kind: str
    as_of: float  # newest observation behind it, HJD
    peak_hjd: float
    peak_hjd_err: float
    anomalous: bool


def baseline_hjd(model: PointLensFit) -> float:
    """HJD after which the fitted event is back at baseline (``A < 1.01``)."""
    return model.t0 + model.tE * math.sqrt(max(_U_BASELINE**2 - model.u0**2, 0.0))


def finished(model: PointLensFit, as_of: float, stop_days: float = UpdateRule.stop_days) -> bool:
    """The event returned to baseline more than ``stop_days`` before ``as_of``."""
    return as_of > baseline_hjd(model) + stop_days


def decide(
    last: Published | None,
    model: PointLensFit,
    anomaly: Anomaly | None,
    as_of: float,
    rule: UpdateRule = UpdateRule(),
    alert_hjd: float = math.nan,
) -> Kind | None:
    """The kind of message to publish now, or None (see the module docstring); ``alert_hjd``
    is when the star alerted."""
    if last is None:
        return "initial"
    if last.kind == "final":
        return None
    if anomaly is not None and not last.anomalous:
        return "anomaly"
    if finished(model, as_of, rule.stop_days) or as_of - alert_hjd > rule.max_days:
        return "final"
    allowed = last.peak_hjd_err if math.isfinite(last.peak_hjd_err) else math.inf
    if abs(model.peak_hjd - last.peak_hjd) > max(allowed, rule.min_shift_days):
        return "update"
    if last.anomalous and anomaly is None:
        return "update"
    if as_of - last.as_of >= rule.every_days:
        return "update"
    return None
