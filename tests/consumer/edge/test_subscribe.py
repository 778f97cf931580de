"""The follow-up client on alerts the daemon really published (real local broker)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from consumer.edge.alert import Alert
from consumer.edge.plot import file_name, plot_alert
from consumer.edge.subscribe import AlertFilter, AlertSubscriber
from consumer.seasons.replay import ReplayOptions, replay
from consumer.settings import Settings
from model.simulate import SimulationConfig, write_season
from tests.consumer.test_daemon import Running, caught_up, daemon_settings, ends, read_alerts

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def published(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_settings: Any,
    admin: Any,
) -> tuple[Settings, list[Alert]]:
    """A season run through the daemon; its settings and every alert it published."""
    import time
    import uuid

    from consumer.edge.kafka import consumer_config, make_consumer
    from consumer.edge.topics import ensure_topics, required_topics
    from consumer.settings import ConsumerSettings, ProducerSettings, TopicSettings

    work = tmp_path_factory.mktemp("subscribe")
    write_season(SimulationConfig(n_stars=60, seed=5), work / "season", progress=False)
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka=kafka_settings,
        topics=TopicSettings(
            photometry_prefix=f"sub-{suffix}.photometry.",
            alerts=f"sub-{suffix}.alerts",
            dead_letter=f"sub-{suffix}.deadletter",
            events=f"sub-{suffix}.events",
            partitions=2,
            alert_partitions=2,
        ),
        consumer=ConsumerSettings(group_id=f"sub-{suffix}", session_timeout_ms=6000),
        producer=ProducerSettings(linger_ms=5),
    )
    ensure_topics(admin, required_topics(settings.topics))
    replay(settings, work / "season", ReplayOptions(progress=False))

    def reader() -> Consumer:
        config = consumer_config(kafka_settings, settings.consumer, group_id=f"r-{suffix}")
        return make_consumer(config)

    probe = reader()
    end = ends(settings, probe)
    running = Running(daemon_settings(settings, work / "state"))
    try:
        deadline = time.monotonic() + 240
        while not caught_up([running], end):
            assert time.monotonic() < deadline, "daemon did not drain the season"
            time.sleep(0.2)
    finally:
        running.stop()
        probe.close()
    raw = reader()
    alerts = read_alerts(settings, raw)
    raw.close()
    assert len(alerts) >= 5, "too few alerts to test the client"
    return settings, alerts


def test_reads_every_alert_from_earliest(published: tuple[Settings, list[Alert]]) -> None:
    settings, alerts = published
    with AlertSubscriber(
        settings.kafka, settings.topics.alerts, start="earliest", stop_at_end=True
    ) as subscriber:
        read = list(subscriber)
    assert sorted(a.alert_id for a in read) == sorted(a.alert_id for a in alerts)
    assert subscriber.skipped == []
    assert all(len(a.light_curve) > 0 for a in read)


def test_filter_by_score_returns_exactly_the_expected_subset(
    published: tuple[Settings, list[Alert]],
) -> None:
    settings, alerts = published
    scores = sorted(a.lensnet.p_event for a in alerts)
    threshold = scores[len(scores) // 2]  # about half pass
    wanted = AlertFilter(min_score=threshold)
    with AlertSubscriber(
        settings.kafka, settings.topics.alerts, start="earliest", stop_at_end=True
    ) as subscriber:
        kept = {a.alert_id for a in subscriber if wanted(a)}
    assert kept == {a.alert_id for a in alerts if a.lensnet.p_event >= threshold}
    assert 0 < len(kept) < len(alerts) or len(set(scores)) == 1
    labelled = AlertFilter(label="yes", sites=("CTIO",))
    assert [labelled(a) for a in alerts] == [
        a.lensnet.label == "YES" and "CTIO" in a.alertfinder.sites for a in alerts
    ]


def test_restarted_subscriber_resumes_after_the_last_acknowledged_alert(
    published: tuple[Settings, list[Alert]],
) -> None:
    settings, alerts = published
    group = f"follow-up-{os.getpid()}-{len(alerts)}"
    acked: list[str] = []
    with AlertSubscriber(
        settings.kafka,
        settings.topics.alerts,
        group_id=group,
        start="earliest",
        stop_at_end=True,
    ) as first:
        for alert in first:
            if len(acked) == len(alerts) // 2:
                break  # "crash" while handling this alert: never acknowledged
            first.ack(alert)
            acked.append(alert.alert_id)
        lag = first.lag()
    # Offsets behind: the unacknowledged alerts plus the transaction markers among them.
    assert len(alerts) - len(acked) <= sum(lag.values()) <= 2 * (len(alerts) - len(acked)) + 2
    with AlertSubscriber(
        settings.kafka,
        settings.topics.alerts,
        group_id=group,
        start="earliest",
        stop_at_end=True,
    ) as second:
        rest = [a.alert_id for a in second]
    assert sorted(rest) == sorted({a.alert_id for a in alerts} - set(acked))


def test_start_at_a_time_skips_older_alerts(published: tuple[Settings, list[Alert]]) -> None:
    settings, _ = published
    with AlertSubscriber(
        settings.kafka, settings.topics.alerts, start=datetime.now(UTC), stop_at_end=True
    ) as subscriber:
        assert list(subscriber) == []


def test_plot_writes_a_png_per_alert(
    published: tuple[Settings, list[Alert]], tmp_path: Path
) -> None:
    _, alerts = published
    for alert in alerts:
        path = plot_alert(alert, tmp_path / file_name(alert))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 20_000  # a drawn light curve, not an empty frame
    assert len(list(tmp_path.glob("*.png"))) == len(alerts)


def test_cli_plot_by_id_and_stats(
    published: tuple[Settings, list[Alert]],
    tmp_path: Path,
    lensnet_env: Callable[..., dict[str, str]],
) -> None:
    settings, alerts = published
    env = lensnet_env(settings)
    target = alerts[0]
    plotted = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer.cli",
            "alerts",
            "plot",
            str(tmp_path),
            "--id",
            target.alert_id,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plotted.returncode == 0, plotted.stderr
    assert [p.name for p in tmp_path.glob("*.png")] == [file_name(target)]
    stats = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "alerts", "stats"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stats.returncode == 0, stats.stderr
    assert f"{len(alerts)} alerts in {settings.topics.alerts}" in stats.stdout
    assert "by class:" in stats.stdout


@pytest.fixture
def lensnet_env() -> Callable[..., dict[str, str]]:
    def build(settings: Settings) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
        env.update(
            {
                "LENSNET_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "LENSNET_TOPICS__ALERTS": settings.topics.alerts,
                "LENSNET_LOG__FORMAT": "json",
            }
        )
        return env

    return build
