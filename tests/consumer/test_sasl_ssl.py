"""Over TLS with SASL/SCRAM-SHA-512 and ACLs, for real (kafka.sh --security sasl_ssl).

The broker's users: admin creates the topics, replay writes photometry, lensnet runs the
daemon (which may read photometry, write alerts and event updates and read both back, write
dead letters, use its group and transactional id, and nothing else), reader reads the alerts.
Every password comes from a secrets folder (``lensnet --secrets-dir``), as in Kubernetes, and
must never reach a log line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import KafkaError, Producer

from consumer.edge.events import encode_update
from consumer.edge.kafka import make_admin, producer_config
from consumer.edge.keys import partitions_for
from consumer.edge.topics import ensure_topics, required_topics
from consumer.exceptions import KafkaClientError
from consumer.seasons.replay import ReplayOptions, replay
from consumer.settings import (
    ConsumerSettings,
    KafkaSettings,
    ProducerSettings,
    Settings,
    TopicSettings,
)
from consumer.state.alerted import TRIGGER_HEADER, PublishedAlerts
from consumer.state.events import PublishedEvents
from tests.conftest import SECURE_NAMES, SecureBroker
from tests.consumer.edge.test_event_model import make_update
from tests.consumer.test_daemon import season  # noqa: F401  (the module's season fixture)

pytestmark = pytest.mark.kafka

USERS = ("admin", "lensnet", "replay", "reader")
#: Start-up attempts of the daemon in the refused-login tests.
ATTEMPTS = 3


def names() -> dict[str, str]:
    """Fresh topic, group names under the prefixes the ACLs grant."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "LENSNET_TOPICS__PHOTOMETRY_PREFIX": f"{SECURE_NAMES['LENSNET_TOPICS__PHOTOMETRY_PREFIX']}"
        f"{suffix}.",
        "LENSNET_TOPICS__ALERTS": f"{SECURE_NAMES['LENSNET_TOPICS__ALERTS']}.{suffix}",
        "LENSNET_TOPICS__DEAD_LETTER": f"{SECURE_NAMES['LENSNET_TOPICS__DEAD_LETTER']}.{suffix}",
        "LENSNET_TOPICS__EVENTS": f"{SECURE_NAMES['LENSNET_TOPICS__EVENTS']}.{suffix}",
        "LENSNET_CONSUMER__GROUP_ID": f"{SECURE_NAMES['LENSNET_CONSUMER__GROUP_ID']}-{suffix}",
        "LENSNET_TOPICS__PARTITIONS": "4",
        "LENSNET_TOPICS__ALERT_PARTITIONS": "2",
    }


def settings_of(kafka: KafkaSettings, variables: dict[str, str]) -> Settings:
    return Settings(
        kafka=kafka,
        topics=TopicSettings(
            photometry_prefix=variables["LENSNET_TOPICS__PHOTOMETRY_PREFIX"],
            alerts=variables["LENSNET_TOPICS__ALERTS"],
            dead_letter=variables["LENSNET_TOPICS__DEAD_LETTER"],
            events=variables["LENSNET_TOPICS__EVENTS"],
            partitions=int(variables["LENSNET_TOPICS__PARTITIONS"]),
            alert_partitions=int(variables["LENSNET_TOPICS__ALERT_PARTITIONS"]),
        ),
        consumer=ConsumerSettings(group_id=variables["LENSNET_CONSUMER__GROUP_ID"]),
        producer=ProducerSettings(linger_ms=5, batch_observations=300),
    )


def lensnet(
    broker: SecureBroker,
    user: str,
    variables: dict[str, str],
    *arguments: str,
    timeout_s: float = 300,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    """``lensnet --secrets-dir <user's> ARGUMENTS`` as ``user``: its password only in the file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
    env.update(broker.env(user))
    env.update(variables)
    env.update(extra)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer.cli",
            "--secrets-dir",
            str(broker.secrets(user)),
            *arguments,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def no_secret_in(broker: SecureBroker, *outputs: str) -> None:
    for user in USERS:
        secret = broker.password(user)
        for output in outputs:
            assert secret not in output, f"{user}'s password in a log line"


def test_daemon_and_alerts_end_to_end(
    secure_kafka: SecureBroker,
    season: Path,  # noqa: F811
) -> None:
    variables = names()
    admin = settings_of(secure_kafka.settings("admin"), variables)
    ensure_topics(make_admin(admin.kafka), required_topics(admin.topics))
    replay(
        settings_of(secure_kafka.settings("replay"), variables),
        season,
        ReplayOptions(progress=False),
    )
    daemon = lensnet(
        secure_kafka,
        "lensnet",
        variables,
        "run",
        "--until-end",
        LENSNET_DAEMON__HTTP_PORT="-1",
        LENSNET_LOG__FORMAT="json",
        LENSNET_LOG__LEVEL="DEBUG",
        LENSNET_STATE__DIRECTORY=str(secure_kafka.directory / f"state-{uuid.uuid4().hex[:6]}"),
    )
    assert daemon.returncode == 0, daemon.stderr[-2000:] + daemon.stdout[-2000:]
    assert '"event": "batch"' in daemon.stdout
    alerts = lensnet(
        secure_kafka, "reader", variables, "alerts", "tail", "--from", "earliest", "--until-end"
    )
    assert alerts.returncode == 0, alerts.stderr
    shown = int(alerts.stdout.strip().splitlines()[-1].split()[0])
    print(f"\nover SASL_SSL: the daemon published {shown} alerts, read back as reader")
    assert shown > 0
    no_secret_in(secure_kafka, daemon.stdout, daemon.stderr, alerts.stdout, alerts.stderr)


def test_refused_login_is_one_line_naming_the_setting(
    secure_kafka: SecureBroker, tmp_path: Path
) -> None:
    """A wrong password and a CA that did not sign the broker's certificate: two daemons,
    started side by side."""
    wrong = tmp_path / "secrets"
    wrong.mkdir()
    (wrong / "lensnet_kafka__sasl_password").write_text("not-the-password")
    other_ca = tmp_path / "other-ca.pem"
    made = subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=another CA", "-keyout", str(tmp_path / "key"), "-out", str(other_ca)),
        ],
        capture_output=True,
        timeout=60,
    )
    assert made.returncode == 0
    faults = {  # fault: (secrets folder, variables, the setting the error must name)
        "wrong password": (wrong, {}, "LENSNET_KAFKA__SASL_PASSWORD"),
        "untrusted certificate": (
            secure_kafka.secrets("lensnet"),
            {"LENSNET_KAFKA__SSL_CA_LOCATION": str(other_ca)},
            "LENSNET_KAFKA__SSL_CA_LOCATION",
        ),
    }
    started = time.monotonic()
    daemons = {}
    for fault, (secrets, extra, _) in faults.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
        env.update({**secure_kafka.env("lensnet"), **names(), **extra})
        env["LENSNET_DAEMON__HTTP_PORT"] = "-1"
        env["LENSNET_DAEMON__STARTUP_ATTEMPTS"] = str(ATTEMPTS)
        daemons[fault] = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "--secrets-dir", str(secrets), "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for fault, daemon in daemons.items():
        stdout, stderr = daemon.communicate(timeout=120)
        elapsed = time.monotonic() - started
        setting = faults[fault][2]
        print(f"\n{fault}: exit {daemon.returncode} after {elapsed:.1f} s: {stderr.strip()}")
        assert daemon.returncode == 3
        assert len(stderr.strip().splitlines()) == 1
        assert setting in stderr
        # Each attempt fails at once (the refusal is decisive); the daemon retries (a Secret
        # may be rotated meanwhile), logging each attempt, and gives up after its budget: 0.5
        # + 1 s of back-off for 3 attempts, plus the interpreter's and the model's start.
        retries = [line for line in stdout.splitlines() if "retrying" in line]
        assert len(retries) == ATTEMPTS - 1
        assert all(setting in line for line in retries)
        assert elapsed < 60
        no_secret_in(secure_kafka, stdout, stderr)


def delivery_error(kafka: KafkaSettings, topic: str) -> int | None:
    """Produce one message to ``topic`` as this login: the error code (None: written).

    Not idempotent: a login that may write nothing at all would fail earlier, getting no
    producer id (CLUSTER_AUTHORIZATION_FAILED), and the topic's ACL would go untested."""
    config = producer_config(kafka, ProducerSettings(linger_ms=0))
    producer = Producer({**config, "enable.idempotence": False, "acks": "all"})
    reports: list[KafkaError | None] = []
    producer.produce(topic, b"x", on_delivery=lambda error, _: reports.append(error))
    producer.flush(30)
    assert reports, "no delivery report within 30 s"
    return None if reports[0] is None else int(reports[0].code())


REFUSED = KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_only_the_daemon_may_write_alerts(secure_kafka: SecureBroker) -> None:
    variables = names()
    admin = settings_of(secure_kafka.settings("admin"), variables)
    ensure_topics(make_admin(admin.kafka), required_topics(admin.topics))
    alerts, photometry = admin.topics.alerts, admin.topics.photometry_topics()[0]
    assert delivery_error(secure_kafka.settings("replay"), alerts) == REFUSED
    assert delivery_error(secure_kafka.settings("reader"), alerts) == REFUSED
    # Nor may the daemon write photometry; it may write alerts.
    assert delivery_error(secure_kafka.settings("lensnet"), photometry) == REFUSED
    assert delivery_error(secure_kafka.settings("lensnet"), alerts) is None


def test_the_daemon_reads_its_alerts_and_updates_back(secure_kafka: SecureBroker) -> None:
    """On assignment the daemon reads the alert and events topics back (alert-once, update
    ledger): its login must be allowed to, or a restarted daemon could not start once alerts
    exist (a first run, with both topics empty, never reads)."""
    variables = names()
    admin = settings_of(secure_kafka.settings("admin"), variables)
    ensure_topics(make_admin(admin.kafka), required_topics(admin.topics))
    daemon = secure_kafka.settings("lensnet")
    star = 1_600_000_020
    config = producer_config(daemon, ProducerSettings(linger_ms=0))
    producer = Producer({**config, "enable.idempotence": False, "acks": "all"})
    update = replace(make_update(3), star_id=star)
    producer.produce(
        admin.topics.alerts,
        b"alert",
        key=star.to_bytes(8, "big", signed=True),
        headers=[(TRIGGER_HEADER, b"2461103.5")],
    )
    value, headers = encode_update(update)
    producer.produce(admin.topics.events, value, headers=list(headers))
    assert producer.flush(30) == 0
    partition = int(partitions_for(np.array([star]), 4)[0])
    group = admin.consumer.group_id
    alerted = PublishedAlerts(daemon, admin.topics.alerts, timeout_s=60, group=group).read(
        range(4), 4
    )
    assert alerted[partition] == {star: 2461103.5}
    followed = PublishedEvents(daemon, admin.topics.events, timeout_s=60, group=group).read(
        range(4), 4
    )
    assert followed[partition][star].last.sequence == 3
    # Whoever may not read the topic is told at once, by name, not after a time-out.
    reader_of_photometry = secure_kafka.settings("replay")
    started = time.monotonic()
    with pytest.raises(KafkaClientError, match=admin.topics.alerts):
        PublishedAlerts(reader_of_photometry, admin.topics.alerts, timeout_s=60).read(range(4), 4)
    assert time.monotonic() - started < 30
