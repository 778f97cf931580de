"""Reaching the cluster: one bounded check that says where it tried, how, and why it failed.

librdkafka never gives up on a broker by itself: a client of a dead address retries forever
and an admin call only times out with ``Local: Broker transport failure``. Every command that
talks to Kafka first calls :func:`reach`, which asks for the cluster's metadata in short slices
and listens to librdkafka's error events meanwhile, so that

- a refused connection, an unknown host, a failed TLS handshake or SASL login fails at once
  (librdkafka has tried every bootstrap server, or the login was refused);
- anything else (a silently dropped connection) fails after ``kafka.connect_timeout_s``;
- the error names the address and the setting it came from, the security protocol and SASL
  mechanism when they are not PLAINTEXT, and librdkafka's own account of the failure.

The probe's client logs nowhere (what it saw is in the error), so a failing command prints one
line on stderr and nothing on stdout.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from consumer.exceptions import KafkaClientError
from consumer.settings import KafkaSettings, env_name

#: librdkafka errors after which waiting longer does not help.
_DECISIVE = {
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._AUTHENTICATION,
    KafkaError._RESOLVE,
    KafkaError._SSL,
    KafkaError.SASL_AUTHENTICATION_FAILED,
}
#: "127.0.0.1:1/bootstrap: " or "sasl_ssl://host:9093/1: " before librdkafka's account, and
#: " (after 0ms in state CONNECT)" after it.
_PREFIX = re.compile(r"^(?:\w+://)?\S+/(?:bootstrap|\d+): ")
_SUFFIX = re.compile(r" \(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)$")
#: librdkafka's advice after a failed certificate check, which names its own property.
_CA_ADVICE = re.compile(r", verify that ssl\.ca\.location is correctly configured.*$")
#: How long one metadata request may take before the probe looks at the error events again.
_SLICE_S = 0.25

_silent = logging.getLogger("lensnet.reach.librdkafka")
_silent.addHandler(logging.NullHandler())
_silent.propagate = False


class BrokerUnreachableError(KafkaClientError):
    """No broker of the cluster answered (or accepted our login); retriable."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message, code=code, retriable=True)


def describe(kafka: KafkaSettings) -> str:
    """Where and how a client connects, naming the settings: for error messages."""
    text = f"{kafka.bootstrap_servers} ({env_name(('kafka', 'bootstrap_servers'))})"
    if kafka.security_protocol != "PLAINTEXT":
        text += f" over {kafka.security_protocol}"
        if kafka.sasl_mechanism is not None:
            text += f" with SASL {kafka.sasl_mechanism}"
            if kafka.sasl_username:
                text += f" as {kafka.sasl_username!r}"
        text += f" ({env_name(('kafka', 'security_protocol'))}"
        text += f", {env_name(('kafka', 'sasl_mechanism'))})" if kafka.sasl_mechanism else ")"
    return text


def account(error: KafkaError) -> str:
    """librdkafka's description of a failure without the broker prefix and timing suffix."""
    text = _CA_ADVICE.sub("", _SUFFIX.sub("", _PREFIX.sub("", str(error.str()))))
    if "Request not valid in current SASL state" in text:
        text += " (the listener does not speak SASL: is it PLAINTEXT or SSL?)"
    return text


def _culprit(kafka: KafkaSettings, detail: str) -> str:
    """The settings to look at when a login or certificate check failed (else nothing)."""
    if "invalid credentials" in detail or "Authentication failed" in detail:
        return (
            f" (check {env_name(('kafka', 'sasl_username'))} and "
            f"{env_name(('kafka', 'sasl_password'))})"
        )
    if "certificate verify failed" in detail:
        where = kafka.ssl_ca_location or "the system's CA certificates"
        return (
            f" (check {env_name(('kafka', 'ssl_ca_location'))}: {where} holds no CA that "
            "signed the broker's certificate)"
        )
    return ""


def reach(
    kafka: KafkaSettings,
    timeout_s: float | None = None,
    *,
    stop: threading.Event | None = None,
) -> Any:
    """The cluster's metadata, or :class:`BrokerUnreachableError` (see the module docstring).

    ``timeout_s`` defaults to ``kafka.connect_timeout_s``; ``stop`` ends the wait early (a
    signal during start-up) with the same error.
    """
    timeout_s = kafka.connect_timeout_s if timeout_s is None else timeout_s
    failures: list[KafkaError] = []
    config = kafka.client_config()
    config.update({"error_cb": failures.append, "logger": _silent})
    try:
        admin = AdminClient(config)
    except KafkaException as error:
        raise KafkaClientError.wrap(f"cannot connect to Kafka at {describe(kafka)}", error) from (
            error
        )
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            return admin.list_topics(timeout=max(0.05, min(_SLICE_S, remaining)))
        except KafkaException as error:
            last = error.args[0] if error.args and isinstance(error.args[0], KafkaError) else None
        admin.poll(0)  # serves error_cb
        decisive = any(failure.code() in _DECISIVE for failure in failures)
        stopped = stop is not None and stop.is_set()
        if decisive or stopped or time.monotonic() >= deadline:
            raise _unreachable(kafka, failures, last, timeout_s, decisive or stopped)


def _unreachable(
    kafka: KafkaSettings,
    failures: list[KafkaError],
    last: KafkaError | None,
    timeout_s: float,
    early: bool,
) -> BrokerUnreachableError:
    # The most specific account: a broker's own failure rather than "1/1 brokers are down".
    specific = [f for f in failures if f.code() != KafkaError._ALL_BROKERS_DOWN]
    chosen = specific[-1] if specific else (failures[-1] if failures else last)
    detail = account(chosen) if chosen is not None else "no answer"
    detail += _culprit(kafka, detail)
    if not early:
        detail += f" (no answer within {timeout_s:g} s, {env_name(('kafka', 'connect_timeout_s'))})"
    code = chosen.code() if chosen is not None else None
    return BrokerUnreachableError(f"cannot reach Kafka at {describe(kafka)}: {detail}", code=code)
