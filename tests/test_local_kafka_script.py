"""The local broker script itself (its start/stop path runs in the session fixture)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import KAFKA_SH


def test_usage_without_arguments() -> None:
    result = subprocess.run([str(KAFKA_SH)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "start [DIR]" in result.stdout


def test_status_of_a_stopped_broker_fails_cleanly(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(KAFKA_SH), "status", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "no broker running" in result.stderr


def test_stopping_nothing_is_fine(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(KAFKA_SH), "stop", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
