"""The AlertFinder trigger against a brute-force reference, known answers and edge cases.

The reference (:func:`reference`) is the rule written the obvious slow way: every combination,
every break time, one ``numpy.linalg.lstsq`` per fit. Comparisons tolerate rounding-level
near-ties (two break times or combinations whose dchi2 agree to 1e-6): there either choice is
correct, so the test checks that the kernel's choice is one of the tied best ones.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consumer.alertfinder.api import (
    HIGH_CADENCE,
    LOW_CADENCE,
    MAX_DATASETS,
    TriggerBatchResult,
    TriggerInputError,
    TriggerResult,
    TriggerRule,
    evaluate,
    evaluate_batch,
    fitted_line,
    rising_batch,
)
from consumer.exceptions import LensNetError

FloatArray = npt.NDArray[np.float64]
Star = list[tuple[FloatArray, FloatArray, FloatArray]]

RTOL = 1e-6


# --------------------------------------------------------------------------- reference


@dataclass
class Fit:
    """One broken-line fit of the reference: chi2, slope, intercepts by dataset index."""

    chi2: float
    slope: float
    intercepts: dict[int, float]


@dataclass
class Combination:
    datasets: tuple[int, ...]
    passed: bool
    n_high: int
    n_points: int
    chi2_flat: float
    means: dict[int, float]  # weighted mean flux of each dataset in the combination
    fits: dict[float, Fit] = field(default_factory=dict)  # t_break -> fit, slope > 0 only
    dchi2: float = 0.0
    t_break: float = np.nan
    triggered: bool = False

    @property
    def mask(self) -> int:
        return sum(1 << d for d in self.datasets)


@dataclass
class Reference:
    combinations: list[Combination]
    best: Combination | None
    medians: dict[int, float]
    means: dict[int, float]  # weighted mean flux per non-empty dataset


def reference(
    star: Star,
    *,
    k: int,
    n: int,
    n_sigma: float,
    dchi2_min: float,
    average: int = 1,
    baseline_part: int = 1,
) -> Reference:
    """The rule, brute force; ``star`` must be clean and sorted (as the kernels see it)."""
    nonempty = [d for d, (t, _, _) in enumerate(star) if len(t)]
    oldest = {d: int(np.ceil(len(star[d][1]) / baseline_part)) for d in nonempty}
    medians = {d: float(np.median(star[d][1][: oldest[d]])) for d in nonempty}
    high = {d: _reference_high(star[d], medians[d], n_sigma, average) for d in nonempty}
    combinations = []
    for size in range(1, len(nonempty) + 1):
        for combo in itertools.combinations(nonempty, size):
            combinations.append(_reference_combination(star, combo, high, k, n))
    for c in combinations:
        c.triggered = c.passed and c.dchi2 >= dchi2_min

    def key(c: Combination) -> tuple[bool, bool, float, int, int]:
        return (c.triggered, c.passed, c.dchi2, -len(c.datasets), -c.mask)

    best = max(combinations, key=key) if combinations else None
    means = {d: float(np.average(star[d][1], weights=star[d][2] ** -2.0)) for d in nonempty}
    return Reference(combinations, best, medians, means)


def _reference_high(
    dataset: tuple[FloatArray, FloatArray, FloatArray], median: float, n_sigma: float, average: int
) -> npt.NDArray[np.bool_]:
    """Which points of one dataset are high: alone, or as the weighted mean of each point and
    the ``average - 1`` before it (fewer at the start)."""
    _, flux, flux_err = dataset
    if average == 1:
        return np.asarray(flux - median >= n_sigma * flux_err)
    high = np.zeros(len(flux), dtype=bool)
    for i in range(len(flux)):
        window = slice(max(0, i - average + 1), i + 1)
        w = flux_err[window] ** -2.0
        high[i] = np.sum(w * (flux[window] - median)) >= n_sigma * np.sqrt(np.sum(w))
    return high


def _reference_combination(
    star: Star,
    combo: tuple[int, ...],
    high_by_dataset: dict[int, npt.NDArray[np.bool_]],
    k: int,
    n: int,
) -> Combination:
    t = np.concatenate([star[d][0] for d in combo])
    flux = np.concatenate([star[d][1] for d in combo])
    flux_err = np.concatenate([star[d][2] for d in combo])
    label = np.concatenate([np.full(len(star[d][0]), d) for d in combo])
    # Concatenated in ascending dataset order, a stable sort gives (time, dataset, position).
    order = np.argsort(t, kind="stable")
    high = np.concatenate([high_by_dataset[d] for d in combo])
    tail = high[order][-n:]
    w = flux_err**-2.0
    means = {d: float(np.average(flux[label == d], weights=w[label == d])) for d in combo}
    flat_model = np.array([means[d] for d in label])
    result = Combination(
        datasets=combo,
        passed=bool(len(t) >= n and tail.sum() >= k),
        n_high=int(tail.sum()),
        n_points=len(t),
        chi2_flat=float(np.sum(w * (flux - flat_model) ** 2)),
        means=means,
    )
    indicators = (label[:, None] == np.array(combo)[None, :]).astype(float)
    root_w = np.sqrt(w)
    for t_break in np.unique(t)[:-1]:
        lever = np.maximum(0.0, t - t_break)
        if all(np.ptp(lever[label == d]) == 0 for d in combo):
            continue  # the slope is not identifiable: every dataset's lever is constant
        design = np.column_stack([indicators, lever])
        coef = np.linalg.lstsq(design * root_w[:, None], flux * root_w, rcond=None)[0]
        if coef[-1] <= 0:
            continue
        chi2 = float(np.sum(w * (flux - design @ coef) ** 2))
        result.fits[float(t_break)] = Fit(
            chi2, float(coef[-1]), dict(zip(combo, coef[:-1], strict=True))
        )
    if result.fits:
        result.t_break = min(result.fits, key=lambda tb: result.fits[tb].chi2)
        # Nested models: dchi2 >= 0; a rounding-level slope > 0 must not make it negative.
        result.dchi2 = max(0.0, result.chi2_flat - result.fits[result.t_break].chi2)
    return result


def _tol(c: Combination) -> float:
    return RTOL * max(c.dchi2, 1.0) + 1e-9 * c.chi2_flat


def assert_matches(result: TriggerResult, ref: Reference, dchi2_min: float) -> bool:
    """The kernel's verdict is the reference's, up to rounding-level ties.

    Returns False (checking nothing) when dchi2 lies within rounding of ``dchi2_min``, where
    either verdict is right; the callers' seeds never hit that.
    """
    best = ref.best
    if best is None:
        assert not result.triggered
        assert result.datasets == ()
        return True
    if dchi2_min > 0 and abs(best.dchi2 - dchi2_min) <= _tol(best):
        return False
    assert result.triggered == best.triggered
    assert result.passed_rising == best.passed
    assert result.dchi2 == pytest.approx(best.dchi2, rel=RTOL, abs=_tol(best))
    chosen = {c.datasets: c for c in ref.combinations}[result.datasets]
    if result.datasets != best.datasets:
        # Only acceptable as a tie: same flags, same dchi2 to rounding.
        assert (chosen.triggered, chosen.passed) == (best.triggered, best.passed)
        assert chosen.dchi2 == pytest.approx(best.dchi2, rel=RTOL, abs=_tol(best))
    assert result.n_high == chosen.n_high
    assert result.n_points == chosen.n_points
    assert result.chi2_flat == pytest.approx(chosen.chi2_flat, rel=1e-9, abs=1e-9)
    for d, median in ref.medians.items():
        assert result.baseline[d] == median
    intercepts = dict(ref.means)
    tiny = result.dchi2 <= _tol(chosen)  # a rounding-level slope: a break or none both right
    if tiny:
        assert chosen.dchi2 <= _tol(chosen)
    if np.isnan(result.t_break):
        assert tiny
        assert result.slope == 0.0
    elif result.t_break in chosen.fits:
        fit = chosen.fits[result.t_break]
        assert chosen.chi2_flat - fit.chi2 == pytest.approx(
            result.dchi2, rel=RTOL, abs=_tol(chosen)
        )
        if not tiny:
            assert result.slope == pytest.approx(fit.slope, rel=1e-5)
        intercepts.update(fit.intercepts)
    else:
        # The reference saw a slope <= 0 there: only possible at rounding level.
        assert tiny
        for d in chosen.datasets:
            del intercepts[d]
    scale = max([1.0, *(abs(c) for c in intercepts.values())])  # none left: every one was chosen
    for d, intercept in enumerate(result.intercepts):
        if d in intercepts:
            assert intercept == pytest.approx(intercepts[d], abs=1e-6 * scale)
        elif d not in chosen.datasets:
            assert np.isnan(intercept)
    return True


# --------------------------------------------------------------------------- generators


def random_star(rng: np.random.Generator, *, hjd0: float = 0.0) -> Star:
    """1-3 datasets of 5-40 points (sometimes empty, sometimes duplicate times), often rising."""
    n_datasets = int(rng.integers(1, 4))
    grid = rng.random() < 0.3  # times on a 0.5 d grid: duplicates within and across datasets
    t_rise = rng.uniform(10.0, 60.0)
    rate = rng.uniform(0.05, 2.0) if rng.random() < 0.6 else 0.0
    star: Star = []
    for _ in range(n_datasets):
        n_points = 0 if rng.random() < 0.05 else int(rng.integers(5, 41))
        t = np.sort(rng.uniform(0.0, 60.0, n_points))
        if grid:
            t = np.round(t * 2.0) / 2.0
        flux_err = rng.uniform(0.5, 2.0, n_points)
        flux = rng.uniform(-5.0, 5.0) + rng.normal(0.0, flux_err)
        if rng.random() < 0.7:
            flux += rate * np.maximum(0.0, t - t_rise)
        star.append((t + hjd0, flux, flux_err))
    return star


def random_rule(rng: np.random.Generator) -> TriggerRule:
    k = int(rng.integers(1, 6))
    return TriggerRule(
        k=k,
        n=k + int(rng.integers(0, 4)),
        n_sigma=float(rng.choice([1.0, 2.0, 3.0])),
        dchi2_min=float(rng.choice([0.0, 10.0, 50.0, 200.0])),
        average=int(rng.choice([1, 1, 2, 4])),
        baseline_part=int(rng.choice([1, 1, 2, 3])),
    )


def pack(stars: list[Star]) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Concatenate stars into the batch layout: t, flux, flux_err, dataset/star offsets."""
    datasets = [d for star in stars for d in star]
    dataset_offsets = np.concatenate([[0], np.cumsum([len(d[0]) for d in datasets])])
    star_offsets = np.concatenate([[0], np.cumsum([len(star) for star in stars])])
    columns = [np.concatenate([d[i] for d in datasets]) for i in range(3)]
    return columns[0], columns[1], columns[2], dataset_offsets, star_offsets


def rise(
    t: FloatArray, t0: float, rate: float, rng: np.random.Generator, flux_err: float = 1.0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    flux = 10.0 + rate * np.maximum(0.0, t - t0) + rng.normal(0.0, flux_err, len(t))
    return t, flux, np.full(len(t), flux_err)


# --------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("seed", range(8))
def test_random_stars_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    outcomes = []
    compared = 0
    for _ in range(250):
        star = random_star(rng)
        rule = random_rule(rng)
        result = evaluate(star, **dataclasses.asdict(rule))
        compared += assert_matches(
            result, reference(star, **dataclasses.asdict(rule)), rule.dchi2_min
        )
        outcomes.append(result.triggered)
    assert compared >= 248
    # The generator is meant to exercise both verdicts.
    assert 0.2 < np.mean(outcomes) < 0.8


def test_random_stars_at_full_hjd_match_reference() -> None:
    # HJD ~ 2.46e6 d: the kernel must not lose precision to the size of the times.
    rng = np.random.default_rng(100)
    for _ in range(200):
        star = random_star(rng, hjd0=2_460_000.0)
        rule = random_rule(rng)
        result = evaluate(star, **dataclasses.asdict(rule))
        assert_matches(result, reference(star, **dataclasses.asdict(rule)), rule.dchi2_min)


@st.composite
def stars(draw: st.DrawFn) -> tuple[Star, TriggerRule]:
    """Small stars with coarse values, so equal times and fluxes (exact ties) are common."""
    n_datasets = draw(st.integers(1, 3))
    star: Star = []
    for _ in range(n_datasets):
        n_points = draw(st.integers(0, 12))
        t = np.sort(
            np.array(
                draw(st.lists(st.integers(0, 30), min_size=n_points, max_size=n_points)),
                dtype=float,
            )
        )
        flux = np.array(
            draw(st.lists(st.integers(-20, 20), min_size=n_points, max_size=n_points)), dtype=float
        )
        flux_err = np.array(
            draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=n_points, max_size=n_points))
        )
        star.append((t, flux, flux_err))
    k = draw(st.integers(1, 4))
    rule = TriggerRule(
        k,
        k + draw(st.integers(0, 2)),
        draw(st.sampled_from([0.0, 1.0, 3.0])),
        draw(st.sampled_from([0.0, 5.0, 50.0])),
        draw(st.sampled_from([1, 2, 3])),
        draw(st.sampled_from([1, 2, 3])),
    )
    return star, rule


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stars())
@example(
    (
        [
            (np.array([0.0]), np.array([0.0]), np.array([0.5])),
            (np.array([8.0, 15.0, 22.0]), np.array([0.0, 1.0, 0.0]), np.array([0.5, 1.0, 0.5])),
        ],
        TriggerRule(k=1, n=1, n_sigma=0.0, dchi2_min=0.0),
    )
)  # a rounding-level slope over every dataset: no intercept left to compare
def test_property_matches_reference(case: tuple[Star, TriggerRule]) -> None:
    star, rule = case
    result = evaluate(star, **dataclasses.asdict(rule))
    assert_matches(result, reference(star, **dataclasses.asdict(rule)), rule.dchi2_min)


def test_batch_equals_single_star() -> None:
    rng = np.random.default_rng(7)
    stars_ = [random_star(rng) for _ in range(300)]
    rules = [random_rule(rng) for _ in stars_]
    t, flux, flux_err, dataset_offsets, star_offsets = pack(stars_)
    columns: dict[str, Any] = {
        f.name: [getattr(r, f.name) for r in rules] for f in dataclasses.fields(TriggerRule)
    }
    rising_rule = {name: v for name, v in columns.items() if name != "dchi2_min"}
    arrays = (t, flux, flux_err, dataset_offsets, star_offsets)
    batch = evaluate_batch(*arrays, **columns)
    rising = rising_batch(*arrays, **rising_rule)
    cached = rising_batch(*arrays, **rising_rule, baseline=batch.baseline)
    assert len(batch) == len(stars_)
    for i, (star, rule) in enumerate(zip(stars_, rules, strict=True)):
        single = evaluate(star, **dataclasses.asdict(rule))
        assert _same(batch.star(i), single)
        assert rising.passed[i] == single.passed_rising
        ref = reference(star, **dataclasses.asdict(rule))
        eligible = [c for c in ref.combinations if c.n_points >= rule.n]
        assert rising.n_high[i] == max((c.n_high for c in eligible), default=0)
        if eligible:
            best = max(eligible, key=lambda c: (c.n_high, -len(c.datasets), -c.mask))
            assert rising.combination[i] == best.mask
    for name in ("passed", "n_high", "combination"):
        np.testing.assert_array_equal(getattr(rising, name), getattr(cached, name))


def _same(a: TriggerResult, b: TriggerResult) -> bool:
    """Field-by-field equality with NaN == NaN."""
    for f in dataclasses.fields(TriggerResult):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if not np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True):
            return False
    return True


# --------------------------------------------------------------------------- known answers


def test_flat_star_never_triggers() -> None:
    rng = np.random.default_rng(11)
    for rule in (HIGH_CADENCE, LOW_CADENCE):
        for _ in range(20):
            star = [rise(np.sort(rng.uniform(0, 100, 300)), 0.0, 0.0, rng) for _ in range(3)]
            assert not evaluate(star, **dataclasses.asdict(rule)).triggered


def test_noiseless_constant_star_has_no_break() -> None:
    t = np.arange(50.0)
    result = evaluate([(t, np.full(50, 3.0), np.ones(50))], **dataclasses.asdict(HIGH_CADENCE))
    assert not result.triggered
    assert result.dchi2 == 0.0
    assert np.isnan(result.t_break)
    assert result.slope == 0.0
    assert result.intercepts == (3.0,)


def test_rise_in_one_site_triggers_with_that_site() -> None:
    rng = np.random.default_rng(12)
    star = [rise(np.sort(rng.uniform(0, 100, 300)), 0.0, 0.0, rng) for _ in range(3)]
    star[1] = rise(star[1][0], 90.0, 3.0, rng)
    result = evaluate(star, **dataclasses.asdict(HIGH_CADENCE))
    assert result.triggered
    assert result.datasets == (1,)
    assert result.t_break == pytest.approx(90.0, abs=2.0)
    assert result.slope == pytest.approx(3.0, rel=0.2)


def test_rise_in_two_sites_picks_their_combination() -> None:
    rng = np.random.default_rng(13)
    star = [rise(np.sort(rng.uniform(0, 100, 300)), 0.0, 0.0, rng) for _ in range(3)]
    star[0] = rise(star[0][0], 90.0, 1.0, rng)
    star[2] = rise(star[2][0], 90.0, 1.0, rng)
    result = evaluate(star, **dataclasses.asdict(HIGH_CADENCE))
    assert result.triggered
    assert result.datasets == (0, 2)


def test_single_high_outlier_does_not_trigger() -> None:
    rng = np.random.default_rng(14)
    t, flux, flux_err = rise(np.sort(rng.uniform(0, 100, 300)), 0.0, 0.0, rng)
    flux[-1] += 200.0
    result = evaluate([(t, flux, flux_err)], **dataclasses.asdict(HIGH_CADENCE))
    assert result.dchi2 > HIGH_CADENCE.dchi2_min  # the fit alone would fire...
    assert not result.passed_rising  # ...but one high point is not five
    assert not result.triggered


# --------------------------------------------------------------------------- fitted line


def test_fitted_line_matches_reference_fit() -> None:
    rng = np.random.default_rng(21)
    checked = 0
    for _ in range(200):
        star = random_star(rng)
        rule = random_rule(rng)
        result = evaluate(star, **dataclasses.asdict(rule))
        ref = reference(star, **dataclasses.asdict(rule))
        chosen = {c.datasets: c for c in ref.combinations}.get(result.datasets)
        lines = fitted_line(star, result)
        assert [len(line) for line in lines] == [len(t) for t, _, _ in star]
        if chosen is None or not np.isfinite(result.t_break):
            continue
        fit = chosen.fits[result.t_break]
        for d, ((t, flux, flux_err), line) in enumerate(zip(star, lines, strict=True)):
            if d in fit.intercepts:
                expected = fit.intercepts[d] + fit.slope * np.maximum(0.0, t - result.t_break)
                np.testing.assert_allclose(line, expected, rtol=1e-6, atol=1e-6)
                before = t <= result.t_break
                assert np.all(line[before] == result.intercepts[d])
            elif len(t):
                mean = np.sum(flux / flux_err**2) / np.sum(flux_err**-2.0)
                np.testing.assert_allclose(line, mean, rtol=1e-12)
        checked += 1
    assert checked > 50


# --------------------------------------------------------------------------- input handling


def test_a_faint_rise_passes_only_averaged() -> None:
    """Points 1.5 errors up never pass 3 sigma alone; means of 8 of them sit 4.2 errors up."""
    rng = np.random.default_rng(11)
    t = np.arange(400, dtype=np.float64) * 0.05
    flux = rng.normal(0.0, 1.0, 400) + np.where(t > 18.0, 1.5, 0.0)
    star: Star = [(t, flux, np.ones(400))]
    alone = TriggerRule(5, 5, 3.0, 50.0)
    averaged = dataclasses.replace(alone, average=8)
    assert not evaluate(star, **dataclasses.asdict(alone)).triggered
    result = evaluate(star, **dataclasses.asdict(averaged))
    assert result.triggered
    assert result.n_high == 5
    assert_matches(result, reference(star, **dataclasses.asdict(averaged)), 50.0)
    assert averaged.span == 12
    assert str(averaged) == "5/5@3:50~8"


def test_a_rise_holding_most_of_a_short_dataset_passes_on_the_oldest_half() -> None:
    """10 flat points, then 30 that rise fast and level off: the median (~20) sits in the rise
    and the last points are not 3 errors above it; the median of the oldest half (20 points,
    10 of them flat: ~3) is lower, and they are."""
    t = np.arange(40, dtype=np.float64)
    rise = 20.0 * (1.0 - np.exp(-(t - 9.0) / 3.0)) + 0.05 * (t - 9.0)
    flux = np.where(t < 10, 0.0, rise) + np.tile([0.3, -0.3], 20)
    star: Star = [(t, flux, np.full(40, 3.0))]
    whole = TriggerRule(5, 5, 3.0, 50.0)
    oldest_half = dataclasses.replace(whole, baseline_part=2)
    assert not evaluate(star, **dataclasses.asdict(whole)).passed_rising
    result = evaluate(star, **dataclasses.asdict(oldest_half))
    assert result.triggered
    assert result.baseline == (float(np.median(flux[:20])),)
    assert_matches(result, reference(star, **dataclasses.asdict(oldest_half)), 50.0)
    assert str(oldest_half) == "5/5@3:50^2"


def _rising_star(seed: int = 31) -> Star:
    rng = np.random.default_rng(seed)
    return [
        rise(np.sort(rng.uniform(0, 100, 80)), 80.0, 2.0, rng),
        rise(np.sort(rng.uniform(0, 100, 60)), 0.0, 0.0, rng),
    ]


@pytest.mark.parametrize("column", [0, 1, 2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_points_are_dropped(column: int, bad: float) -> None:
    star = _rising_star()
    dirty = [tuple(c.copy() for c in d) for d in star]
    dirty[0][column][[3, 50]] = bad
    clean = [tuple(np.delete(c, [3, 50]) for c in star[0]), star[1]]
    result = evaluate(dirty, **dataclasses.asdict(HIGH_CADENCE))  # type: ignore[arg-type]
    expected = evaluate(clean, **dataclasses.asdict(HIGH_CADENCE))  # type: ignore[arg-type]
    assert result.n_dropped == 2
    assert _same(result, dataclasses.replace(expected, n_dropped=2))


@pytest.mark.parametrize("flux_err", [0.0, -1.0])
def test_non_positive_errors_are_dropped(flux_err: float) -> None:
    star = _rising_star()
    star[1][2][:5] = flux_err
    result = evaluate(star, **dataclasses.asdict(HIGH_CADENCE))
    clean = [star[0], tuple(c[5:] for c in star[1])]
    assert result.n_dropped == 5
    expected = evaluate(clean, **dataclasses.asdict(HIGH_CADENCE))  # type: ignore[arg-type]
    assert _same(result, dataclasses.replace(expected, n_dropped=5))


def test_fewer_than_n_points_never_passes() -> None:
    t = np.arange(4.0)
    flux = np.array([0.0, 0.0, 100.0, 200.0])
    result = evaluate([(t, flux, np.ones(4))], **dataclasses.asdict(HIGH_CADENCE))
    assert not result.passed_rising
    assert not result.triggered
    assert result.dchi2 > 0.0  # the fit still ran and is reported
    assert result.n_points == 4


def test_duplicate_times_match_reference() -> None:
    rng = np.random.default_rng(41)
    for _ in range(100):
        t = np.sort(rng.integers(0, 15, 30).astype(float))
        star = [rise(t, 8.0, 2.0, rng), rise(t.copy(), 0.0, 0.0, rng)]
        rule = TriggerRule(3, 4, 2.0, 10.0)
        result = evaluate(star, **dataclasses.asdict(rule))
        assert_matches(result, reference(star, **dataclasses.asdict(rule)), rule.dchi2_min)


@given(st.randoms(use_true_random=False))
@settings(max_examples=50, deadline=None)
def test_unsorted_input_is_sorted(random: object) -> None:
    star = _rising_star()
    shuffled = []
    for t, flux, flux_err in star:
        order = np.arange(len(t))
        random.shuffle(order)  # type: ignore[attr-defined]
        shuffled.append((t[order], flux[order], flux_err[order]))
    rule = dataclasses.asdict(HIGH_CADENCE)
    assert _same(evaluate(shuffled, **rule), evaluate(star, **rule))


def test_empty_datasets_keep_their_index() -> None:
    star = _rising_star()
    empty = (np.empty(0), np.empty(0), np.empty(0))
    with_empty = [empty, star[0], empty, star[1]]
    result = evaluate(with_empty, **dataclasses.asdict(HIGH_CADENCE))
    expected = evaluate(star, **dataclasses.asdict(HIGH_CADENCE))
    assert result.triggered
    assert result.datasets == tuple(1 + 2 * d for d in expected.datasets)
    assert result.dchi2 == expected.dchi2
    assert np.isnan(result.intercepts[0])
    assert np.isnan(result.intercepts[2])
    assert np.isnan(result.baseline[0])
    lines = fitted_line(with_empty, result)
    assert len(lines[0]) == 0


def test_all_bad_points_make_an_empty_dataset() -> None:
    star = _rising_star()
    nan = np.full(5, np.nan)
    result = evaluate([star[0], (nan, nan, nan)], **dataclasses.asdict(HIGH_CADENCE))
    assert result.n_dropped == 5
    assert result.datasets == (0,)
    assert np.isnan(result.intercepts[1])
    assert np.all(np.isnan(fitted_line([star[0], (nan, nan, nan)], result)[1]))


@pytest.mark.parametrize("star", [[], [(np.empty(0), np.empty(0), np.empty(0))]])
def test_star_without_points_does_not_trigger(star: Star) -> None:
    result = evaluate(star, **dataclasses.asdict(HIGH_CADENCE))
    assert not result.triggered
    assert result.datasets == ()
    assert result.dchi2 == 0.0
    assert np.isnan(result.t_break)


def test_many_datasets() -> None:
    # 3 sites x 2 fields: 63 combinations; the rise is seen by datasets 1 and 4.
    rng = np.random.default_rng(51)
    star = [rise(np.sort(rng.uniform(0, 100, 40)), 0.0, 0.0, rng) for _ in range(6)]
    for d in (1, 4):
        star[d] = rise(star[d][0], 85.0, 3.0, rng)
    rule = TriggerRule(4, 4, 3.0, 100.0)
    result = evaluate(star, **dataclasses.asdict(rule))
    assert_matches(result, reference(star, **dataclasses.asdict(rule)), rule.dchi2_min)
    assert result.datasets == (1, 4)


@pytest.mark.parametrize(
    ("star", "message"),
    [
        ([(np.arange(3.0), np.ones(3), np.ones(2))], "lengths differ"),
        ([(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)))], "1-D"),
        ([(np.array(["a", "b"]), np.ones(2), np.ones(2))], "not numbers"),
        ([(np.ones(2), np.ones(2))], "expected \\(t, flux, flux_err\\)"),
        ([(np.ones(2), np.ones(2), np.ones(2))] * (MAX_DATASETS + 1), "at most"),
    ],
)
def test_malformed_input_raises(star: Star, message: str) -> None:
    with pytest.raises(TriggerInputError, match=message):
        evaluate(star, **dataclasses.asdict(HIGH_CADENCE))


@pytest.mark.parametrize(
    ("rule", "name"),
    [
        ({"k": 0, "n": 5, "n_sigma": 3.0, "dchi2_min": 250.0}, "k"),
        ({"k": 6, "n": 5, "n_sigma": 3.0, "dchi2_min": 250.0}, "n"),
        ({"k": 5, "n": 5, "n_sigma": -1.0, "dchi2_min": 250.0}, "n_sigma"),
        ({"k": 5, "n": 5, "n_sigma": 3.0, "dchi2_min": np.nan}, "dchi2_min"),
        ({"k": 5.5, "n": 5, "n_sigma": 3.0, "dchi2_min": 250.0}, "k"),
        ({"k": 5, "n": 5, "n_sigma": 3.0, "dchi2_min": 250.0, "average": 0}, "average"),
        ({"k": 5, "n": 5, "n_sigma": 3.0, "dchi2_min": 250.0, "average": 2.0}, "average"),
        ({"k": 5, "n": 5, "n_sigma": 3.0, "dchi2_min": 250.0, "baseline_part": 0}, "baseline_part"),
    ],
)
def test_bad_rule_raises(rule: dict[str, float], name: str) -> None:
    with pytest.raises(TriggerInputError, match=f"^{name}:"):
        TriggerRule(**rule)  # type: ignore[arg-type]
    with pytest.raises(TriggerInputError, match=f"^{name}:"):
        evaluate(_rising_star(), **rule)  # type: ignore[arg-type]


def test_input_error_is_a_value_error_and_ours() -> None:
    assert issubclass(TriggerInputError, ValueError)
    assert issubclass(TriggerInputError, LensNetError)


def test_batch_rejects_dirty_or_unsorted_input_when_checking() -> None:
    star = _rising_star()
    t, flux, flux_err, dataset_offsets, star_offsets = pack([star])
    rule = dataclasses.asdict(HIGH_CADENCE)
    bad = flux.copy()
    bad[90] = np.nan
    with pytest.raises(TriggerInputError, match="dataset 1: point 90"):
        evaluate_batch(t, bad, flux_err, dataset_offsets, star_offsets, **rule)
    with pytest.raises(TriggerInputError, match="dataset 0: point 3"):
        rising_batch(
            t,
            flux,
            np.where(np.arange(len(t)) == 3, 0.0, flux_err),
            dataset_offsets,
            star_offsets,
            k=5,
            n=5,
            n_sigma=3.0,
        )
    unsorted = t.copy()
    unsorted[[10, 11]] = unsorted[[11, 10]]
    with pytest.raises(TriggerInputError, match="dataset 0: times not sorted at point 11"):
        evaluate_batch(unsorted, flux, flux_err, dataset_offsets, star_offsets, **rule)
    # Across a dataset boundary time may go back: that is not unsorted.
    result = evaluate_batch(t, flux, flux_err, dataset_offsets, star_offsets, **rule)
    assert _same(result.star(0), evaluate(star, **rule))
    # check=False trusts the caller (the daemon cleans its buffers).
    evaluate_batch(t, flux, flux_err, dataset_offsets, star_offsets, **rule, check=False)


@pytest.mark.parametrize(
    ("dataset_offsets", "star_offsets", "message"),
    [
        ([0, 80], [0, 1], "dataset_offsets"),
        ([0, 90, 80, 140], [0, 3], "dataset_offsets"),
        ([0, 80, 140], [0, 1], "star_offsets"),
        ([0.0, 80.0, 140.0], [0, 2], "dataset_offsets"),
    ],
)
def test_batch_rejects_bad_offsets(
    dataset_offsets: list[float], star_offsets: list[int], message: str
) -> None:
    t, flux, flux_err, *_ = pack([_rising_star()])
    with pytest.raises(TriggerInputError, match=message):
        evaluate_batch(
            t, flux, flux_err, dataset_offsets, star_offsets, k=5, n=5, n_sigma=3.0, dchi2_min=250.0
        )


def test_batch_rule_per_star_and_shape_errors() -> None:
    stars_ = [_rising_star(1), _rising_star(2)]
    t, flux, flux_err, dataset_offsets, star_offsets = pack(stars_)
    batch = evaluate_batch(
        t,
        flux,
        flux_err,
        dataset_offsets,
        star_offsets,
        k=[5, 10],
        n=[5, 10],
        n_sigma=3.0,
        dchi2_min=[250.0, 1e9],
    )
    assert batch.triggered[0]
    assert not batch.triggered[1]  # same kind of star, but an unreachable dchi2_min
    with pytest.raises(TriggerInputError, match=r"^k:"):
        evaluate_batch(
            t,
            flux,
            flux_err,
            dataset_offsets,
            star_offsets,
            k=[5, 5, 5],
            n=5,
            n_sigma=3.0,
            dchi2_min=0.0,
        )
    with pytest.raises(TriggerInputError, match=r"^n: expected n >= k"):
        evaluate_batch(
            t,
            flux,
            flux_err,
            dataset_offsets,
            star_offsets,
            k=[5, 6],
            n=5,
            n_sigma=3.0,
            dchi2_min=0.0,
        )
    with pytest.raises(TriggerInputError, match=r"^baseline"):
        rising_batch(
            t,
            flux,
            flux_err,
            dataset_offsets,
            star_offsets,
            k=5,
            n=5,
            n_sigma=3.0,
            baseline=np.ones(3),
        )


def test_empty_batch() -> None:
    empty = np.empty(0)
    result = evaluate_batch(empty, empty, empty, [0], [0], k=5, n=5, n_sigma=3.0, dchi2_min=0.0)
    assert isinstance(result, TriggerBatchResult)
    assert len(result) == 0
    assert rising_batch(empty, empty, empty, [0], [0], k=5, n=5, n_sigma=3.0).passed.size == 0


def test_exact_tie_prefers_fewer_datasets() -> None:
    # Dataset 1 ended before the rise: {0} and {0, 1} reach the same dchi2 exactly (dataset 1's
    # intercept absorbs it), pass alike, and the rule reports the smaller combination.
    rng = np.random.default_rng(61)
    star = [
        rise(np.sort(rng.uniform(0, 100, 80)), 85.0, 3.0, rng),
        rise(np.sort(rng.uniform(0, 50, 40)), 0.0, 0.0, rng),
    ]
    rule = dataclasses.asdict(HIGH_CADENCE)
    ref = reference(star, **rule)
    by_datasets = {c.datasets: c for c in ref.combinations}
    assert by_datasets[(0,)].dchi2 == pytest.approx(by_datasets[(0, 1)].dchi2, rel=1e-9)
    assert evaluate(star, **rule).datasets == (0,)


@given(
    k=st.integers(1, 20),
    extra=st.integers(0, 20),
    n_sigma=st.floats(0, 10, allow_nan=False).map(lambda x: round(x, 3)),
    dchi2_min=st.floats(0, 1e4, allow_nan=False).map(lambda x: round(x, 1)),
    average=st.integers(1, 12),
    part=st.integers(1, 4),
)
def test_a_rule_written_out_parses_back(
    k: int, extra: int, n_sigma: float, dchi2_min: float, average: int, part: int
) -> None:
    rule = TriggerRule(k, k + extra, n_sigma, dchi2_min, average, part)
    assert TriggerRule.parse(str(rule)) == rule
    assert ("~" in str(rule)) == (average > 1)
    assert ("^" in str(rule)) == (part > 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5/5", "expected k/n@n_sigma:dchi2_min"),
        ("five/5@3:250", "expected k/n@n_sigma:dchi2_min"),
        ("5/5@3", "expected k/n@n_sigma:dchi2_min"),
        ("6/5@3:250", "n: expected"),
        ("5/5@-1:250", "n_sigma: expected"),
        ("5/5@3:250~0", "average: expected"),
        ("5/5@3:250~two", "expected k/n@n_sigma:dchi2_min"),
        ("5/5@3:250~4^0", "baseline_part: expected"),
        ("5/5@3:250^half", "expected k/n@n_sigma:dchi2_min"),
    ],
)
def test_a_rule_that_is_not_one_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(TriggerInputError, match=message):
        TriggerRule.parse(text)
