"""structlog configuration, done once at the entry point.

JSON lines to stdout when stdout is not a terminal (containers, CI, files); a coloured console
renderer on a terminal. Stages bind context (topic, partition, offset, star) and emit one
canonical line per unit of work.
"""

from __future__ import annotations

import logging
import sys
import time

import structlog

from consumer.settings import LogSettings


def configure_logging(settings: LogSettings) -> None:
    """Route structlog (and the stdlib ``logging`` of libraries) to stdout."""
    renderer: structlog.typing.Processor
    use_console = settings.format == "console" or (
        settings.format == "auto" and sys.stdout.isatty()
    )
    if use_console:
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    level = logging.getLevelNamesMapping()[settings.level]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stdout, format="%(name)s %(levelname)s %(message)s")
    librdkafka = logging.getLogger(LIBRDKAFKA_LOGGER)
    if not any(isinstance(f, RepeatFilter) for f in librdkafka.filters):
        librdkafka.addFilter(RepeatFilter())


#: stdlib logger every librdkafka client logs through (see :mod:`consumer.edge.kafka`).
LIBRDKAFKA_LOGGER = "librdkafka"


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
