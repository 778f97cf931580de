"""Offline scoring with the shipped artifact: .pysis files in, one JSON line per star out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.alertfinder.api import TriggerRule
from consumer.constants import HJD_OFFSET, SITES
from consumer.seasons.archive import Star
from model.classify import classify_season, score
from model.export import load_artifact
from model.features import Candidate, InsufficientDataError, collate, prepare
from model.simulate import SimulationConfig, simulate_star
from model.timeline import DEFAULT_CADENCE

PREFIX = {"CTIO": "KMTC", "SAAO": "KMTS", "SSO": "KMTA"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    """Inference as the daemon runs it; two threads on a busy 2-core machine spin and crawl."""
    torch.set_num_threads(1)


def write_pysis(star: Star, folder: Path, *, limit: int | None = None) -> None:
    """The star's I-band datasets as 8-column pySIS files (no PSF quality column)."""
    folder.mkdir(parents=True)
    for dataset in star.datasets:
        keep = dataset.band == 0
        rows = np.column_stack(
            [
                dataset.hjd[keep] - HJD_OFFSET,
                dataset.flux[keep],
                dataset.flux_err[keep],
                np.full(keep.sum(), 18.0),
                np.full(keep.sum(), 0.01),
                dataset.fwhm[keep],
                dataset.sky[keep],
                dataset.airmass[keep],
            ]
        )[:limit]
        name = f"{PREFIX[dataset.site]}{dataset.field:02d}_I.pysis"
        np.savetxt(folder / name, rows, fmt="%.6f")


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("season")
    config = SimulationConfig(n_stars=20, seed=11)
    for index in range(3):
        star, _ = simulate_star(config, index)
        write_pysis(star, root / star.name)
    short, _ = simulate_star(config, 3)
    write_pysis(short, root / "short", limit=4)
    (root / "labels.csv").write_text("not a star\n")
    return root


def test_pysis_season_is_scored_star_by_star(season: Path) -> None:
    module, card = load_artifact()
    records = list(classify_season(module, season))
    scored = [r for r in records if r["status"] == "scored"]
    assert len(scored) == 3
    for record in scored:
        assert 0.0 <= record["p_event"] <= 1.0
        total = record["p_no"] + record["p_maybe"] + record["p_yes"]
        assert total == pytest.approx(1.0, abs=1e-5)
        assert record["label"] in ("NO", "MAYBE", "YES")
        assert set(record["site_scores"]) == set(SITES)
        assert set(record["trigger_sites"]) <= set(SITES)
        json.dumps(record, allow_nan=False)
    short = next(r for r in records if r.get("star") == "short")
    assert short["status"] == "insufficient_data"
    assert "fewer than 10" in short["reason"]
    assert any(r["status"] == "skipped" and r["path"].endswith("labels.csv") for r in records)
    assert card["thresholds"]["balanced"]["value"] == 0.45


@pytest.fixture(scope="module")
def pool() -> list[Candidate]:
    """Simulated stars of very different lengths, prepared once."""
    config = SimulationConfig(n_stars=40, seed=11)
    candidates = []
    for index in range(40):
        star, _ = simulate_star(config, index)
        for as_of in (star.datasets[0].hjd[40], np.inf):
            try:
                candidates.append(prepare(star, as_of=float(as_of)))
            except InsufficientDataError:
                continue
    assert len({int(c.lengths.max()) for c in candidates}) > 10
    return candidates


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_star_scores_the_same_alone_and_in_any_batch(
    pool: list[Candidate], data: st.DataObject
) -> None:
    module, _ = load_artifact()
    chosen = data.draw(st.lists(st.sampled_from(range(len(pool))), min_size=2, max_size=12))
    batch_size = data.draw(st.integers(min_value=1, max_value=12))
    together = score(module, [pool[i] for i in chosen], batch_size=batch_size)
    for i, result in zip(chosen, together, strict=True):
        (alone,) = score(module, [pool[i]], batch_size=1)
        assert abs(result.p_event - alone.p_event) <= 1e-5
        assert np.abs(np.subtract(result.p_class, alone.p_class)).max() <= 1e-5
        assert np.abs(np.subtract(result.site_scores, alone.site_scores)).max() <= 1e-5


def test_extra_padding_does_not_change_the_score(pool: list[Candidate]) -> None:
    module, _ = load_artifact()
    x, lengths = collate([pool[5]])
    padded = np.zeros((1, 3, x.shape[2] + 300, x.shape[3]), dtype=np.float32)
    padded[:, :, : x.shape[2]] = x
    padded[:, :, x.shape[2] :] = 123.0  # whatever follows a site's last step is never read
    with torch.no_grad():
        alone = module(torch.from_numpy(x), torch.from_numpy(lengths))
        longer = module(torch.from_numpy(padded), torch.from_numpy(lengths))
    for a, b in zip(alone, longer, strict=True):
        assert (a - b).abs().max().item() <= 1e-5


def test_cli_classify_prints_json_lines(season: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
    result = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "classify", str(season), "--as-of", "2461250"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    statuses = sorted(r["status"] for r in records)
    assert statuses.count("scored") + statuses.count("insufficient_data") == 4
    assert all(r["t_last"] <= 2461250 for r in records if r["status"] == "scored")
    # The novelty score and the second opinion of every scored star (--opinions, the default).
    scored = [r for r in records if r["status"] == "scored"]
    assert all(r["novelty"]["unusual"] == (r["novelty"]["energy"] > r["novelty"]["energy_cut"])
               for r in scored)  # fmt: skip
    assert all(0.0 <= r["second_opinion"]["p_event"] <= 1.0 for r in scored)
    # The daemon's magnification gate on the fit of the points LensNet saw.
    for r in scored:
        a = r["peak_magnification"]
        assert r["magnification_gate"] == (a is None or a >= 2.0)


def test_a_magnitude_file_with_a_frame_column_is_scored_and_reported(tmp_path: Path) -> None:
    """Newcomer items 8 and 12: the extra column is ignored and said so; the points LensNet did
    not see are counted by reason."""
    rng = np.random.default_rng(4)
    hjd = 9100.0 + np.arange(60) * 0.25
    mag = 19.0 + rng.normal(0.0, 0.02, 60)
    rows = np.column_stack([hjd, mag, np.full(60, 0.02), np.arange(60)])
    (tmp_path / "star7").mkdir()
    np.savetxt(tmp_path / "star7" / "KMTC02_I.dat", rows, fmt=["%.5f", "%.4f", "%.4f", "%d"])
    module, _ = load_artifact()
    records = list(classify_season(module, tmp_path))
    scored, partial = records
    assert scored["status"] == "scored"
    assert scored["n_dropped"] == {
        "cleaning": 0,
        "other_datasets": 0,
        "beyond_cap": 0,
        "outliers": 0,
    }
    assert partial == {
        "path": str(tmp_path / "star7" / "KMTC02_I.dat"),
        "status": "read_in_part",
        "ignored": "column 4 of 4 ignored (read as HJD mag mag_err)",
    }


def test_each_star_is_triggered_with_the_cadence_given(season: Path) -> None:
    """``lensnet classify`` passes the artifact's training cadence: a star's trigger figures
    follow its rules (here the loosest possible rule passes where the shipped one need not)."""
    module, _ = load_artifact()
    anything = DEFAULT_CADENCE.with_rules(
        TriggerRule.parse("1/1@0:0"), TriggerRule.parse("1/1@0:0")
    )
    shipped = {r.get("star"): r for r in classify_season(module, season, opinions=None)}
    loose = {
        r.get("star"): r for r in classify_season(module, season, cadence=anything, opinions=None)
    }
    scored = [name for name, r in shipped.items() if r["status"] == "scored"]
    assert scored
    for name in scored:
        assert loose[name]["passed_rising"]
        assert loose[name]["n_high"] >= shipped[name]["n_high"]
