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
from dataclasses import dataclass
from types import FrameType
from typing import Any

#: Exit code after a second signal (the shell's convention for SIGINT).
SECOND_SIGNAL_EXIT = 130


@dataclass
class Received:
    """The first stopping signal's name, once one arrived (None before)."""

    signal: str | None = None


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[Received]:
    """Within the block, SIGTERM and SIGINT call ``stop`` once, then exit the process at once.

    The handler only records the signal and calls ``stop``: it must not log. It runs in the
    main thread between two bytecodes, possibly inside the logger's own write, whose lock it
    would then wait for forever (seen in CI: a daemon that never exited). The caller logs
    :attr:`Received.signal` once its loop has stopped.

    Only the main thread may install handlers: elsewhere (tests, an embedding application)
    the block runs without them. The previous handlers come back when it ends.
    """
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        if received.signal is not None:
            os._exit(SECOND_SIGNAL_EXIT)
        received.signal = signal.Signals(signum).name
        stop()

    previous = {number: signal.signal(number, handle) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
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
