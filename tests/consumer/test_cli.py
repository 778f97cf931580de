from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.seasons.archive import read_season
from consumer.settings import KafkaSettings, Settings
from tests.conftest import REPO

SUBCOMMANDS = (
    "run",
    "replay",
    "simulate",
    "train",
    "evaluate",
    "trigger-scan",
    "classify",
    "posterior",
    "alerts",
    "topics",
)


DEAD = {"LENSNET_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}


def lensnet(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "200", **(env or {})},
        timeout=timeout,
    )


def json_lines(stdout: str) -> list[object]:
    """Every line of ``stdout`` parsed as JSON (a line that is not fails the test)."""
    return [json.loads(line) for line in stdout.splitlines()]


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


@pytest.mark.parametrize(
    "args",
    [
        ("alerts", "stats"),
        ("alerts", "tail", "--until-end", "--json"),
        ("alerts", "tail", "--json"),
        ("alerts", "stats", "--group", "g"),
        ("alerts", "plot", "{tmp}/plots"),
        ("topics", "describe"),
        ("topics", "create"),
        ("replay", "{tmp}", "--no-progress"),
        ("run", "--until-end", "--http-port", "-1"),
    ],
    ids=lambda args: " ".join(a for a in args if not a.startswith("{")),
)
def test_a_dead_broker_fails_fast_with_one_line_naming_address_and_setting(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    """Item 1-2 of the newcomer issue: exit 3 within seconds, one stderr line, clean stdout."""
    env = {
        **DEAD,
        "LENSNET_DAEMON__STARTUP_ATTEMPTS": "1",
        "LENSNET_STATE__DIRECTORY": str(tmp_path),
    }
    started = time.monotonic()
    result = lensnet(*(a.format(tmp=tmp_path) for a in args), env=env, timeout=30)
    assert time.monotonic() - started < 30
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "lensnet: cannot reach Kafka at 127.0.0.1:1 (LENSNET_KAFKA__BOOTSTRAP_SERVERS): "
    )
    assert "Connection refused" in lines[0]
    if args[0] == "run":
        assert all(line.startswith("{") for line in result.stdout.splitlines())  # its JSON log
    else:
        assert result.stdout == ""


def test_the_local_broker_is_used_when_no_address_is_set(tmp_path: Path) -> None:
    """Item 4: ad-hoc commands find the broker of `make demo` / `make kafka-start` by
    themselves and say so; a setting still wins."""
    (tmp_path / "bootstrap").write_text("127.0.0.1:1\n")
    (tmp_path / "kafka.pid").write_text(f"{os.getpid()}\n")  # a live process
    env = {"LOCAL_KAFKA_DIR": str(tmp_path)}
    result = lensnet("topics", "describe", env=env, timeout=30)
    assert result.returncode == 3
    note, error = result.stderr.strip().splitlines()
    assert note == (
        f"lensnet: Kafka at 127.0.0.1:1, the local broker ({tmp_path / 'bootstrap'}); "
        "LENSNET_KAFKA__BOOTSTRAP_SERVERS chooses another"
    )
    assert error.startswith("lensnet: cannot reach Kafka at 127.0.0.1:1 ")
    explicit = lensnet(
        "topics", "describe", env={**env, "LENSNET_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:2"}
    )
    assert explicit.stderr.startswith("lensnet: cannot reach Kafka at 127.0.0.1:2 ")


def test_a_local_cluster_is_found_like_a_single_broker(tmp_path: Path) -> None:
    """kafka.sh start --brokers 3 keeps the pids in node-<i>/."""
    (tmp_path / "bootstrap").write_text("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3\n")
    (tmp_path / "node-1").mkdir()
    (tmp_path / "node-1" / "kafka.pid").write_text(f"{os.getpid()}\n")
    result = lensnet("topics", "describe", env={"LOCAL_KAFKA_DIR": str(tmp_path)}, timeout=30)
    assert result.returncode == 3
    assert result.stderr.startswith("lensnet: Kafka at 127.0.0.1:1,127.0.0.1:2,127.0.0.1:3, ")


def test_a_stale_local_broker_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "bootstrap").write_text("127.0.0.1:1\n")
    (tmp_path / "kafka.pid").write_text("999999999\n")  # no such process
    env = {"LOCAL_KAFKA_DIR": str(tmp_path), "LENSNET_TOPICS__PARTITIONS": "lots"}
    result = lensnet("topics", "describe", env=env, timeout=30)
    assert result.returncode == 2  # the configuration error, and no note about a local broker
    assert "local broker" not in result.stderr


@pytest.mark.parametrize(
    "command", [("alerts", "tail"), ("alerts", "plot"), ("run",), ("replay",), ("topics", "create")]
)
def test_help_shows_flags_without_a_type(command: tuple[str, ...]) -> None:
    """Item 10: `--until-end <bool>` read as if the flag took a value."""
    result = lensnet(*command, "--help")
    assert result.returncode == 0
    assert "<bool>" not in result.stdout
    assert "--help" in result.stdout


def test_sigterm_during_start_up_retries_exits_at_once(tmp_path: Path) -> None:
    """Item 11: a pod terminated while `lensnet run` retries a dead broker exits within
    seconds (0, stopped cleanly), not after its retries ran out.

    It failed twice in clean-clone CI runs (no exit within 20 s of the signal) and never
    alone; if it hangs again, SIGABRT makes faulthandler print every thread's stack, which the
    failure shows. The pipes are closed either way, so nothing leaks into a later test's
    unraisable-warning check."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
    env = {**clean, **DEAD, "LENSNET_STATE__DIRECTORY": str(tmp_path), "PYTHONFAULTHANDLER": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run", "--http-port", "-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        deadline = time.monotonic() + 25
        assert process.stdout is not None
        for line in process.stdout:  # wait until it is retrying
            if "cannot reach Kafka yet, retrying" in line:
                break
            assert time.monotonic() < deadline
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack
            out, err = process.communicate(timeout=20)
            pytest.fail(f"no exit within 20 s of SIGTERM; stacks:\n{err[-6000:]}\n{out[-2000:]}")
    assert time.monotonic() - signalled < 5
    assert process.returncode == 0, err
    assert "stopped during start-up" in out


@pytest.mark.kafka
def test_sasl_against_a_plaintext_listener_says_what_was_attempted(
    kafka_settings: KafkaSettings,
) -> None:
    """Item 11: not just `Broker transport failure`: protocol, mechanism, user, address."""
    env = {
        "LENSNET_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "LENSNET_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LENSNET_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "LENSNET_KAFKA__SASL_USERNAME": "alice",
        "LENSNET_KAFKA__SASL_PASSWORD": "secret",
    }
    result = lensnet("topics", "describe", env=env, timeout=30)
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert f"at {kafka_settings.bootstrap_servers} (LENSNET_KAFKA__BOOTSTRAP_SERVERS)" in line
    assert "over SASL_PLAINTEXT with SASL SCRAM-SHA-512 as 'alice'" in line
    assert "the listener does not speak SASL" in line
    assert "secret" not in line


@pytest.mark.kafka
def test_topics_create_then_describe(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(partitions=3)
    env = {
        "LENSNET_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LENSNET_TOPICS__PHOTOMETRY_PREFIX": settings.topics.photometry_prefix,
        "LENSNET_TOPICS__ALERTS": settings.topics.alerts,
        "LENSNET_TOPICS__DEAD_LETTER": settings.topics.dead_letter,
        "LENSNET_TOPICS__EVENTS": settings.topics.events,
        "LENSNET_TOPICS__PARTITIONS": "3",
    }
    created = lensnet("topics", "create", env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created ") == 6  # 3 photometry, alerts, dead letters, events
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


def test_trigger_scan_compares_rules_on_whole_seasons(tmp_path: Path) -> None:
    out = tmp_path / "scan"
    rules = ("--rule", "shipped=5/5@3:250;10/10@3:400", "--rule", "loose=3/5@2:50;4/10@2:75")
    result = lensnet(
        "trigger-scan", *rules, "--seasons", "7", "--stars", "30", "--out", str(out), timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar off a terminal
    lines = result.stdout.splitlines()
    assert lines[0].startswith("shipped (5/5@3:250; 10/10@3:400): events before the peak ")
    assert lines[1].startswith("loose (3/5@2:50; 4/10@2:75)")
    metrics = json.loads((out / "trigger-scan.json").read_text())
    assert metrics["n_stars"] == 30
    assert list(metrics["rules"]) == ["shipped", "loose"]
    assert "| loose | 3/5@2:50; 4/10@2:75 |" in (out / "trigger-scan.md").read_text()
    assert (out / "trigger-scan.png").stat().st_size > 0
    bad = lensnet("trigger-scan", "--rule", "loose=3/5@2", "--out", str(out))
    assert bad.returncode == 2
    assert "expected name=high;low" in bad.stderr


def test_replay_of_a_missing_folder_is_one_clear_line(tmp_path: Path) -> None:
    env = {"LENSNET_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = lensnet("replay", str(tmp_path / "absent"), "--no-create-topics", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == f"lensnet: {tmp_path / 'absent'}: not a directory"


def test_progress_bars_stay_off_when_not_on_a_terminal(tmp_path: Path) -> None:
    """Item 9: no tqdm carriage returns in a log file or CI output."""
    result = lensnet("simulate", str(tmp_path / "season"), "--stars", "6", "--seed", "2")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr + result.stdout
    assert result.stderr == ""


@pytest.mark.kafka
def test_replay_prints_its_summary_only(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """Item 9: no JSON log lines among the human text, no progress bar off a terminal."""
    settings = settings_factory(partitions=2)
    season = tmp_path / "season"
    assert lensnet("simulate", str(season), "--stars", "4", "--no-progress").returncode == 0
    env = {
        "LENSNET_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LENSNET_TOPICS__PHOTOMETRY_PREFIX": settings.topics.photometry_prefix,
        "LENSNET_TOPICS__ALERTS": settings.topics.alerts,
        "LENSNET_TOPICS__DEAD_LETTER": settings.topics.dead_letter,
        "LENSNET_TOPICS__EVENTS": settings.topics.events,
        "LENSNET_TOPICS__PARTITIONS": "2",
    }
    result = lensnet("replay", str(season), env=env)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr
    assert result.stdout.startswith("replay ")
    assert not any(line.startswith("{") for line in result.stdout.splitlines())


@pytest.mark.kafka
def test_topics_create_recreate_starts_from_empty_topics(
    settings_factory: Callable[..., Settings],
) -> None:
    """Item 5: a second `make demo` starts from clean topics (its recipe uses --recreate)."""
    from confluent_kafka import Producer, TopicPartition

    from consumer.edge.kafka import make_consumer

    settings = settings_factory(partitions=2)
    env = {
        "LENSNET_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LENSNET_TOPICS__PHOTOMETRY_PREFIX": settings.topics.photometry_prefix,
        "LENSNET_TOPICS__ALERTS": settings.topics.alerts,
        "LENSNET_TOPICS__DEAD_LETTER": settings.topics.dead_letter,
        "LENSNET_TOPICS__EVENTS": settings.topics.events,
        "LENSNET_TOPICS__PARTITIONS": "2",
    }
    assert lensnet("topics", "create", env=env).returncode == 0
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(settings.topics.alerts, b"an alert of the first demo", partition=0)
    assert producer.flush(10) == 0
    again = lensnet("topics", "create", "--recreate", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("deleted ") == 6
    assert again.stdout.count("created ") == 6
    probe = make_consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "p"})
    try:
        assert probe.get_watermark_offsets(TopicPartition(settings.topics.alerts, 0), 10) == (0, 0)
    finally:
        probe.close()


def test_the_demo_recreates_its_topics() -> None:
    recipe = subprocess.run(
        ["make", "-n", "demo"], capture_output=True, text=True, timeout=60, cwd=REPO
    ).stdout
    assert "lensnet topics create --recreate" in recipe


def test_the_alert_table_shows_what_an_observer_scans_for() -> None:
    """Item 6: trigger HJD and UTC, star, field/chip, RA/Dec, sites, Δχ², p_event, label, the
    novelty flag and second opinion ("-" without them), id; the wall-clock publication time
    only in --json."""
    from consumer.cli import ALERT_TABLE_HEADER, alert_row, alert_summary
    from tests.consumer.edge.test_alert import make_alert

    alert = make_alert()
    header, row = ALERT_TABLE_HEADER.split(), alert_row(alert).split()
    assert header == [
        "trigger", "HJD", "trigger", "UTC", "star", "field", "chip", "RA", "Dec", "sites",
        "Δχ²", "p_event", "label", "peak", "HJD", "±", "1", "sd", "I_pk", "novel", "2nd", "alert",
        "id",
    ]  # fmt: skip
    assert row[0] == f"{alert.trigger_hjd:.5f}"
    assert row[3:] == [
        "123456789", "BLG02", "1", "17:54:00.0", "-29:54:00", "CTIO+SSO", "812", "0.930",
        "YES", "-", "-", "-", "-", alert.alert_id,
    ]  # fmt: skip
    assert len(ALERT_TABLE_HEADER) <= len(alert_row(alert))  # the columns line up
    summary = alert_summary(alert)
    assert (summary["novelty"], summary["second_opinion"], summary["agreement"]) == (None,) * 3
    assert summary["published_at"] == "2026-05-01T03:04:05.678000+00:00"
    assert summary["trigger_utc"].startswith(row[1] + "T" + row[2])
    # With the event model (alert schema 1.1): the predicted peak, its 1 sd and I at the peak.
    from dataclasses import replace

    from tests.consumer.edge.test_event_model import make_model

    fitted = replace(alert, event_model=make_model())
    assert alert_row(fitted).split()[12:16] == ["2460134.50", "±", "0.8", "16.1"]
    assert alert_summary(fitted)["event_model"]["peak_hjd"] == 2_460_134.5


@pytest.mark.kafka
def test_json_stdout_stays_json_while_messages_fail_to_decode(
    topics_factory: Callable[..., Settings],
) -> None:
    """`alerts tail --json` stdout parses line by line while errors happen: they go to stderr."""
    from typing import Any, cast

    from confluent_kafka import Producer

    from consumer.edge.alert import encode_alert
    from tests.consumer.edge.test_alert import make_alert

    settings = topics_factory(partitions=1)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for n, garbage in ((25, False), (0, True), (30, False)):
        if garbage:
            producer.produce(settings.topics.alerts, b"\xc3\x01 not an alert", partition=0)
        else:
            value, headers = encode_alert(make_alert(n))
            producer.produce(settings.topics.alerts, value, partition=0, headers=cast(Any, headers))
    assert producer.flush(10) == 0
    env = {
        "LENSNET_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LENSNET_TOPICS__ALERTS": settings.topics.alerts,
    }
    result = lensnet("alerts", "tail", "--from", "earliest", "--until-end", "--json", env=env)
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert [r["alert_id"] for r in records] == [make_alert(25).alert_id, make_alert(30).alert_id]  # type: ignore[index]
    assert f"lensnet: skipped {settings.topics.alerts}[0]@1: " in result.stderr


def test_posterior_without_zuko_says_what_to_install(tmp_path: Path) -> None:
    """`lensnet posterior` where zuko is missing (an install older than alert schema 1.3): one
    line naming the package, exit 2, no traceback."""
    hide = tmp_path / "hide"
    (hide / "zuko").mkdir(parents=True)
    (hide / "zuko" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'zuko'\", name='zuko')\n"
    )
    pythonpath = os.pathsep.join([str(hide), str(REPO), os.environ.get("PYTHONPATH", "")])
    result = lensnet("posterior", str(tmp_path), env={"PYTHONPATH": pythonpath})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "pip install zuko" in line
