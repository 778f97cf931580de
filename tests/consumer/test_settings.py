from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer.exceptions import ConfigError
from consumer.settings import KafkaSettings, Settings, TopicSettings, load_settings


def test_defaults_point_at_a_local_broker() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topics.photometry_topics() == (
        "kmtnet.photometry.ctio",
        "kmtnet.photometry.saao",
        "kmtnet.photometry.sso",
    )


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LENSNET_KAFKA__BOOTSTRAP_SERVERS", "a:1,b:2")
    monkeypatch.setenv("LENSNET_TOPICS__PARTITIONS", "24")
    monkeypatch.setenv("LENSNET_KAFKA__EXTRA", '{"socket.keepalive.enable": "true"}')
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "a:1,b:2"
    assert settings.topics.partitions == 24
    assert settings.kafka.client_config()["socket.keepalive.enable"] == "true"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.topics.partitions = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LENSNET_TOPICS__PARTITIONS", "many"),
        ("LENSNET_TOPICS__PARTITIONS", "0"),
        ("LENSNET_KAFKA__BOOTSTRAP_SERVERS", "no-port"),
        ("LENSNET_KAFKA__SECURITY_PROTOCOL", "TELEPATHY"),
        ("LENSNET_LOG__LEVEL", "LOUD"),
    ],
)
def test_bad_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_secrets_come_from_files_and_stay_secret(tmp_path: Path) -> None:
    # One file per setting, as a Kubernetes Secret volume mounts them.
    (tmp_path / "lensnet_kafka__sasl_username").write_text("broker-user")
    (tmp_path / "lensnet_kafka__sasl_password").write_text("hunter2")
    (tmp_path / "lensnet_kafka__security_protocol").write_text("SASL_SSL")
    (tmp_path / "lensnet_kafka__sasl_mechanism").write_text("SCRAM-SHA-512")
    settings = load_settings(secrets_dir=tmp_path)
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)
    config = settings.kafka.client_config()
    assert config["sasl.password"] == "hunter2"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"


def test_missing_secrets_dir_is_ignored(tmp_path: Path) -> None:
    assert load_settings(secrets_dir=tmp_path / "absent") == Settings()


def test_unknown_site_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown site"):
        TopicSettings().photometry("OGLE")


def test_tls_paths_reach_librdkafka(tmp_path: Path) -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_ca_location=tmp_path / "ca.pem")
    assert kafka.client_config()["ssl.ca.location"] == str(tmp_path / "ca.pem")
