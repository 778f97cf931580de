"""Liveness, readiness and Prometheus metrics of the daemon, served over HTTP.

A small stdlib HTTP server on a daemon thread answers the Kubernetes probes and the Prometheus
scraper; the main loop only calls :meth:`Health.beat`, :meth:`Health.set_ready` and the metric
objects of :class:`Metrics`, all cheap and thread-safe.

Endpoints (``GET``; ``HEAD`` gives the same status and headers without a body):

``/healthz``
    200 ``ok`` when the main loop made progress (called :meth:`Health.beat`) within
    ``max_silence_s`` seconds, or has not yet beaten but started less than ``max_silence_s``
    ago (start-up grace). Otherwise 503 with the reason. A failing liveness probe means the
    loop is stuck and the pod should be restarted.
``/readyz``
    200 ``ok`` when partitions are assigned and their state restored (the loop says so with
    :meth:`Health.set_ready`); 503 with the reason otherwise, e.g. while rebalancing or
    replaying. Not ready means "do not count on alerts from this pod yet", not "restart it".
``/metrics``
    The Prometheus text exposition of :class:`Metrics`.

Any other path is 404; any other method is 405.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from consumer.exceptions import ConfigError

#: LensNet inference on one batch of candidates: 1 ms (a handful on GPU) to 30 s (CPU, many).
LENSNET_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Observation timestamp to alert: 10 ms when keeping up, up to 10 min when catching up.
ALERT_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: One consume -> publish -> commit batch.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Restoring a partition's state and replaying its photometry: seconds to an hour.
RESTORE_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

_CONTENT_TYPE_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class BatchClock:
    """When a batch started: wall clock and this process's CPU time (seconds)."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)


class Metrics:
    """The daemon's Prometheus metrics, registered in a registry of their own.

    Each instance owns a fresh :class:`~prometheus_client.CollectorRegistry`, so two daemons
    (or two tests) in one process never collide and nothing lands in the global registry.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry

        # consume and decode
        self.observations = Counter(
            "lensnet_observations_total",
            "Observations decoded from photometry messages (count).",
            ("site",),
            registry=registry,
        )
        self.observations_rejected = Counter(
            "lensnet_observations_rejected_total",
            "Observations dropped by cleaning or validation, by reason (count).",
            ("reason",),
            registry=registry,
        )
        self.messages = Counter(
            "lensnet_messages_total",
            "Kafka messages consumed, by topic (count).",
            ("topic",),
            registry=registry,
        )
        self.dead_letters = Counter(
            "lensnet_dead_letters_total",
            "Messages sent to the dead-letter topic, by reason (count).",
            ("reason",),
            registry=registry,
        )
        self.batches = Counter(
            "lensnet_batches_total",
            "Consume batches processed end to end (count).",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "lensnet_batch_seconds",
            "Wall time to process one whole consume batch (seconds).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )

        # state
        self.stars = Gauge(
            "lensnet_stars",
            "Stars held in state, by partition (count).",
            ("partition",),
            registry=registry,
        )
        self.state_bytes = Gauge(
            "lensnet_state_bytes",
            "Memory held by the light-curve state, by partition (bytes).",
            ("partition",),
            registry=registry,
        )
        self.lag = Gauge(
            "lensnet_consumer_lag",
            "Consumer lag: high watermark minus position, by topic and partition (messages).",
            ("topic", "partition"),
            registry=registry,
        )

        # trigger, vet, classify, publish
        self.star_updates = Counter(
            "lensnet_star_updates_total",
            "Stars evaluated by the rising test (count).",
            registry=registry,
        )
        self.rising = Counter(
            "lensnet_rising_total",
            "Stars passing the rising test (count).",
            registry=registry,
        )
        self.triggers = Counter(
            "lensnet_triggers_total",
            "Stars passing the full AlertFinder, of those fitted (count): a star already "
            "alerted or waiting for its rescore is not fitted, unless vetting needs it.",
            registry=registry,
        )
        self.vetting_drops = Counter(
            "lensnet_vetting_dropped_total",
            "Triggered stars dropped by vetting, by reason (count).",
            ("reason",),
            registry=registry,
        )
        self.candidates = Counter(
            "lensnet_candidates_total",
            "Candidates sent to LensNet for classification (count).",
            registry=registry,
        )
        self.deferred = Counter(
            "lensnet_deferred_total",
            "Candidates at or above the alert threshold held back because a point-lens fit "
            "peaks below model.min_peak_magnification (count).",
            registry=registry,
        )
        self.alerts = Counter(
            "lensnet_alerts_total",
            "Alerts published, by LensNet label (count).",
            ("label",),
            registry=registry,
        )
        self.lensnet_seconds = Histogram(
            "lensnet_lensnet_batch_seconds",
            "Wall time of one LensNet inference batch (seconds).",
            buckets=LENSNET_BUCKETS,
            registry=registry,
        )
        self.alert_latency = Histogram(
            "lensnet_observation_to_alert_seconds",
            "Wall time from the Kafka timestamp (producer create time) of the last message that "
            "changed the star before the evaluation that alerted, to the alert's production "
            "(seconds).",
            buckets=ALERT_LATENCY_BUCKETS,
            registry=registry,
        )

        # commit and checkpoint
        self.transactions = Counter(
            "lensnet_transactions_total",
            "Kafka transactions, by outcome: committed or aborted (count).",
            ("outcome",),
            registry=registry,
        )
        self.restore_seconds = Histogram(
            "lensnet_restore_seconds",
            "Wall time to restore one partition's state and replay its photometry (seconds).",
            buckets=RESTORE_BUCKETS,
            registry=registry,
        )
        self.checkpoints = Counter(
            "lensnet_checkpoints_total",
            "State checkpoints written (count).",
            registry=registry,
        )
        self.last_progress = Gauge(
            "lensnet_last_progress_timestamp_seconds",
            "Unix time of the main loop's last progress (seconds since the epoch).",
            registry=registry,
        )
        self.model = Gauge(
            "lensnet_model_info",
            "The LensNet artifact scoring candidates: 1 for its content version (label).",
            ("version",),
            registry=registry,
        )

    def batch_done(self, clock: BatchClock) -> dict[str, float]:
        """Count a batch started at ``clock`` and observe its wall time; its log fields:
        ``ms`` (wall), ``cpu_ms`` (this process's CPU during it, every thread: librdkafka's
        included) and ``process_cpu_s`` (the process's CPU so far, for rates per CPU second)."""
        wall, cpu = time.perf_counter() - clock.wall, time.process_time()
        self.batches.inc()
        self.batch_seconds.observe(wall)
        return {
            "ms": round(1000 * wall, 1),
            "cpu_ms": round(1000 * (cpu - clock.cpu), 1),
            "process_cpu_s": round(cpu, 3),
        }

    def record_lag(self, lags: Mapping[tuple[str, int], int | None]) -> None:
        """Set :attr:`lag` of every (topic, partition) whose lag is known."""
        for (topic, partition), lag in lags.items():
            if lag is not None:
                self.lag.labels(topic=topic, partition=str(partition)).set(lag)

    def render(self) -> tuple[bytes, str]:
        """Prometheus text exposition of every metric.

        Returns
        -------
        body, content_type
            The exposition and the ``Content-Type`` to serve it with.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Health:
    """Liveness and readiness of the main loop, safe to share between threads.

    Parameters
    ----------
    clock
        Monotonic clock in seconds; tests pass a fake one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_beat: float | None = None
        self._ready = False
        self._ready_reason = "starting: no partitions assigned yet"

    def beat(self) -> None:
        """Record that the main loop made progress now."""
        now = self._clock()
        with self._lock:
            self._last_beat = now

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Mark the daemon ready (partitions assigned and restored) or not, saying why."""
        with self._lock:
            self._ready = ready
            self._ready_reason = reason

    def healthy(self, max_silence_s: float) -> tuple[bool, str]:
        """Whether the main loop beat within the last ``max_silence_s`` seconds.

        Before the first beat the loop gets ``max_silence_s`` seconds of grace from start-up.

        Returns
        -------
        healthy, reason
            ``(True, "ok")``, or ``False`` with a one-line reason.
        """
        now = self._clock()
        with self._lock:
            last_beat = self._last_beat
        if last_beat is None:
            since_start = now - self._started
            if since_start > max_silence_s:
                return False, (
                    f"no main-loop progress since start {since_start:.1f} s ago "
                    f"(max_silence_s={max_silence_s:g})"
                )
            return True, "ok"
        silence = now - last_beat
        if silence > max_silence_s:
            return False, (
                f"no main-loop progress for {silence:.1f} s (max_silence_s={max_silence_s:g})"
            )
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Whether partitions are assigned and restored.

        Returns
        -------
        ready, reason
            ``(True, "ok")``, or ``False`` with the reason last given to :meth:`set_ready`.
        """
        with self._lock:
            if self._ready:
                return True, "ok"
            return False, self._ready_reason or "not ready"


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` over HTTP on a daemon thread.

    Parameters
    ----------
    host, port
        Where to listen; port 0 picks a free port (see :attr:`port`).
    health
        Status the probes report.
    metrics
        Metrics ``/metrics`` renders.
    max_silence_s
        Longest main-loop silence ``/healthz`` tolerates (seconds).
    """

    def __init__(
        self, host: str, port: int, health: Health, metrics: Metrics, max_silence_s: float
    ) -> None:
        self._host = host
        self._requested_port = port
        self._health = health
        self._metrics = metrics
        self._max_silence_s = max_silence_s
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve on a daemon thread.

        Raises
        ------
        ConfigError
            The address cannot be bound (port in use, unknown host, no permission).
        """
        if self._server is not None:
            raise RuntimeError("health server already started")
        try:
            server = _HTTPServer((self._host, self._requested_port), _Handler, self._respond)
        except OSError as error:
            raise ConfigError(
                f"cannot bind the health server to {self._host}:{self._requested_port}: "
                f"{error.strerror or error}"
            ) from error
        self._server = server
        # A short poll interval keeps stop() quick; the idle wake-ups cost nothing measurable.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="lensnet-health",
            daemon=True,
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The bound port (the one picked when constructed with port 0)."""
        if self._server is None:
            raise RuntimeError("health server not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread. Safe to call more than once."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _respond(self, path: str) -> tuple[HTTPStatus, bytes, str]:
        """Status, body and content type for a ``GET`` of ``path``."""
        if path == "/healthz":
            ok, reason = self._health.healthy(self._max_silence_s)
        elif path == "/readyz":
            ok, reason = self._health.ready()
        elif path == "/metrics":
            body, content_type = self._metrics.render()
            return HTTPStatus.OK, body, content_type
        else:
            return HTTPStatus.NOT_FOUND, b"not found\n", _CONTENT_TYPE_TEXT
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        return status, f"{reason}\n".encode(), _CONTENT_TYPE_TEXT


#: What the HTTP server asks for each ``GET``: path -> (status, body, content type).
_Responder = Callable[[str], tuple[HTTPStatus, bytes, str]]


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the responder its handlers call."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        respond: _Responder,
    ) -> None:
        self.respond = respond
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        status, body, content_type = self.server.respond(urlsplit(self.path).path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _method_not_allowed(self) -> None:
        body = b"method not allowed\n"
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", _CONTENT_TYPE_TEXT)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # http.server dispatches on do_<METHOD>; without one it would answer 501.
    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _method_not_allowed  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        # Probes and scrapes every few seconds would drown the structured logs.
        pass
