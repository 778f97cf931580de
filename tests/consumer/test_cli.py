from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.seasons.archive import read_season
from consumer.settings import Settings

SUBCOMMANDS = ("run", "replay", "simulate", "train", "evaluate", "classify", "alerts", "topics")


def lensnet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "200", **(env or {})},
        timeout=120,
    )


def test_help_lists_every_subcommand() -> None:
    result = lensnet("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert f" {name} " in result.stdout


def test_bad_configuration_is_one_line_naming_the_setting() -> None:
    result = lensnet("topics", "describe", env={"LENSNET_TOPICS__PARTITIONS": "lots"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "LENSNET_TOPICS__PARTITIONS" in lines[0]


def test_unreachable_broker_exits_3() -> None:
    env = {"LENSNET_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = lensnet("topics", "describe", env=env)
    assert result.returncode == 3
    assert "cannot list topics" in result.stderr


@pytest.mark.kafka
def test_topics_create_then_describe(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(partitions=3)
    env = {
        "LENSNET_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LENSNET_TOPICS__PHOTOMETRY_PREFIX": settings.topics.photometry_prefix,
        "LENSNET_TOPICS__ALERTS": settings.topics.alerts,
        "LENSNET_TOPICS__DEAD_LETTER": settings.topics.dead_letter,
        "LENSNET_TOPICS__PARTITIONS": "3",
    }
    created = lensnet("topics", "create", env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created ") == 5
    assert "co-partitioned with 3 partitions" in created.stdout
    described = lensnet("topics", "describe", env=env)
    assert described.returncode == 0, described.stderr
    assert f"{settings.topics.photometry('SSO')}" in described.stdout
    assert "missing" not in described.stdout


def test_simulate_writes_a_readable_season(tmp_path: Path) -> None:
    out = tmp_path / "season"
    result = lensnet("simulate", str(out), "--stars", "12", "--seed", "5", "--no-progress")
    assert result.returncode == 0, result.stderr
    stars, report = read_season(out)
    assert len(stars) == 12
    assert (out / "labels.csv").is_file()
    assert report.n_observations > 0


def test_replay_of_a_missing_folder_is_one_clear_line(tmp_path: Path) -> None:
    env = {"LENSNET_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = lensnet("replay", str(tmp_path / "absent"), "--no-create-topics", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == f"lensnet: {tmp_path / 'absent'}: not a directory"
