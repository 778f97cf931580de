"""structlog configuration, done once at the entry point.

Two audiences. The daemon (``lensnet run``) logs *is* its output: structlog lines on stdout,
JSON when stdout is not a terminal (containers, CI, files), a coloured console renderer on one.
Every other command's output is its result (a table, JSON lines, a summary), so its log goes to
stderr, human-readable unless JSON is asked for (``LENSNET_LOG__FORMAT=json``), and quiet by
default: warnings and errors only unless ``LENSNET_LOG__LEVEL`` says otherwise.

Libraries that log through stdlib ``logging`` (librdkafka via :data:`LIBRDKAFKA_LOGGER`,
matplotlib, numba) are rendered by the same structlog renderer, so a JSON log stays one JSON
object per line; their INFO chatter (matplotlib's font cache) is dropped below WARNING, and
librdkafka's reports of transient states that it retries by itself are demoted to DEBUG.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import structlog

from consumer.settings import LogSettings

#: stdlib logger every librdkafka client logs through (see :mod:`consumer.edge.kafka`).
LIBRDKAFKA_LOGGER = "librdkafka"

#: librdkafka warnings about states it retries by itself (a transaction coordinator still
#: loading after a broker start, a coordinator moving): normal during start-up, not news.
TRANSIENT_MARKERS = (
    "Coordinator load in progress",
    "Coordinator not available",
    "Not coordinator",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_COORDINATOR",
)


def configure_logging(
    settings: LogSettings, *, stream: TextIO | None = None, quiet: bool = False
) -> None:
    """Route structlog and the stdlib ``logging`` of libraries to ``stream`` (stdout).

    ``quiet``: a command whose output is not its log (anything but the daemon): the level is
    at least WARNING unless ``settings.level`` was set explicitly, and ``auto`` renders human
    lines (colours on a terminal only) rather than JSON.
    """
    stream = stream if stream is not None else sys.stdout
    tty = stream.isatty()
    auto = settings.format == "auto"
    use_console = (tty or quiet) if auto else settings.format == "console"
    renderer: structlog.typing.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=tty)
    else:
        renderer = structlog.processors.JSONRenderer()
    name = settings.level
    if quiet and "level" not in settings.model_fields_set:
        name = "WARNING"
    level = logging.getLevelNamesMapping()[name]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_lensnet", False)]:
        root.removeHandler(old)
    handler._lensnet = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # Libraries speak at WARNING and above (matplotlib's font-cache INFO is not for users).
    root.setLevel(max(level, logging.WARNING))
    librdkafka = logging.getLogger(LIBRDKAFKA_LOGGER)
    librdkafka.setLevel(level)
    for kind in (RepeatFilter, TransientFilter):
        if not any(isinstance(f, kind) for f in librdkafka.filters):
            librdkafka.addFilter(kind())


class TransientFilter(logging.Filter):
    """Demotes librdkafka's reports of transient coordinator states to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and any(
            marker in record.getMessage() for marker in TRANSIENT_MARKERS
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


class RepeatFilter(logging.Filter):
    """Drops a log line identical to one already emitted within ``window_s`` seconds.

    librdkafka repeats connection failures every reconnect back-off (~50-100 ms) while a broker
    is down; one line per 30 s says the same.
    """

    def __init__(self, window_s: float = 30.0) -> None:
        super().__init__()
        self._window_s = window_s
        self._last_seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage().split("]: ", 1)[-1]  # drop librdkafka's thread prefix
        now = time.monotonic()
        last = self._last_seen.get(message)
        if last is not None and now - last < self._window_s:
            return False
        if len(self._last_seen) > 1000:
            self._last_seen.clear()
        self._last_seen[message] = now
        return True
