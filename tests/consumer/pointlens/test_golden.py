"""The point-lens fit and the anomaly test against golden results: every field of the
:class:`PointLensFit` and :class:`Anomaly` of 50 light curves must equal, bit for bit, what the
implementation before commit 413fab7 (the Python/numpy steps around the kernels) returned;
the fields that come out of LAPACK (:data:`LINALG_FIELDS`) to 1e-7, because numpy's OpenBLAS
rounds differently on another processor.

The event model's decisions (alerts, event updates) follow from these numbers, so a faster
implementation must not change a bit of them. The cases (``data/golden_inputs.npz``) are light
curves of simulated seasons cut at several moments around their peaks, constant and variable
stars, synthetic events of 1-6 datasets (with outliers, some above the fit's subsample size),
the 8-point and all-equal edge cases, fits with points excluded, and two rules of the anomaly
test. ``data/golden_results.json`` holds every float as ``float.hex`` (NaN as ``nan``).

Regenerate only on purpose (a change meant to move results):
``python -m tests.consumer.pointlens.test_golden --write``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from consumer.pointlens.anomaly import AnomalyRule, find_anomaly
from consumer.pointlens.fit import Datasets, FitInputError, fit, magnification, make_datasets

DATA = Path(__file__).parent / "data"
INPUTS = DATA / "golden_inputs.npz"
RESULTS = DATA / "golden_results.json"
RULES = (AnomalyRule(), AnomalyRule(n_sigma=2.0, min_run=2, recent_days=10.0))
Case = tuple[Datasets, npt.NDArray[np.bool_] | None]
#: How many cases the golden files hold (0 while they are being written; the coverage test
#: then fails).
GOLDEN_CASES = len(json.loads(RESULTS.read_text())) if RESULTS.exists() else 0


def encode(value: Any) -> Any:
    """``value`` as JSON with every float exact (``float.hex``), dataclasses field by field."""
    if isinstance(value, float | np.floating):
        return float(value).hex()
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "values": [encode(v) for v in value.ravel().tolist()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, bool | int | str | np.integer | np.bool_) or value is None:
        return value.item() if isinstance(value, np.generic) else value
    raise TypeError(f"cannot encode {type(value).__name__}")


def results(case: Case) -> Any:
    """What the fit and the anomaly test (each rule; none with ``exclude``) return."""
    data, exclude = case
    try:
        model = fit(data, exclude=exclude)
    except FitInputError as error:
        return {"error": str(error)}
    anomalies = [] if exclude is not None else [find_anomaly(data, model, r) for r in RULES]
    return {"fit": encode(model), "anomalies": encode(anomalies)}


def make_cases() -> list[Case]:  # pragma: no cover - run to write the golden files
    from consumer.pointlens.fit import star_datasets
    from model.simulate import simulate_star
    from model.simulation.calendar import season_config

    rng = np.random.default_rng(11)
    cases: list[Case] = []
    config = season_config(3001, 120)
    for index in range(120):
        star, label = simulate_star(config, index)
        full = star_datasets(star)
        if len(full) < 8 or len(full) > 1200 or len(cases) >= 24:
            continue
        if label.label == "YES":
            t0 = label.params["t0"]
            moments = [t0 - 3.0, t0 + 20.0] if len(cases) % 2 else [t0]
        else:
            moments = [float(rng.uniform(full.t.min(), full.t.max()))]
        for as_of in moments:
            data = star_datasets(star, as_of=as_of)
            if len(data) >= 8:
                cases.append((data, None))
    for k in range(14):  # synthetic events, 1-6 datasets, outliers in some
        sets, n = 1 + k % 6, (30, 90, 160)[k % 3]
        t0, u0, tE = 2_461_150.0, float(rng.uniform(0.02, 1.0)), float(rng.uniform(3.0, 60.0))
        parts = []
        for d in range(sets):
            t = np.sort(t0 + rng.uniform(-50.0, float(rng.uniform(-5.0, 40.0)), n))
            err = rng.uniform(15.0, 30.0, n)
            flux = 800.0 * (1 + 0.3 * d) * magnification(np.hypot(u0, (t - t0) / tE))
            flux += 50.0 * (d - 1) + err * rng.standard_normal(n) * rng.uniform(0.8, 2.0)
            if k % 3 == 0:
                flux[rng.integers(0, n, 3)] += 2000.0
            if k % 4 == 1 and d < 2:  # a deviation at the end, seen from two sites
                flux[t > t.max() - 2.0] += 6.0 * err[t > t.max() - 2.0]
            parts.append((("CTIO", "SAAO", "SSO")[d % 3], d, t, flux, err))
        cases.append((make_datasets(parts), None))
    for k in range(4):  # edge cases: 8 points, all equal; two datasets, one of 2 points
        n = 8 + 3 * k
        t = np.sort(rng.uniform(0.0, 30.0, n)) + 2_461_000.0
        flux = np.full(n, 100.0) if k % 2 == 0 else 100.0 + 10.0 * rng.standard_normal(n)
        parts = [("CTIO", 1, t, flux, np.full(n, 10.0))]
        if k >= 2:
            t2 = np.sort(rng.uniform(0.0, 30.0, 2)) + 2_461_000.0
            parts.append(("SAAO", 2, t2, np.full(2, 5.0), np.full(2, 3.0)))
        cases.append((make_datasets(parts), None))
    cases.append((make_datasets([("CTIO", 1, np.arange(7.0), np.zeros(7), np.ones(7))]), None))
    for i in range(0, 32, 4):  # fits with points excluded: the newest, scattered, a dataset
        data = cases[i][0]
        exclude = np.zeros(len(data), dtype=bool)
        if i % 12 == 0:
            exclude[np.argsort(data.t, kind="stable")[-5:]] = True
        elif i % 12 == 4:
            exclude[rng.integers(0, len(data), 10)] = True
        else:
            exclude[int(data.offsets[0]) : int(data.offsets[1])] = True
        cases.append((data, exclude))
    return cases


def save_cases(cases: list[Case]) -> None:  # pragma: no cover - run to write the golden files
    columns: dict[str, Any] = {}
    for name in ("t", "flux", "flux_err"):
        columns[name] = np.concatenate([getattr(data, name) for data, _ in cases])
    columns["points"] = np.array([len(data) for data, _ in cases], dtype=np.int64)
    columns["offsets"] = np.concatenate([data.offsets for data, _ in cases])
    columns["datasets"] = np.array([len(data.sites) for data, _ in cases], dtype=np.int64)
    columns["sites"] = np.array([s for data, _ in cases for s in data.sites])
    columns["fields"] = np.array([f for data, _ in cases for f in data.fields], dtype=np.int64)
    columns["excluded"] = np.array([e is not None for _, e in cases])
    columns["exclude"] = np.concatenate(
        [e if e is not None else np.zeros(len(d), dtype=bool) for d, e in cases]
    )
    np.savez_compressed(INPUTS, **columns)


def load_cases() -> list[Case]:
    with np.load(INPUTS) as stored:
        columns = {name: stored[name] for name in stored.files}
    cases: list[Case] = []
    point = dataset = offset = 0
    for k in range(len(columns["points"])):
        n, d = int(columns["points"][k]), int(columns["datasets"][k])
        rows = slice(point, point + n)
        data = Datasets(
            t=columns["t"][rows].copy(),
            flux=columns["flux"][rows].copy(),
            flux_err=columns["flux_err"][rows].copy(),
            offsets=columns["offsets"][offset : offset + d + 1].copy(),
            sites=tuple(str(s) for s in columns["sites"][dataset : dataset + d]),
            fields=tuple(int(f) for f in columns["fields"][dataset : dataset + d]),
        )
        exclude = columns["exclude"][rows].copy() if columns["excluded"][k] else None
        cases.append((data, exclude))
        point, dataset, offset = point + n, dataset + d, offset + d + 1
    return cases


def test_golden_cases_cover_what_they_should() -> None:
    cases = load_cases()
    expected = json.loads(RESULTS.read_text())
    assert len(cases) == len(expected) >= 50
    sizes = [len(data) for data, _ in cases]
    assert min(sizes) < 8  # refused
    assert max(sizes) > 300  # the fit's subsample path
    assert any(e is not None for _, e in cases)
    assert any(len(data.sites) == 1 for data, _ in cases)
    assert any(len(data.sites) >= 4 for data, _ in cases)
    assert any(a is not None for r in expected if "anomalies" in r for a in r["anomalies"])


#: Fields computed from LAPACK through ``np.linalg`` (the covariance and what comes from it).
#: numpy's OpenBLAS picks its kernels by CPU, so these move by rounding from one processor to
#: another: the golden file was written on an Intel Xeon, and on an AMD EPYC (AVX-512) they
#: differ by up to 2e-9 relative (``t0_err``, the difference of two close bounds), ~1e-13
#: elsewhere. Everything else, from the fit's own kernels, must agree bit for bit.
LINALG_FIELDS = frozenset(
    {
        "covariance",
        "t0_err",
        "u0_err",
        "tE_err",
        "fs_err",
        "fb_err",
        "peak_magnification_err",
        "peak_mag_err",
        "t0_lower",
        "t0_upper",
    }
)
LINALG_RTOL = 1e-7


def differences(got: Any, expected: Any, path: str = "", loose: bool = False) -> list[str]:
    """Where ``got`` differs from ``expected`` (encoded results): exact, except floats under a
    :data:`LINALG_FIELDS` key, which may differ by :data:`LINALG_RTOL` (relative)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        if got.keys() != expected.keys():
            return [f"{path}: keys {sorted(got)} != {sorted(expected)}"]
        return [
            d
            for key in expected
            for d in differences(
                got[key], expected[key], f"{path}.{key}", loose or key in LINALG_FIELDS
            )
        ]
    if isinstance(expected, list) and isinstance(got, list) and len(got) == len(expected):
        return [
            d
            for i, (a, b) in enumerate(zip(got, expected, strict=True))
            for d in differences(a, b, f"{path}[{i}]", loose)
        ]
    if got == expected:
        return []
    if loose and isinstance(got, str) and isinstance(expected, str):
        try:
            a, b = float.fromhex(got), float.fromhex(expected)
        except ValueError:
            return [f"{path}: {got} != {expected}"]
        if math.isclose(a, b, rel_tol=LINALG_RTOL):
            return []
    return [f"{path}: {got} != {expected}"]


@pytest.mark.parametrize("index", range(GOLDEN_CASES))
def test_fit_and_anomalies_equal_the_golden_results_bit_for_bit(index: int) -> None:
    cases = _cached_cases()
    expected = json.loads(RESULTS.read_text())[index]
    assert differences(results(cases[index]), expected) == []


def test_only_linalg_fields_are_compared_loosely() -> None:
    fit = {"fit": {"t0": (1.0).hex(), "t0_err": (2.0).hex(), "covariance": [(3.0).hex()]}}
    nudged = {
        "fit": {
            "t0": (1.0).hex(),
            "t0_err": (2.0 + 2e-9).hex(),
            "covariance": [(3.0 + 3e-12).hex()],
        }
    }
    assert differences(nudged, fit) == []
    moved = {"fit": {"t0": (1.0 + 2e-16).hex(), "t0_err": (2.0).hex(), "covariance": [(3.0).hex()]}}
    assert differences(moved, fit) == [f".fit.t0: {(1.0 + 2e-16).hex()} != {(1.0).hex()}"]
    far = {"fit": {"t0": (1.0).hex(), "t0_err": (2.1).hex(), "covariance": [(3.0).hex()]}}
    assert differences(far, fit) == [f".fit.t0_err: {(2.1).hex()} != {(2.0).hex()}"]


_CACHE: list[list[Case]] = []


def _cached_cases() -> list[Case]:
    if not _CACHE:
        _CACHE.append(load_cases())
    return _CACHE[0]


if __name__ == "__main__" and "--write" in sys.argv:  # pragma: no cover
    written = make_cases()
    save_cases(written)
    stored = load_cases()  # what the test reads back
    RESULTS.write_text(json.dumps([results(case) for case in stored], indent=0) + "\n")
    print(f"{len(stored)} cases, {sum(map(len, (d for d, _ in stored)))} points")
