"""The Confluent wire format and a client of a Confluent-compatible schema registry.

Kafka's standard tooling (Confluent's serializers, Kafka Connect, ksqlDB, kcat -s avro, Rubin's
alert stream) frames an Avro value as ``00``, the writer schema's 4-byte big-endian id in a
schema registry, then the schemaless Avro body. With ``daemon.alert_format = confluent`` the
daemon registers ``alert-v1`` under ``<alert topic>-value`` at start and frames every alert so;
subscribers fetch the writer schema by id (:meth:`RegistryClient.schema`).

The client speaks the registry's REST API with the standard library (no extra dependency in
the daemon's image): Confluent Schema Registry, Karapace and Apicurio Registry
(``/apis/ccompat/v7``) all serve it.
"""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

from consumer.edge.schemas import AvroSchema
from consumer.exceptions import DecodeError, LensNetError, SchemaError
from consumer.settings import SchemaRegistrySettings, env_name

#: First byte of a Confluent-framed value.
CONFLUENT_MAGIC: Final = b"\x00"
CONFLUENT_HEADER_BYTES: Final = 5
_CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"


class SchemaRegistryError(LensNetError):
    """The schema registry cannot be reached or refuses a request; names the URL."""

    exit_code = 3

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


def confluent_frame(schema_id: int, body: bytes) -> bytes:
    """``00``, the schema id (4 bytes, big-endian), the Avro body."""
    return CONFLUENT_MAGIC + struct.pack(">I", schema_id) + body


def is_confluent(value: bytes) -> bool:
    """Whether ``value`` starts like a Confluent-framed message (single-object starts ``C3``)."""
    return len(value) >= CONFLUENT_HEADER_BYTES and value[:1] == CONFLUENT_MAGIC


def confluent_unframe(value: bytes) -> tuple[int, memoryview]:
    """(schema id, Avro body) of a Confluent-framed value; :class:`DecodeError` if not one."""
    if not is_confluent(value):
        raise DecodeError(f"not a Confluent-framed message (length {len(value)})")
    view = memoryview(value)
    (schema_id,) = struct.unpack(">I", view[1:CONFLUENT_HEADER_BYTES])
    return int(schema_id), view[CONFLUENT_HEADER_BYTES:]


class RegistryClient:
    """Register schemas and fetch them by id; ids are cached for the life of the client."""

    def __init__(self, settings: SchemaRegistrySettings) -> None:
        if settings.url is None:
            setting = env_name(("schema_registry", "url"))
            raise SchemaRegistryError(f"no schema registry: set {setting}")
        self.url = settings.url.rstrip("/")
        self.settings = settings
        self._by_id: dict[int, AvroSchema] = {}

    def register(self, subject: str, schema: AvroSchema) -> int:
        """Register ``schema`` under ``subject`` (a no-op when it is there); returns its id."""
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        text = json.dumps(schema.definition, separators=(",", ":"))
        answer = self._request("POST", path, {"schema": text, "schemaType": "AVRO"})
        schema_id = answer.get("id")
        if not isinstance(schema_id, int):
            raise SchemaRegistryError(f"{self.url}{path}: answer without an id: {answer!r}")
        self._by_id[schema_id] = schema
        return schema_id

    def schema(self, schema_id: int) -> AvroSchema:
        """The schema registered with ``schema_id``."""
        known = self._by_id.get(schema_id)
        if known is not None:
            return known
        answer = self._request("GET", f"/schemas/ids/{schema_id}")
        try:
            schema = AvroSchema.from_json(answer["schema"])
        except (KeyError, TypeError, SchemaError) as error:
            raise SchemaRegistryError(
                f"{self.url}: schema id {schema_id} is not a usable Avro schema: {error}"
            ) from error
        self._by_id[schema_id] = schema
        return schema

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE},
        )
        if self.settings.username is not None:
            password = self.settings.password.get_secret_value() if self.settings.password else ""
            token = base64.b64encode(f"{self.settings.username}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        where = f"{method} {self.url}{path} ({env_name(('schema_registry', 'url'))})"
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode(errors="replace").strip()
            raise SchemaRegistryError(
                f"schema registry refused {where}: HTTP {error.code} {detail}",
                retriable=error.code >= 500,
            ) from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise SchemaRegistryError(
                f"cannot reach the schema registry: {where}: {reason}", retriable=True
            ) from error
        except ValueError as error:
            raise SchemaRegistryError(f"{where}: the answer is not JSON: {error}") from error
