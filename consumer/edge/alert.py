"""The alert: a typed record, its Avro encoding, and a decoder tolerant of newer 1.x writers.

Each alert message is an Avro single-object encoding (:mod:`consumer.edge.schemas`), or, with
``daemon.alert_format = confluent``, in the Confluent wire format (:mod:`consumer.edge.registry`),
and carries its writer schema (its JSON definition) in the ``lensnet.schema`` header either way.
A subscriber decodes with the writer schema (known by fingerprint, taken from the header, or
fetched from the registry by id) resolved against the reader schema it ships, so an older
client reads a newer 1.x alert: fields it does not know are skipped, fields the writer lacks
take the reader's defaults.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fastavro
import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from consumer.edge.binary_posterior import (
    BinaryPosterior,
    binary_posterior_from_record,
    binary_posterior_to_record,
)
from consumer.edge.event_model import EventModel, event_model_from_record, event_model_to_record
from consumer.edge.opinions import (
    NoveltyScore,
    SecondOpinion,
    novelty_from_record,
    novelty_to_record,
    second_opinion_from_record,
    second_opinion_to_record,
)
from consumer.edge.registry import RegistryClient, confluent_frame, confluent_unframe, is_confluent
from consumer.edge.schemas import (
    AvroSchema,
    SchemaRegistry,
    frame,
    load_schema,
    read_record,
    unframe,
)
from consumer.exceptions import DecodeError, SchemaError

SCHEMA_HEADER = "lensnet.schema"
CONTENT_TYPE_HEADER = "content-type"
LABELS = ("NO", "MAYBE", "YES")

Headers = list[tuple[str, bytes]]


def alert_id_for(star_id: int, trigger_hjd: float) -> str:
    """Deterministic alert id: the same star triggering at the same HJD always gets the same id.

    HJD is rounded to 1e-5 d (0.86 s), far below any cadence, so re-processing a batch after a
    crash reproduces the id exactly.
    """
    return f"KMT-{int(star_id)}-{trigger_hjd:.5f}"


@dataclass(frozen=True)
class AlertFinderSummary:
    """The AlertFinder result for the triggering combination of datasets."""

    sites: tuple[str, ...]
    fields: tuple[int, ...]
    t_break: float  # HJD
    slope: float  # flux units per day
    dchi2: float
    n_high: int
    k: int
    n: int


@dataclass(frozen=True)
class Classification:
    """LensNet's scores: binary (event vs ordinary false positive) and 3-class."""

    model_version: str
    p_event: float
    p_no: float
    p_maybe: float
    p_yes: float
    site_scores: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Most probable of NO, MAYBE, YES."""
        return LABELS[int(np.argmax([self.p_no, self.p_maybe, self.p_yes]))]


@dataclass(frozen=True)
class LightCurve:
    """The merged multi-site light curve LensNet saw; every array has shape (N,), time-ordered.

    ``site`` holds indices into :data:`consumer.constants.SITES`; ``fitted`` is the broken line.
    """

    site: npt.NDArray[np.uint8]
    field: npt.NDArray[np.int16]
    hjd: npt.NDArray[np.float64]
    flux: npt.NDArray[np.float64]
    flux_err: npt.NDArray[np.float64]
    sky: npt.NDArray[np.float32]
    fwhm: npt.NDArray[np.float32]
    airmass: npt.NDArray[np.float32]
    psf_quality: npt.NDArray[np.float32]
    fitted: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.hjd)


@dataclass(frozen=True)
class Alert:
    """One microlensing candidate as published on the alert topic."""

    alert_id: str
    star_id: int
    field: int
    chip: int
    ra: float  # deg
    dec: float  # deg
    trigger_hjd: float
    published_at: datetime
    alertfinder: AlertFinderSummary
    lensnet: Classification
    light_curve: LightCurve
    #: The point-lens fit at the alert (schema 1.1; None from 1.0 writers or when unfitted).
    event_model: EventModel | None = None
    #: The novelty network's and the second opinion's verdicts (schema 1.2; None from older
    #: writers or a daemon without the two models).
    novelty: NoveltyScore | None = None
    second_opinion: SecondOpinion | None = None
    #: The binary-lens flow's posterior summaries (schema 1.3; None from older writers, a
    #: daemon without the flow, or a light curve too short for it).
    binary_posterior: BinaryPosterior | None = None
    schema_version: str = "1.3"


_POINT_FIELDS = ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality", "fitted")


def alert_to_record(alert: Alert) -> dict[str, Any]:
    """The Avro record (plain dicts and lists) of an alert, as written with ``alert-v1`` (1.3)."""
    curve = alert.light_curve
    columns = [getattr(curve, name).tolist() for name in _POINT_FIELDS]
    sites = [SITES[i] for i in curve.site.tolist()]
    points = [
        {"site": site, "field": fld, **dict(zip(_POINT_FIELDS, values, strict=True))}
        for site, fld, *values in zip(sites, curve.field.tolist(), *columns, strict=True)
    ]
    finder = alert.alertfinder
    scores = alert.lensnet
    return {
        "alert_id": alert.alert_id,
        "schema_version": alert.schema_version,
        "star_id": alert.star_id,
        "field": alert.field,
        "chip": alert.chip,
        "ra": alert.ra,
        "dec": alert.dec,
        "trigger_hjd": alert.trigger_hjd,
        "published_at": alert.published_at,
        "alertfinder": {
            "sites": list(finder.sites),
            "fields": list(finder.fields),
            "t_break": finder.t_break,
            "slope": finder.slope,
            "dchi2": finder.dchi2,
            "n_high": finder.n_high,
            "k": finder.k,
            "n": finder.n,
        },
        "lensnet": {
            "model_version": scores.model_version,
            "p_event": scores.p_event,
            "p_no": scores.p_no,
            "p_maybe": scores.p_maybe,
            "p_yes": scores.p_yes,
            "label": scores.label,
            "site_scores": dict(scores.site_scores),
        },
        "light_curve": points,
        "event_model": None
        if alert.event_model is None
        else event_model_to_record(alert.event_model),
        "novelty": novelty_to_record(alert.novelty),
        "second_opinion": second_opinion_to_record(alert.second_opinion),
        "binary_posterior": binary_posterior_to_record(alert.binary_posterior),
    }


def alert_from_record(record: dict[str, Any]) -> Alert:
    """Inverse of :func:`alert_to_record` (fields unknown to this version are ignored)."""
    points = record["light_curve"]
    site_index = {site: i for i, site in enumerate(SITES)}
    curve = LightCurve(
        site=np.array([site_index[p["site"]] for p in points], dtype=np.uint8),
        field=np.array([p["field"] for p in points], dtype=np.int16),
        hjd=np.array([p["hjd"] for p in points], dtype=np.float64),
        flux=np.array([p["flux"] for p in points], dtype=np.float64),
        flux_err=np.array([p["flux_err"] for p in points], dtype=np.float64),
        sky=np.array([p["sky"] for p in points], dtype=np.float32),
        fwhm=np.array([p["fwhm"] for p in points], dtype=np.float32),
        airmass=np.array([p["airmass"] for p in points], dtype=np.float32),
        psf_quality=np.array([p["psf_quality"] for p in points], dtype=np.float32),
        fitted=np.array([p["fitted"] for p in points], dtype=np.float64),
    )
    finder = record["alertfinder"]
    scores = record["lensnet"]
    published_at = record["published_at"]
    if isinstance(published_at, int):  # a writer schema without the logical type: epoch ms
        published_at = datetime.fromtimestamp(published_at / 1000, UTC)
    elif published_at.tzinfo is None:
        published_at = published_at.replace(tzinfo=UTC)
    return Alert(
        alert_id=record["alert_id"],
        schema_version=record["schema_version"],
        star_id=record["star_id"],
        field=record["field"],
        chip=record["chip"],
        ra=record["ra"],
        dec=record["dec"],
        trigger_hjd=record["trigger_hjd"],
        published_at=published_at,
        alertfinder=AlertFinderSummary(
            sites=tuple(finder["sites"]),
            fields=tuple(finder["fields"]),
            t_break=finder["t_break"],
            slope=finder["slope"],
            dchi2=finder["dchi2"],
            n_high=finder["n_high"],
            k=finder["k"],
            n=finder["n"],
        ),
        lensnet=Classification(
            model_version=scores["model_version"],
            p_event=scores["p_event"],
            p_no=scores["p_no"],
            p_maybe=scores["p_maybe"],
            p_yes=scores["p_yes"],
            site_scores=dict(scores["site_scores"]),
        ),
        light_curve=curve,
        event_model=None
        if record.get("event_model") is None
        else event_model_from_record(record["event_model"]),
        novelty=novelty_from_record(record.get("novelty")),
        second_opinion=second_opinion_from_record(record.get("second_opinion")),
        binary_posterior=binary_posterior_from_record(record.get("binary_posterior")),
    )


def encode_record(
    schema: AvroSchema, record: dict[str, Any], *, schema_id: int | None = None
) -> tuple[bytes, Headers]:
    """Frame ``record`` written with ``schema``, with the schema and content-type headers:
    single-object, or Confluent-framed with the registry's ``schema_id``."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema.parsed, record)
    headers: Headers = [
        # The full definition, not the canonical form: that one drops logical types and docs.
        (SCHEMA_HEADER, json.dumps(schema.definition, separators=(",", ":")).encode()),
        (
            CONTENT_TYPE_HEADER,
            f"avro/binary; schema={schema.name}; version={schema.version}".encode(),
        ),
    ]
    if schema_id is not None:
        return confluent_frame(schema_id, buffer.getvalue()), headers
    return frame(schema, buffer.getvalue()), headers


def encode_alert(alert: Alert, *, schema_id: int | None = None) -> tuple[bytes, Headers]:
    """Message value and headers of an alert, written with ``alert-v1``: single-object, or in
    the Confluent wire format when ``schema_id`` (``alert-v1``'s id in the registry) is given."""
    return encode_record(load_schema("alert"), alert_to_record(alert), schema_id=schema_id)


class AlertDecoder:
    """Decodes alerts written with any 1.x schema, known or carried in the message header, in
    either wire format; ``client`` fetches the writer schema of a Confluent-framed alert that
    has no schema header (one written by other tools)."""

    def __init__(
        self, registry: SchemaRegistry | None = None, client: RegistryClient | None = None
    ) -> None:
        self._registry = registry or SchemaRegistry()
        self._client = client
        self._reader = load_schema("alert")
        self._by_header: dict[bytes, AvroSchema] = {}

    def _confluent_writer(self, schema_id: int, headers: Headers | None) -> AvroSchema:
        text = dict(headers or []).get(SCHEMA_HEADER)
        if text is not None:
            known = self._by_header.get(text)
            if known is None:
                if len(self._by_header) > 100:  # headers are the writer's word: bound them
                    self._by_header.clear()
                try:
                    known = self._by_header[text] = AvroSchema.from_json(text)
                except SchemaError as error:
                    raise DecodeError(f"bad {SCHEMA_HEADER} header: {error}") from error
            return known
        if self._client is None:
            raise DecodeError(
                f"Confluent-framed alert (schema id {schema_id}) without a {SCHEMA_HEADER} "
                "header, and no schema registry to ask (LENSNET_SCHEMA_REGISTRY__URL)"
            )
        return self._client.schema(schema_id)

    def _writer(self, fingerprint: bytes, headers: Headers | None) -> AvroSchema:
        writer = self._registry.get(fingerprint)
        if writer is not None:
            return writer
        text = dict(headers or []).get(SCHEMA_HEADER)
        if text is None:
            raise DecodeError(f"unknown alert writer schema {fingerprint.hex()} and no header")
        try:
            writer = AvroSchema.from_json(text)
        except SchemaError as error:
            raise DecodeError(f"bad {SCHEMA_HEADER} header: {error}") from error
        if writer.fingerprint != fingerprint:
            raise DecodeError("the schema header does not match the message's fingerprint")
        self._registry.add(writer)
        return writer

    def decode(self, value: bytes, headers: Headers | None = None) -> Alert:
        """Decode one alert message; raises :class:`DecodeError` saying what is wrong."""
        if is_confluent(value):
            schema_id, body = confluent_unframe(value)
            writer = self._confluent_writer(schema_id, headers)
        else:
            fingerprint, body = unframe(value)
            writer = self._writer(fingerprint, headers)
        try:
            record = read_record(io.BytesIO(body), writer, self._reader)
        except DecodeError:
            raise
        except Exception as error:  # schema resolution and truncation raise assorted types
            raise DecodeError(f"cannot decode alert: {type(error).__name__}: {error}") from error
        try:
            return alert_from_record(record)
        except (ValueError, OverflowError, KeyError, TypeError) as error:
            # Values the Avro types allow but the alert does not (e.g. a field beyond int16).
            raise DecodeError(
                f"impossible alert values: {type(error).__name__}: {error}"
            ) from error


def now_utc() -> datetime:
    """Publication timestamp (millisecond precision, as the schema stores it)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
