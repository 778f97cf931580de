"""Avro schemas and the single-object framing every message uses.

Each Kafka value is an Avro *single-object encoding* (Avro specification): the two marker bytes
``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's parsing
canonical form, then the schemaless binary body. The fingerprint tells a reader which writer
schema to decode with, without a schema registry service. Readers know every schema shipped in
``schemas/``; alerts additionally carry their writer schema in a header so a subscriber with an
older package still decodes a newer 1.x alert (see :mod:`consumer.edge.alert`).

Compatibility rule: within a major version every change is FULL-compatible (fields are added or
removed only with defaults; enums only grow at the end with a default). A breaking change is a
new major version, a new ``*-vN.avsc`` file and a new topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any, BinaryIO, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from consumer.constants import schema_dir
from consumer.exceptions import DecodeError, SchemaError

MAGIC = b"\xc3\x01"
HEADER_BYTES = 10


@dataclass(frozen=True)
class AvroSchema:
    """A parsed schema with what framing needs.

    ``definition`` is the JSON object as written (with our extra attributes such as ``dtype``);
    ``parsed`` is fastavro's parsed form used for reading and writing.
    """

    name: str
    version: str
    definition: dict[str, Any]
    parsed: dict[str, Any] = field(repr=False)
    canonical: str = field(repr=False)
    fingerprint: bytes = field(repr=False)

    @classmethod
    def from_definition(cls, definition: dict[str, Any]) -> AvroSchema:
        """Parse a schema definition (a JSON object); raises :class:`SchemaError` when invalid."""
        try:
            parsed = cast(dict[str, Any], fastavro.parse_schema(definition, _force=True))
            canonical = to_parsing_canonical_form(parsed)
        except Exception as error:  # fastavro raises several unrelated types here
            raise SchemaError(f"invalid Avro schema {definition.get('name')!r}: {error}") from error
        if not isinstance(parsed, dict) or "name" not in parsed:
            raise SchemaError("an Avro schema here must be a named type (record, enum, fixed)")
        return cls(
            name=str(parsed["name"]),
            version=str(definition.get("version", "")),
            definition=definition,
            parsed=parsed,
            canonical=canonical,
            # fastavro returns the little-endian bytes the single-object header wants.
            fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> AvroSchema:
        """Parse a schema from its JSON text."""
        try:
            definition = json.loads(text)
        except (ValueError, RecursionError) as error:  # RecursionError: hostile nesting
            raise SchemaError(f"schema is not JSON: {type(error).__name__}") from error
        if not isinstance(definition, dict):
            raise SchemaError("schema JSON must be an object")
        return cls.from_definition(definition)


@cache
def load_schema(name: str, major: int = 1) -> AvroSchema:
    """Schema ``schemas/{name}-v{major}.avsc`` (``name`` is ``photometry`` or ``alert``)."""
    path = schema_dir() / f"{name}-v{major}.avsc"
    try:
        text = path.read_text()
    except OSError as error:
        raise SchemaError(f"{path}: cannot read schema: {error.strerror}") from error
    try:
        return AvroSchema.from_json(text)
    except SchemaError as error:
        raise SchemaError(f"{path}: {error}") from error


def frame(schema: AvroSchema, body: bytes) -> bytes:
    """Prefix an Avro body with the single-object header of its writer schema."""
    return MAGIC + schema.fingerprint + body


def unframe(message: bytes) -> tuple[bytes, memoryview]:
    """Split a single-object message into (fingerprint, body); :class:`DecodeError` if not one."""
    if len(message) < HEADER_BYTES or message[:2] != MAGIC:
        raise DecodeError(
            f"not an Avro single-object message (length {len(message)}, starts {message[:2]!r})"
        )
    view = memoryview(message)
    return bytes(view[2:HEADER_BYTES]), view[HEADER_BYTES:]


def read_record(body: BinaryIO, writer: AvroSchema, reader: AvroSchema) -> dict[str, Any]:
    """Decode one schemaless record written with ``writer`` into ``reader``'s shape.

    Raises whatever fastavro raises on a corrupt or truncated body (callers wrap it).
    """
    record = fastavro.schemaless_reader(body, writer.parsed, reader.parsed)
    if not isinstance(record, dict):
        raise DecodeError(f"expected a record, decoded a {type(record).__name__}")
    return record


class SchemaRegistry:
    """Writer schemas a reader knows, by fingerprint: every ``*.avsc`` shipped, plus any added."""

    def __init__(self, schemas: list[AvroSchema] | None = None) -> None:
        self._by_fingerprint: dict[bytes, AvroSchema] = {}
        for schema in schemas if schemas is not None else _shipped():
            self.add(schema)

    def add(self, schema: AvroSchema) -> None:
        """Make ``schema`` known as a writer schema."""
        self._by_fingerprint[schema.fingerprint] = schema

    def get(self, fingerprint: bytes) -> AvroSchema | None:
        """The writer schema with this fingerprint, or None when unknown."""
        return self._by_fingerprint.get(fingerprint)


def _shipped() -> list[AvroSchema]:
    return [AvroSchema.from_json(path.read_text()) for path in sorted(schema_dir().glob("*.avsc"))]
