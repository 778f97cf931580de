"""The local broker script itself (its start/stop path runs in the session fixture)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import KAFKA_SH, REGISTRY_SH


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


def fake_mvn(folder: Path, status: int) -> dict[str, str]:
    """PATH with an `mvn` that prints what Debian's Maven 3.8 prints in batch mode: colour
    codes, and an error when it fails."""
    import os

    folder.mkdir()
    script = folder / "mvn"
    script.write_text(
        "#!/bin/sh\nprintf '\\033[0m\\033[0m'\n"
        + (f"printf '\\033[1;31m[ERROR]\\033[m Could not resolve kafka\\n'; exit {status}\n")
    )
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def test_maven_is_quiet_and_colourless_when_it_works(tmp_path: Path) -> None:
    """Newcomer item 9: no Maven colour escapes in CI logs."""
    env = fake_mvn(tmp_path / "bin", 0)
    env["LOCAL_KAFKA_LIBS"] = str(tmp_path / "libs")
    result = subprocess.run(
        [str(KAFKA_SH), "fetch"], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (
        result.stderr
        == f"kafka.sh: resolving Apache Kafka jars from Maven Central into {tmp_path / 'libs'}\n"
    )


def test_maven_failure_is_shown_without_colour_codes(tmp_path: Path) -> None:
    env = fake_mvn(tmp_path / "bin", 1)
    env["LOCAL_KAFKA_LIBS"] = str(tmp_path / "libs")
    result = subprocess.run(
        [str(KAFKA_SH), "fetch"], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 1
    assert "\x1b" not in result.stderr
    assert "[ERROR] Could not resolve kafka" in result.stderr
    assert "maven could not resolve org.apache.kafka:kafka_2.13" in result.stderr


def test_registry_script_usage_and_status_of_nothing(tmp_path: Path) -> None:
    usage = subprocess.run([str(REGISTRY_SH)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0
    assert "start [DIR]" in usage.stdout
    status = subprocess.run(
        [str(REGISTRY_SH), "status", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert status.returncode == 1
    assert "no registry running" in status.stderr


def test_cluster_and_security_options_are_checked(tmp_path: Path) -> None:
    cases = {
        ("start", "--brokers", "x"): "--brokers takes a number of brokers",
        ("start", "--security", "tls"): "--security takes plaintext or sasl_ssl, not 'tls'",
        ("kill", "--node", "2"): "holds a single broker: no node 2",
        ("restart", "--node", "first"): "--node takes a node number",
    }
    for arguments, message in cases.items():
        result = subprocess.run(
            [str(KAFKA_SH), *arguments, str(tmp_path)], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 1, arguments
        assert message in result.stderr, arguments
    usage = subprocess.run([str(KAFKA_SH)], capture_output=True, text=True, timeout=30).stdout
    assert "--brokers N" in usage
    assert "--security sasl_ssl" in usage
    assert "--node I" in usage
    assert "set -euo" not in usage
