"""Alerts in the Confluent wire format, against a real schema registry (Apicurio, local).

The proof that standard Kafka tooling reads them: confluent-kafka's own ``AvroDeserializer``
decodes what the daemon's output publishes, and our subscriber decodes what confluent-kafka's
own ``AvroSerializer`` writes, beside single-object alerts in the same topic.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from consumer.edge.alert import AlertDecoder, alert_from_record, alert_to_record, encode_alert
from consumer.edge.keys import star_key
from consumer.edge.output import make_output
from consumer.edge.registry import (
    RegistryClient,
    SchemaRegistryError,
    confluent_frame,
    confluent_unframe,
    is_confluent,
)
from consumer.edge.schemas import load_schema
from consumer.edge.subscribe import AlertSubscriber
from consumer.exceptions import DecodeError
from consumer.settings import DaemonSettings, SchemaRegistrySettings, Settings
from tests.consumer.edge.test_alert import assert_same_alert, make_alert
from tests.consumer.test_cli import lensnet


def test_confluent_framing_round_trip_and_is_told_apart_from_single_object() -> None:
    value = confluent_frame(258, b"body")
    assert value[:5] == b"\x00\x00\x00\x01\x02"
    schema_id, body = confluent_unframe(value)
    assert (schema_id, bytes(body)) == (258, b"body")
    single, _ = encode_alert(make_alert())
    assert is_confluent(value)
    assert not is_confluent(single)
    with pytest.raises(DecodeError, match="not a Confluent-framed message"):
        confluent_unframe(single)


def test_a_confluent_alert_without_header_needs_a_registry() -> None:
    value, _ = encode_alert(make_alert(), schema_id=7)
    with pytest.raises(DecodeError, match=r"schema id 7.*LENSNET_SCHEMA_REGISTRY__URL"):
        AlertDecoder().decode(value, [])


def test_a_dead_registry_is_a_retriable_error_naming_url_and_setting() -> None:
    client = RegistryClient(SchemaRegistrySettings(url="http://127.0.0.1:1/apis/ccompat/v7"))
    with pytest.raises(SchemaRegistryError) as caught:
        client.register("x-value", load_schema("alert"))
    assert caught.value.retriable
    assert "http://127.0.0.1:1/apis/ccompat/v7/subjects/x-value/versions" in str(caught.value)
    assert "LENSNET_SCHEMA_REGISTRY__URL" in str(caught.value)


def test_confluent_format_needs_a_registry_url() -> None:
    result = lensnet("run", "--alert-format", "confluent", "--http-port", "-1", timeout=30)
    assert result.returncode == 2
    assert "--alert-format confluent needs LENSNET_SCHEMA_REGISTRY__URL" in result.stderr
    env = {"LENSNET_DAEMON__ALERT_FORMAT": "confluent"}
    result = lensnet("topics", "describe", env=env, timeout=30)
    assert result.returncode == 2
    assert "LENSNET_DAEMON__ALERT_FORMAT=confluent needs LENSNET_SCHEMA_REGISTRY__URL" in (
        result.stderr
    )


def _confluent_settings(settings: Settings, url: str) -> Settings:
    return settings.model_copy(
        update={
            "daemon": DaemonSettings(alert_format="confluent", http_port=-1),
            "schema_registry": SchemaRegistrySettings(url=url),
        }
    )


def _read_raw(consumer: Consumer, topic: str, count: int) -> list[Any]:
    consumer.subscribe([topic])
    messages: list[Any] = []
    for _ in range(60):
        messages += [m for m in consumer.consume(10, 1.0) if m.error() is None]
        if len(messages) >= count:
            break
    return messages


@pytest.mark.kafka
def test_the_daemon_output_registers_the_schema_and_kafka_tooling_reads_its_alerts(
    topics_factory: Callable[..., Settings],
    consumer_factory: Callable[..., Consumer],
    schema_registry_url: str,
) -> None:
    settings = _confluent_settings(topics_factory(partitions=1), schema_registry_url)
    alerts = [make_alert(n) for n in (25, 30, 40)]
    output = make_output(settings, consumer=None)  # exactly-once, as the daemon starts it
    try:
        output.begin()
        for alert in alerts:
            output.alert(alert)
        output.commit([], None)
    finally:
        output.close(10.0)
    subject = f"{settings.topics.alerts}-value"
    with urllib.request.urlopen(f"{schema_registry_url}/subjects", timeout=10) as response:
        assert subject in json.loads(response.read())
    messages = _read_raw(consumer_factory(), settings.topics.alerts, len(alerts))
    assert len(messages) == len(alerts)
    with SchemaRegistryClient({"url": schema_registry_url}) as registry:
        deserialize = AvroDeserializer(registry)
        for message, alert in zip(messages, alerts, strict=True):
            assert message.value()[:1] == b"\x00"
            context = SerializationContext(settings.topics.alerts, MessageField.VALUE)
            record = deserialize(message.value(), context)
            assert record["alert_id"] == alert.alert_id
            assert_same_alert(alert_from_record(record), alert)


@pytest.mark.kafka
def test_the_subscriber_reads_either_format_in_one_topic(
    topics_factory: Callable[..., Settings], schema_registry_url: str
) -> None:
    settings = _confluent_settings(topics_factory(partitions=1), schema_registry_url)
    topic = settings.topics.alerts
    single, by_us, by_confluent = make_alert(25), make_alert(30), make_alert(40)
    subject_id = RegistryClient(settings.schema_registry).register(
        f"{topic}-value", load_schema("alert")
    )
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    value, headers = encode_alert(single)
    producer.produce(topic, value, star_key(single.star_id), headers=cast(Any, headers))
    value, headers = encode_alert(by_us, schema_id=subject_id)
    producer.produce(topic, value, star_key(by_us.star_id), headers=cast(Any, headers))
    record = alert_to_record(by_confluent)  # no lensnet headers: the registry is the only way
    with SchemaRegistryClient({"url": schema_registry_url}) as registry:
        serialize = AvroSerializer(registry, json.dumps(load_schema("alert").definition))
        value = serialize(record, SerializationContext(topic, MessageField.VALUE))
    producer.produce(topic, value, star_key(by_confluent.star_id))
    assert producer.flush(10) == 0

    with AlertSubscriber(
        settings.kafka,
        topic,
        start="earliest",
        stop_at_end=True,
        registry=settings.schema_registry,
    ) as subscriber:
        read = list(subscriber)
    assert [a.alert_id for a in read] == [single.alert_id, by_us.alert_id, by_confluent.alert_id]
    for got, sent in zip(read, (single, by_us, by_confluent), strict=True):
        assert_same_alert(got, sent)

    with AlertSubscriber(settings.kafka, topic, start="earliest", stop_at_end=True) as blind:
        assert [a.alert_id for a in blind] == [single.alert_id, by_us.alert_id]
    ((_, offset, why),) = blind.skipped
    assert offset == 2
    assert "LENSNET_SCHEMA_REGISTRY__URL" in why
