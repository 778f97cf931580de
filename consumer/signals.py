"""Stopping a long-running process: signals, and a deadline on the drain that follows.

SIGTERM or SIGINT asks the process to finish what it is doing and exit cleanly: the first
calls ``stop``; a second exits at once with code 130. The shutdown that follows is bounded:
past its deadline the process exits with code 1, whatever it is blocked on.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: Exit code after a second signal (the shell's convention for SIGINT).
SECOND_SIGNAL_EXIT = 130


@contextmanager
def stop_on_signals(stop: Callable[[], None], log: Any) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT call ``stop`` once, then exit the process at once.

    Only the main thread may install handlers: elsewhere (tests, an embedding application)
    the block runs without them. The previous handlers come back when it ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = 0

    def handle(signum: int, _frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        if received > 1:
            os._exit(SECOND_SIGNAL_EXIT)
        log.info("signal received, draining", signal=signal.Signals(signum).name)
        stop()

    previous = {number: signal.signal(number, handle) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def exit_after(seconds: float, log: Any, message: str) -> Iterator[None]:
    """Exit the process with code 1, logging ``message``, if the block outlasts ``seconds``."""

    def overrun() -> None:
        log.error(message)
        os._exit(1)

    timer = threading.Timer(seconds, overrun)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
