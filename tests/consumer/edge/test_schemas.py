from __future__ import annotations

import json

import pytest
from fastavro.schema import fingerprint

from consumer.constants import schema_dir
from consumer.edge.schemas import AvroSchema, SchemaRegistry, frame, load_schema, unframe
from consumer.exceptions import DecodeError, SchemaError


@pytest.mark.parametrize("path", sorted(schema_dir().glob("*.avsc")), ids=lambda p: p.name)
def test_every_shipped_schema_parses(path: object) -> None:
    schema = AvroSchema.from_json(schema_dir().joinpath(str(path)).read_text())
    assert schema.version
    assert len(schema.fingerprint) == 8


def test_fingerprint_follows_the_avro_spec() -> None:
    # Java's SchemaNormalization gives 0x7275D51A3F395C8F for "int"; the header holds it
    # little-endian.
    assert fingerprint('"int"', "CRC-64-AVRO") == "8f5c393f1ad57572"
    schema = AvroSchema.from_json('{"type": "record", "name": "x", "fields": [], "doc": "d"}')
    assert schema.canonical == '{"name":"x","type":"record","fields":[]}'
    assert schema.fingerprint == bytes.fromhex(fingerprint(schema.canonical, "CRC-64-AVRO"))


def test_frame_round_trip() -> None:
    schema = load_schema("photometry")
    fingerprint, body = unframe(frame(schema, b"body"))
    assert fingerprint == schema.fingerprint
    assert bytes(body) == b"body"


@pytest.mark.parametrize("message", [b"", b"\xc3\x01short", b"\x00\x00\x00\x00\x01" + b"x" * 20])
def test_unframe_rejects_other_formats(message: bytes) -> None:
    with pytest.raises(DecodeError, match="single-object"):
        unframe(message)


def test_registry_knows_shipped_schemas() -> None:
    registry = SchemaRegistry()
    for name in ("photometry", "alert"):
        assert registry.get(load_schema(name).fingerprint) == load_schema(name)
    assert registry.get(b"\x00" * 8) is None


@pytest.mark.parametrize("text", ["not json", "[1, 2]", json.dumps({"type": "record"})])
def test_bad_schema_is_a_schema_error(text: str) -> None:
    with pytest.raises(SchemaError):
        AvroSchema.from_json(text)
