"""The events topic's messages: a followed event's model as it unfolds (``schemas/event-v1.avsc``).

An :class:`EventUpdate` is one message, keyed by star like alerts, framed and headed like them
(:func:`consumer.edge.alert.encode_record`), and decoded with the same tolerance of newer 1.x
writers (:class:`EventDecoder`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from consumer.edge.alert import SCHEMA_HEADER, Headers, encode_record
from consumer.edge.event_model import EventModel, event_model_from_record, event_model_to_record
from consumer.edge.schemas import AvroSchema, SchemaRegistry, load_schema, read_record, unframe
from consumer.exceptions import DecodeError, SchemaError

#: Kinds of update, as the schema's enum spells them.
UPDATE_KINDS: Final = ("INITIAL", "UPDATE", "ANOMALY", "FINAL")
#: Header with the update's sequence number (readable without decoding the value).
SEQUENCE_HEADER: Final = "lensnet.sequence"


@dataclass(frozen=True)
class EventUpdate:
    """One message of the events topic."""

    event_id: str
    star_id: int
    sequence: int
    kind: str  # one of UPDATE_KINDS
    reason: str
    field: int
    ra: float
    dec: float
    alert_hjd: float
    published_at: datetime
    sites: tuple[str, ...]
    event_model: EventModel
    schema_version: str = "1.0"


def update_to_record(update: EventUpdate) -> dict[str, Any]:
    """The Avro record of an update, as written with ``event-v1``."""
    return {
        "event_id": update.event_id,
        "schema_version": update.schema_version,
        "star_id": update.star_id,
        "sequence": update.sequence,
        "kind": update.kind,
        "reason": update.reason,
        "field": update.field,
        "ra": update.ra,
        "dec": update.dec,
        "alert_hjd": update.alert_hjd,
        "published_at": update.published_at,
        "sites": list(update.sites),
        "event_model": event_model_to_record(update.event_model),
    }


def update_from_record(record: dict[str, Any]) -> EventUpdate:
    """Inverse of :func:`update_to_record`."""
    published_at = record["published_at"]
    if isinstance(published_at, int):
        published_at = datetime.fromtimestamp(published_at / 1000, UTC)
    elif published_at.tzinfo is None:
        published_at = published_at.replace(tzinfo=UTC)
    return EventUpdate(
        event_id=record["event_id"],
        schema_version=record["schema_version"],
        star_id=record["star_id"],
        sequence=record["sequence"],
        kind=record["kind"],
        reason=record["reason"],
        field=record["field"],
        ra=record["ra"],
        dec=record["dec"],
        alert_hjd=record["alert_hjd"],
        published_at=published_at,
        sites=tuple(record["sites"]),
        event_model=event_model_from_record(record["event_model"]),
    )


def encode_update(update: EventUpdate) -> tuple[bytes, Headers]:
    """Message value and headers of an update, written with ``event-v1``; the sequence number
    also travels in the :data:`SEQUENCE_HEADER` header."""
    value, headers = encode_record(load_schema("event"), update_to_record(update))
    headers.append((SEQUENCE_HEADER, str(update.sequence).encode()))
    return value, headers


class EventDecoder:
    """Decodes updates written with any 1.x event schema, known or carried in the header."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self._registry = registry or SchemaRegistry()
        self._reader = load_schema("event")

    def _writer(self, fingerprint: bytes, headers: Headers | None) -> AvroSchema:
        writer = self._registry.get(fingerprint)
        if writer is not None:
            return writer
        text = dict(headers or []).get(SCHEMA_HEADER)
        if text is None:
            raise DecodeError(f"unknown event writer schema {fingerprint.hex()} and no header")
        try:
            writer = AvroSchema.from_json(text)
        except SchemaError as error:
            raise DecodeError(f"bad {SCHEMA_HEADER} header: {error}") from error
        if writer.fingerprint != fingerprint:
            raise DecodeError("the schema header does not match the message's fingerprint")
        self._registry.add(writer)
        return writer

    def decode(self, value: bytes, headers: Headers | None = None) -> EventUpdate:
        """Decode one update; raises :class:`DecodeError` saying what is wrong."""
        fingerprint, body = unframe(value)
        writer = self._writer(fingerprint, headers)
        try:
            return update_from_record(read_record(io.BytesIO(body), writer, self._reader))
        except DecodeError:
            raise
        except Exception as error:  # schema resolution and truncation raise assorted types
            raise DecodeError(
                f"cannot decode event update: {type(error).__name__}: {error}"
            ) from error
