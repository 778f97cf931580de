"""model/retrain_trigger.sh end to end on a tiny season: what a GPU session will run as is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from model.timeline import card_cadence
from tests.conftest import REPO


def test_the_script_trains_on_the_rule_it_is_given_and_checks_on_validation(
    tmp_path: Path,
) -> None:
    out = tmp_path / "runs"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")},
        "LENSNET": f"{sys.executable} -m consumer.cli",
        "PYTHON": sys.executable,
        "LENSNET_CACHE_DIR": str(tmp_path / "cache"),
        "DEVICE": "cpu",
        "WORKERS": "1",
        "HIGH": "3/5@2:100",
        "LOW": "5/10@2:150",
        "VALIDATION_STARS": "12",
        "EXTRA_ARGS": "--train-seasons 41 --stars-per-season 30 --validation-stars 12 "
        "--epochs 1 --hidden 8",
    }
    result = subprocess.run(
        ["bash", str(REPO / "model" / "retrain_trigger.sh"), str(out), "5"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((out / "seed-5" / "model_card.json").read_text())
    cadence = card_cadence(card)
    assert (str(cadence.high_cadence), str(cadence.low_cadence)) == ("3/5@2:100", "5/10@2:150")
    assert "--high-cadence-rule 3/5@2:100" in card["training"]["command"]
    check = (out / "validation.txt").read_text()
    assert "trigger high cadence 3/5@2:100, low cadence 5/10@2:150" in check
    assert check.count(f"{card['version']}:") == 2  # with and without the gate
    assert (out / "calls-validation.npz").stat().st_size > 0
