from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from consumer.exceptions import ConfigError
from consumer.health import BatchClock, Health, HealthServer, Metrics

MAX_SILENCE_S = 30.0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> Health:
    return Health(clock=clock)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(health: Health, metrics: Metrics) -> Iterator[HealthServer]:
    with HealthServer("127.0.0.1", 0, health, metrics, MAX_SILENCE_S) as running:
        yield running


def fetch(server: HealthServer, path: str, method: str = "GET") -> tuple[int, str, str]:
    """Status, body and content type of one request; error statuses are returned, not raised."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode(), error.headers["Content-Type"]


# Health state machine


def test_healthy_during_startup_grace_then_not_without_a_beat(
    health: Health, clock: FakeClock
) -> None:
    assert health.healthy(MAX_SILENCE_S) == (True, "ok")
    clock.advance(MAX_SILENCE_S + 1)
    ok, reason = health.healthy(MAX_SILENCE_S)
    assert not ok
    assert "since start" in reason


def test_beat_keeps_healthy_until_silence_exceeds_the_limit(
    health: Health, clock: FakeClock
) -> None:
    clock.advance(MAX_SILENCE_S + 1)
    health.beat()
    assert health.healthy(MAX_SILENCE_S) == (True, "ok")
    clock.advance(MAX_SILENCE_S)
    assert health.healthy(MAX_SILENCE_S) == (True, "ok")
    clock.advance(1)
    ok, reason = health.healthy(MAX_SILENCE_S)
    assert not ok
    assert "31.0 s" in reason
    health.beat()
    assert health.healthy(MAX_SILENCE_S) == (True, "ok")


def test_ready_toggles_and_keeps_the_reason(health: Health) -> None:
    ok, reason = health.ready()
    assert not ok
    assert reason
    health.set_ready(True)
    assert health.ready() == (True, "ok")
    health.set_ready(False, "rebalancing")
    assert health.ready() == (False, "rebalancing")
    health.set_ready(False)
    assert health.ready() == (False, "not ready")


# Metrics


def test_metrics_instances_have_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    assert first.registry is not second.registry
    first.alerts.labels(label="PSPL").inc(3)
    assert first.registry.get_sample_value("lensnet_alerts_total", {"label": "PSPL"}) == 3
    assert second.registry.get_sample_value("lensnet_alerts_total", {"label": "PSPL"}) is None


def test_render_is_prometheus_text(metrics: Metrics) -> None:
    metrics.batch_seconds.observe(0.2)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    assert b"# TYPE lensnet_batch_seconds histogram" in body
    assert b"# HELP lensnet_observation_to_alert_seconds" in body


def test_batch_done_counts_and_times_the_batch(metrics: Metrics) -> None:
    clock = BatchClock(wall=time.perf_counter() - 0.25, cpu=time.process_time() - 0.1)
    fields = metrics.batch_done(clock)
    assert set(fields) == {"ms", "cpu_ms", "process_cpu_s"}
    assert fields["ms"] >= 250.0
    assert fields["cpu_ms"] >= 100.0
    assert fields["process_cpu_s"] >= fields["cpu_ms"] / 1000
    assert metrics.registry.get_sample_value("lensnet_batches_total") == 1
    assert metrics.registry.get_sample_value("lensnet_batch_seconds_count") == 1


def test_record_lag_sets_known_lags_only(metrics: Metrics) -> None:
    metrics.record_lag({("p.KMTC", 0): 7, ("p.KMTS", 1): None})
    body = metrics.render()[0].decode()
    assert 'lensnet_consumer_lag{partition="0",topic="p.KMTC"} 7.0' in body
    assert 'topic="p.KMTS"' not in body


# HTTP server


def test_healthz_is_503_after_silence_and_200_after_a_beat(
    server: HealthServer, health: Health, clock: FakeClock
) -> None:
    clock.advance(MAX_SILENCE_S + 1)
    status, body, _ = fetch(server, "/healthz")
    assert status == 503
    assert "no main-loop progress" in body
    health.beat()
    assert fetch(server, "/healthz") == (200, "ok\n", "text/plain; charset=utf-8")


def test_readyz_follows_set_ready(server: HealthServer, health: Health) -> None:
    assert fetch(server, "/readyz")[0] == 503
    health.set_ready(True)
    assert fetch(server, "/readyz")[:2] == (200, "ok\n")
    health.set_ready(False, "restoring partition 3")
    assert fetch(server, "/readyz")[:2] == (503, "restoring partition 3\n")


def test_metrics_endpoint_serves_the_registry(server: HealthServer, metrics: Metrics) -> None:
    metrics.alerts.labels(label="binary").inc()
    status, body, content_type = fetch(server, "/metrics?debug=1")
    assert status == 200
    assert content_type == metrics.render()[1]
    assert 'lensnet_alerts_total{label="binary"} 1.0' in body


def test_head_has_status_without_body(server: HealthServer) -> None:
    assert fetch(server, "/healthz", method="HEAD")[:2] == (200, "")


def test_unknown_path_is_404(server: HealthServer) -> None:
    assert fetch(server, "/nope")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_are_405(server: HealthServer, method: str) -> None:
    assert fetch(server, "/healthz", method=method)[0] == 405


def test_stop_is_idempotent(health: Health, metrics: Metrics) -> None:
    server = HealthServer("127.0.0.1", 0, health, metrics, MAX_SILENCE_S)
    server.stop()  # never started
    server.start()
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port


def test_port_in_use_is_a_config_error(
    server: HealthServer, health: Health, metrics: Metrics
) -> None:
    second = HealthServer("127.0.0.1", server.port, health, metrics, MAX_SILENCE_S)
    with pytest.raises(ConfigError, match=f"127.0.0.1:{server.port}") as raised:
        second.start()
    assert isinstance(raised.value.__cause__, OSError)
    second.stop()
