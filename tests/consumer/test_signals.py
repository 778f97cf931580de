"""The stopping signals: recorded and passed on to ``stop``, never logged from the handler."""

from __future__ import annotations

import os
import signal
import threading

from consumer.signals import stop_on_signals


def test_a_signal_calls_stop_once_and_is_recorded_for_the_caller_to_log() -> None:
    stopped = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(stopped.set) as received:
        assert received.signal is None
        os.kill(os.getpid(), signal.SIGTERM)  # handled in this (the main) thread, at once
        assert stopped.wait(5.0)
        assert received.signal == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous  # the previous handler is back


def test_outside_the_main_thread_no_handler_is_installed() -> None:
    seen: list[object] = []

    def body() -> None:
        with stop_on_signals(lambda: None) as received:
            seen.append(signal.getsignal(signal.SIGTERM))
            seen.append(received.signal)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before, None]
