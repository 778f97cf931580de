"""Log routing: the daemon's JSON log on stdout, everyone else quiet on stderr (newcomer item 9)."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from consumer.logs import LIBRDKAFKA_LOGGER, configure_logging
from consumer.settings import LogSettings


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_lensnet", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def test_daemon_log_is_one_json_object_per_line_libraries_included(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LogSettings(format="auto"))
    structlog.get_logger("lensnet.test").info("batch", alerts=2)
    logging.getLogger(LIBRDKAFKA_LOGGER).error("FAIL [rdkafka#consumer-1]: broker down")
    out = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in out]
    assert [r["event"] for r in records] == ["batch", "FAIL [rdkafka#consumer-1]: broker down"]
    assert records[1]["logger"] == LIBRDKAFKA_LOGGER


def test_transient_coordinator_states_and_font_cache_chatter_are_not_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LogSettings(format="json", level="INFO"))
    logging.getLogger(LIBRDKAFKA_LOGGER).warning(
        "GETPID [rdkafka#producer-2] [thrd:main]: Failed to acquire transactional PID from "
        "broker TxnCoordinator/1: Broker: Coordinator load in progress: retrying"
    )
    logging.getLogger("matplotlib.font_manager").info("generated new fontManager")
    assert capsys.readouterr().out == ""


def test_other_commands_log_warnings_only_to_stderr_as_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sys

    configure_logging(LogSettings(), stream=sys.stderr, quiet=True)
    log = structlog.get_logger("lensnet.test")
    log.info("replay.start")
    log.warning("skipped a message", offset=3)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "replay.start" not in captured.err
    assert "skipped a message" in captured.err
    assert not captured.err.lstrip().startswith("{")  # text, not JSON, unless asked


def test_json_when_asked_and_level_when_set(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    configure_logging(LogSettings(format="json", level="INFO"), stream=sys.stderr, quiet=True)
    structlog.get_logger("lensnet.test").info("replay.start")
    assert json.loads(capsys.readouterr().err)["event"] == "replay.start"
