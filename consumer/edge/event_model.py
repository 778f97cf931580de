"""The event model as published: the ``event_model`` record of alerts (schema 1.1) and of the
events topic's updates, and its Avro record.

An :class:`EventModel` is the point-lens fit and its anomaly test (:mod:`consumer.pointlens`)
in the published form: plain numbers, ``None`` for an error the data do not constrain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class DatasetModel:
    """One dataset's ``flux = fs * A(t) + fb`` (its own DIA flux scale)."""

    site: str
    field: int
    fs: float
    fs_err: float | None
    fb: float
    fb_err: float | None
    n_points: int
    error_scale: float


@dataclass(frozen=True)
class AnomalyRun:
    """A run of recent points the point lens cannot explain."""

    start_hjd: float
    end_hjd: float
    n_points: int
    sites: tuple[str, ...]
    sign: int
    max_sigma: float
    chi2: float


@dataclass(frozen=True)
class EventModel:
    """The point-lens model of an event (times HJD, see ``schemas/event-v1.avsc`` for units)."""

    fitted_to_hjd: float
    t0: float
    t0_err: float | None
    u0: float
    u0_err: float | None
    tE: float  # noqa: N815 - the field's name for the Einstein time
    tE_err: float | None  # noqa: N815
    peak_hjd: float
    peak_hjd_err: float | None
    peak_magnification: float
    peak_magnification_err: float | None
    peak_mag: float | None
    peak_mag_err: float | None
    source_mag: float | None
    peak_seen: bool
    chi2: float
    dof: int
    converged: bool
    reference_dataset: int
    datasets: tuple[DatasetModel, ...]
    anomaly: AnomalyRun | None = None
    #: The predicted peak's 1-sigma interval (HJD; asymmetric while the curve still rises).
    peak_hjd_lower: float | None = None
    peak_hjd_upper: float | None = None
    model: str = "point-lens"

    def magnification(self, hjd: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """A(t) of the model at ``hjd``, shape of ``hjd``."""
        tau = (np.asarray(hjd, dtype=np.float64) - self.t0) / self.tE
        u = np.maximum(np.sqrt(self.u0 * self.u0 + tau * tau), 1e-9)
        return np.asarray((u * u + 2.0) / (u * np.sqrt(u * u + 4.0)), dtype=np.float64)

    def model_flux(self, hjd: npt.ArrayLike, dataset: int) -> npt.NDArray[np.float64]:
        """Model flux of dataset ``dataset`` at ``hjd`` (its own flux scale)."""
        fit = self.datasets[dataset]
        return fit.fs * self.magnification(hjd) + fit.fb

    def dataset_index(self, site: str, field: int) -> int | None:
        """Index of the dataset of ``site`` and ``field`` (None: not fitted)."""
        for index, fit in enumerate(self.datasets):
            if fit.site == site and fit.field == field:
                return index
        return None


def finite_or_none(value: float) -> float | None:
    """Errors the data do not constrain travel as null."""
    return float(value) if math.isfinite(value) else None


def event_model_to_record(model: EventModel) -> dict[str, Any]:
    """The Avro record of an event model (``org.lensnet.event.EventModel``)."""
    record = dict(model.__dict__)
    record["datasets"] = [dict(d.__dict__) for d in model.datasets]
    if model.anomaly is not None:
        record["anomaly"] = dict(model.anomaly.__dict__) | {"sites": list(model.anomaly.sites)}
    return record


def event_model_from_record(record: dict[str, Any]) -> EventModel:
    """Inverse of :func:`event_model_to_record` (fields unknown to this version are ignored)."""
    names = EventModel.__dataclass_fields__
    values = {k: v for k, v in record.items() if k in names}
    values["datasets"] = tuple(
        DatasetModel(**{k: v for k, v in d.items() if k in DatasetModel.__dataclass_fields__})
        for d in record["datasets"]
    )
    anomaly = record.get("anomaly")
    if anomaly is not None:
        values["anomaly"] = AnomalyRun(
            **{k: v for k, v in anomaly.items() if k in AnomalyRun.__dataclass_fields__}
            | {"sites": tuple(anomaly["sites"])}
        )
    return EventModel(**values)
