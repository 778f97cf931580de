"""Settings: one frozen object, built once at the entry point and passed down.

Every value can come from the environment with the ``LENSNET_`` prefix and ``__`` between nested
names, e.g. ``LENSNET_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or
``LENSNET_TOPICS__PARTITIONS=24``. Secrets (SASL password, TLS key password) may also come from
files in a secrets directory (Kubernetes Secret volume), one file per setting named like the
variable, e.g. ``lensnet_kafka__sasl_password`` (a missing folder is ignored).

No other module reads the environment: they receive the pieces of :class:`Settings` they need.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from consumer.constants import HIGH_CADENCE_FIELDS, SITES
from consumer.exceptions import ConfigError

ENV_PREFIX = "LENSNET_"
ENV_DELIMITER = "__"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Frozen):
    """How to reach the Kafka cluster (shared by the daemon, replay, subscribers and tools)."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="host:port[,host:port...]")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "lensnet"
    #: How long a command waits for the cluster to answer before it gives up (exit 3); a
    #: refused connection, unknown host or refused login gives up at once.
    connect_timeout_s: float = Field(10.0, gt=0, le=600)
    #: Extra librdkafka properties passed verbatim, e.g. {"socket.keepalive.enable": "true"}.
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("bootstrap_servers")
    @classmethod
    def _has_port(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    def client_config(self) -> dict[str, Any]:
        """librdkafka configuration common to producers, consumers and the admin client."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        optional: dict[str, Any] = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": (
                self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            ),
        }
        config.update({k: str(v) for k, v in optional.items() if v is not None})
        config.update(self.extra)
        return config


class TopicSettings(_Frozen):
    """Topic names and layout. The three photometry topics must share one partition count."""

    photometry_prefix: str = "kmtnet.photometry."
    alerts: str = "lensnet.alerts"
    dead_letter: str = "lensnet.deadletter"
    #: Updates of followed events (refits, anomalies), keyed by star like alerts.
    events: str = "lensnet.events"
    #: Partitions of every photometry topic (co-partitioned: star -> same partition number).
    partitions: int = Field(12, ge=1, le=10_000)
    alert_partitions: int = Field(3, ge=1, le=10_000)
    #: Copies of each partition; None: 3 where the cluster has three brokers or more, else 1.
    replication_factor: int | None = Field(None, ge=1, le=7)
    #: Replicas that must hold a write before it counts (the producers use acks=all); None:
    #: 2 when the topic has three copies or more (one broker may fail), else 1.
    min_insync_replicas: int | None = Field(None, ge=1, le=7)
    #: Retention of photometry topics in ms; -1 keeps everything so state can be rebuilt.
    photometry_retention_ms: int = -1

    @model_validator(mode="after")
    def _enough_replicas(self) -> TopicSettings:
        rf, isr = self.replication_factor, self.min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(
                f"{env_name(('topics', 'min_insync_replicas'))}={isr} exceeds "
                f"{env_name(('topics', 'replication_factor'))}={rf}: no write could succeed"
            )
        return self

    def photometry(self, site: str) -> str:
        """Topic carrying one site's photometry, e.g. ``kmtnet.photometry.ctio``."""
        if site not in SITES:
            raise ConfigError(f"unknown site {site!r}; expected one of {', '.join(SITES)}")
        return f"{self.photometry_prefix}{site.lower()}"

    def photometry_topics(self) -> tuple[str, ...]:
        """All per-site photometry topics in :data:`consumer.constants.SITES` order."""
        return tuple(self.photometry(site) for site in SITES)


class ProducerSettings(_Frozen):
    """Producer tuning for replay and alert publication."""

    linger_ms: int = Field(20, ge=0)
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    #: Observations per photometry message (amortises per-message and per-record Avro cost).
    batch_observations: int = Field(2000, ge=1, le=100_000)


class ConsumerSettings(_Frozen):
    """Consumer group behaviour of the daemon."""

    group_id: str = "lensnet-daemon"
    #: Messages per ``consume(num_messages=...)`` call.
    batch_messages: int = Field(500, ge=1, le=100_000)
    #: Messages of one topic-partition held back while another site's topic catches up in
    #: time (:mod:`consumer.pipeline.align`); past it the topic-partition is paused until it drains.
    max_held_messages: int = Field(5000, ge=1)
    #: Longest wait for a message when none is waiting (a batch is what has arrived: the
    #: loop never waits for a full batch).
    poll_timeout_s: float = Field(1.0, gt=0)
    session_timeout_ms: int = Field(45_000, ge=1000)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"


class StateSettings(_Frozen):
    """Per-partition star state: rolling buffers, checkpoints."""

    #: Checkpoints (``partition-<n>/state.ckpt``) and, when memory-mapped, the arena files.
    directory: Path = Path("lensnet-state")
    capacity_per_site: int = Field(1500, ge=10, le=100_000)
    #: Stars per partition; observations of further new stars go to the dead-letter topic.
    max_stars_per_partition: int = Field(2_000_000, ge=1)
    #: Keep the observation arena (the full buffers) in memory-mapped files under
    #: ``directory``, on local disk: the cold tier of the two-tier store.
    memory_mapped: bool = True
    #: With ``memory_mapped``, the latest points per star and site also kept in RAM, the hot
    #: tier the rising test reads (``consumer/state/tiers.py``); at least the rules' ``n``,
    #: or the test reads the cold tier. 0: one tier (every read goes to the arena).
    hot_points_per_site: int = Field(10, ge=0)
    #: Seconds between checkpoints of every owned partition (also written on revoke and exit).
    checkpoint_interval_s: float = Field(300.0, gt=0)
    #: Partitions are also checkpointed once those owned took this many photometry rows since
    #: their last checkpoints, all together, replayed rows included: a restart then replays
    #: at most about this many, and a crash loop makes progress (each life checkpoints what
    #: it replayed). A checkpoint writes a partition's whole store, so one waits for a row per
    #: thirty records it holds (``consumer.state.partitions``). 0: by time only.
    checkpoint_rows: int = Field(500_000, ge=0)


class RuleSettings(_Frozen):
    """One AlertFinder rule: ``k`` of the last ``n`` points ``n_sigma`` high, then Δχ²."""

    k: int = Field(5, ge=1)
    n: int = Field(5, ge=1)
    n_sigma: float = Field(3.0, ge=0)
    dchi2_min: float = Field(250.0, ge=0)
    #: Points averaged per dataset before the height test (1: each point alone, the published
    #: rule; :class:`consumer.alertfinder.api.TriggerRule`).
    average: int = Field(1, ge=1)
    #: The baseline of the rising test is the median of each dataset's oldest 1 / this of its
    #: points (1: all of them, the published rule), so a rise that holds half of a short
    #: dataset does not lift its own baseline.
    baseline_part: int = Field(1, ge=1)


class LowCadenceRuleSettings(RuleSettings):
    """The low-cadence default: 10 of the last 10 points, Δχ² >= 400."""

    k: int = Field(10, ge=1)
    n: int = Field(10, ge=1)
    dchi2_min: float = Field(400.0, ge=0)


class TriggerSettings(_Frozen):
    """AlertFinder rules per field cadence (Kim et al. 2018)."""

    #: Fields observed at high cadence (KMTNet BLG01-03 and their overlaps BLG41-43).
    high_cadence_fields: tuple[int, ...] = HIGH_CADENCE_FIELDS
    high_cadence: RuleSettings = RuleSettings()
    low_cadence: LowCadenceRuleSettings = LowCadenceRuleSettings()
    #: Recompute a star's cached median flux once this fraction of new points arrived.
    baseline_refresh_fraction: float = Field(0.1, gt=0)
    #: The trigger runs on the stars a window of this many days of observation time (aligned
    #: on HJD multiples) changed, once the window closes: when rows of a later window arrive
    #: for the partition. A replayed season is so evaluated as the survey would have been,
    #: window by window, however it is cut into batches.
    evaluation_days: float = Field(0.25, gt=0)
    #: Also evaluate the open window whenever a partition has read everything there is (live
    #: data: no waiting for the window to close). Off, every decision is a function of the
    #: input alone (the fault tests compare runs that way); on, the latency is a batch's.
    evaluate_when_caught_up: bool = True


class VettingSettings(_Frozen):
    """Candidate vetting before LensNet (paper §3.3), per evaluation window (one batch)."""

    #: A candidate with at least ``cluster_min_neighbours`` other candidates within
    #: ``cluster_radius_px`` on the same field and chip is rejected (a varying bright star).
    cluster_radius_px: float = Field(20.0, gt=0)
    cluster_min_neighbours: int = Field(5, ge=1)
    #: Candidates kept per field and per chip, lowest star ids first (paper: 20 000 and 800).
    max_per_field: int = Field(20_000, ge=1)
    max_per_chip: int = Field(800, ge=1)


class OpinionSettings(_Frozen):
    """The novelty network and the second opinion, run on every alert LensNet decides."""

    #: False: alerts carry neither (``novelty`` and ``second_opinion`` are null).
    enabled: bool = True
    #: Novelty artifact (file, or a folder with its card); None = the shipped one.
    novelty_path: Path | None = None
    #: Second-opinion artifact (file or folder); None = the shipped one.
    second_opinion_path: Path | None = None


class BinarySettings(_Frozen):
    """The binary-lens posterior flow (seed paper 002), run on every alert LensNet decides."""

    #: False: alerts carry no ``binary_posterior`` (null).
    enabled: bool = True
    #: Flow artifact (file); None = the one shipped in ``model/artifacts/binary_flow``.
    path: Path | None = None
    #: Posterior draws per alert (1 000: ~50 ms of one core, BENCHMARKS.md), seeded by the
    #: alert id.
    samples: int = Field(1000, ge=100, le=100_000)


class ModelSettings(_Frozen):
    """LensNet scoring of vetted candidates."""

    #: TorchScript artifact; None = the one shipped in ``model/artifacts``.
    path: Path | None = None
    batch_size: int = Field(32, ge=1, le=4096)
    #: torch intra-op threads (one per core the pod is given).
    threads: int = Field(1, ge=1, le=256)
    #: Publish an alert when the binary score reaches this (0.45 balanced, 0.955 high purity).
    alert_threshold: float = Field(0.45, ge=0, le=1)
    #: A candidate LensNet rejected is scored again only after this many days of new data.
    rescore_days: float = Field(1.0, ge=0)
    #: A candidate at or above alert_threshold alerts only if a point-lens fit of its light
    #: curve peaks at least this magnified; otherwise it counts as rejected (scored again after
    #: rescore_days). Shallow rises of variable stars are what it stops
    #: (consumer/pointlens/gate.py). 0: off.
    min_peak_magnification: float = Field(2.0, ge=0)
    #: Candidates a batch selects before LensNet scores them without waiting for the batch's
    #: end: bounds the memory they hold (~150 KB each at most). Which stars alert, and when,
    #: does not depend on it (a later candidate of a star that alerted meanwhile is skipped
    #: either way); a larger value gives the model larger batches.
    max_pending: int = Field(512, ge=1)
    #: The two other light-curve networks on each alert (consumer/pipeline/second_opinion.py).
    opinions: OpinionSettings = OpinionSettings()
    #: The binary-lens posterior on each alert (consumer/pipeline/binary_posterior.py).
    binary: BinarySettings = BinarySettings()


class EventsSettings(_Frozen):
    """The event model: the point-lens fit on every alert and the updates of followed events
    (:mod:`consumer.pointlens`, :mod:`consumer.pipeline.event_model`)."""

    #: Fit every alert and follow alerted stars on the events topic; False: alerts only.
    enabled: bool = True
    #: An update at least this often (days of data) while an event is followed.
    every_days: float = Field(1.0, gt=0)
    #: The predicted peak must move by more than its last published 1-sigma and at least this.
    min_shift_days: float = Field(0.05, ge=0)
    #: Stop following this many days after the fitted event is back at baseline (A < 1.01).
    stop_days: float = Field(10.0, ge=0)
    #: ... or once this many days passed since the alert (a non-event never returns to a point
    #: lens's baseline).
    max_days: float = Field(150.0, gt=0)
    #: Anomaly (consumer.pointlens.anomaly): a run of points deviating by n_sigma scaled
    #: errors, same sign, at least min_run long across two or more sites, min_run_one_site
    #: from one site, ending within the last recent_days of data.
    anomaly_n_sigma: float = Field(2.5, gt=0)
    anomaly_min_run: int = Field(3, ge=1)
    anomaly_min_run_one_site: int = Field(3, ge=1)
    anomaly_recent_days: float = Field(3.0, gt=0)
    #: A run at this level is refitted without its points and tested again (SIGNALMEN's
    #: second look); at or above anomaly_n_sigma: off.
    anomaly_suspect_sigma: float = Field(1.5, gt=0)


class DaemonSettings(_Frozen):
    """The ``lensnet run`` process."""

    #: exactly_once: alerts and offsets in one Kafka transaction; at_least_once: produce,
    #: flush, then commit (a crash in between republishes; alert ids are deterministic).
    mode: Literal["exactly_once", "at_least_once"] = "exactly_once"
    #: Stable per instance (StatefulSet pod name): the transactional.id is ``<group>-<id>``.
    instance_id: str = Field("0", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    http_host: str = "0.0.0.0"
    #: /healthz, /readyz, /metrics; 0 picks a free port; -1 disables the server.
    http_port: int = Field(8080, ge=-1, le=65535)
    #: /healthz fails when the main loop made no progress for this long.
    health_max_silence_s: float = Field(120.0, gt=0)
    #: Longest the drain after SIGTERM may take before the process gives up and exits.
    drain_timeout_s: float = Field(30.0, gt=0)
    #: Attempts of retryable start-up work (broker reachable, topics, model file).
    startup_attempts: int = Field(10, ge=1)
    #: Exit 0 once every owned partition is consumed up to the high watermark seen at start
    #: (replays, demos and tests); False runs forever.
    stop_at_end: bool = False
    transaction_timeout_ms: int = Field(60_000, ge=1000)
    #: Wire format of published alerts: ``single-object`` (Avro single-object encoding, no
    #: registry needed) or ``confluent`` (magic byte 0, the registry's 4-byte schema id, the
    #: Avro body: what Kafka's standard tooling reads; needs ``schema_registry.url``).
    alert_format: Literal["single-object", "confluent"] = "single-object"
    #: Static group membership (``group.instance.id`` = ``<group>-<instance_id>``): a restarted
    #: instance takes its partitions back without a rebalance, within the session timeout.
    static_membership: bool = True


class SchemaRegistrySettings(_Frozen):
    """A Confluent-compatible schema registry, for alerts in the Confluent wire format.

    ``url`` is the base of the Confluent API: ``http://host:8081`` for Confluent's or
    Karapace, ``http://host:8080/apis/ccompat/v7`` for Apicurio Registry.
    """

    url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    #: Subject the alert schema is registered under; default ``<alert topic>-value`` (the
    #: TopicNameStrategy of Confluent's serializers).
    subject: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0, le=600)


class LogSettings(_Frozen):
    """structlog output: JSON lines off a TTY, a readable console renderer on one."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    """Everything the broker can be told. Frozen: build it once, pass it down."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        secrets_nested_delimiter=ENV_DELIMITER,
        secrets_dir_missing="ok",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    producer: ProducerSettings = ProducerSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    log: LogSettings = LogSettings()
    state: StateSettings = StateSettings()
    trigger: TriggerSettings = TriggerSettings()
    vetting: VettingSettings = VettingSettings()
    model: ModelSettings = ModelSettings()
    events: EventsSettings = EventsSettings()
    daemon: DaemonSettings = DaemonSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()

    @model_validator(mode="after")
    def _registry_for_confluent(self) -> Settings:
        if self.daemon.alert_format == "confluent" and self.schema_registry.url is None:
            raise ValueError(
                f"{env_name(('daemon', 'alert_format'))}=confluent needs "
                f"{env_name(('schema_registry', 'url'))}"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Secret files named like the variables (kafka__sasl_password), one per setting.
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            NestedSecretsSettingsSource(file_secret_settings),
        )


def env_name(location: tuple[str | int, ...]) -> str:
    """Environment variable that sets the value at a pydantic error location."""
    return ENV_PREFIX + ENV_DELIMITER.join(str(part).upper() for part in location)


def load_settings(
    secrets_dir: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build :class:`Settings` from the environment, an optional secrets folder and overrides.

    Raises :class:`ConfigError` with one line per bad setting, each naming its variable.
    """
    kwargs: dict[str, Any] = dict(overrides or {})
    if secrets_dir is not None:
        kwargs["_secrets_dir"] = secrets_dir
    try:
        return Settings(**kwargs)
    except ValidationError as error:
        problems = "; ".join(
            f"{env_name(issue['loc'])}: {issue['msg']}"
            if issue["loc"]
            else issue["msg"].removeprefix("Value error, ")
            for issue in error.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from error
