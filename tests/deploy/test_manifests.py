"""The Kubernetes manifests (deploy/kubernetes) against the schemas and against the daemon.

Rendered with kustomize, offline. Every object validates strictly against the Kubernetes
schemas of two minor versions, or against its CRD (Strimzi, KEDA, prometheus-operator); every
LENSNET_* name the manifests set is a field of :class:`~consumer.settings.Settings`, and what
they set loads; probes, ports, topics, scaling and the drain agree with what the daemon does.
"""

from __future__ import annotations

import copy
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from consumer.cli import DEFAULT_SECRETS_DIR
from consumer.edge.topics import replication, required_topics
from consumer.health import Health, HealthServer, Metrics
from consumer.settings import ENV_PREFIX, DaemonSettings, Settings, load_settings
from tests.deploy.conftest import KUSTOMIZATIONS
from tests.deploy.kube import (
    Manifest,
    container_env,
    find,
    find_all,
    mounted_files,
    pod_spec,
    schema_errors,
    settings_env_names,
    volume_mounts,
)

#: The oldest and the newest Kubernetes minor version the manifests are checked against.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
DAEMONS = ("base", "overlays/example")
POD_NAME = "lensnet-0"
#: Seconds the kubelet should leave after the drain timeout (exit, log flush).
GRACE_MARGIN_S = 10

Rendered = dict[str, list[Manifest]]


def _workloads(objects: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """(workload, its first container) of each StatefulSet and Job."""
    for obj in objects:
        if obj["kind"] in ("StatefulSet", "Job"):
            yield obj, pod_spec(obj)["containers"][0]


def _daemon(objects: list[Manifest]) -> tuple[Manifest, dict[str, Any], dict[str, Any]]:
    statefulset = find(objects, "StatefulSet", "lensnet")
    pod = pod_spec(statefulset)
    return statefulset, pod, find_container(pod, "lensnet")


def find_container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    """The container called ``name`` of a pod spec."""
    (container,) = [c for c in pod["containers"] if c["name"] == name]
    return container


def _secrets_dir(container: dict[str, Any]) -> str:
    """The folder the daemon reads secret files from: ``--secrets-dir`` or the CLI default."""
    args = [str(arg) for arg in container.get("args", [])]
    if "--secrets-dir" in args:
        return args[args.index("--secrets-dir") + 1]
    return str(DEFAULT_SECRETS_DIR)


def _secret_files(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    folder = PurePosixPath(_secrets_dir(container))
    return [
        PurePosixPath(path).name
        for path in mounted_files(pod, container)
        if PurePosixPath(path).parent == folder
    ]


def _load(
    objects: list[Manifest],
    workload: Manifest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """Settings the workload's container builds: its LENSNET_* variables and secret files."""
    pod = pod_spec(workload)
    container = pod["containers"][0]
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in container_env(objects, container, POD_NAME).items():
        if name.startswith(ENV_PREFIX):
            monkeypatch.setenv(name, value)
    secrets = tmp_path / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for name in _secret_files(pod, container):
        (secrets / name).write_text(f"from-file-{name}")
    return load_settings(secrets)


def _port(container: dict[str, Any], port: int | str) -> int:
    """A container port given by number or by name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


# --- rendering and schemas -----------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_matches_its_schema(
    rendered: Rendered,
    crd_schemas: dict[tuple[str, str, str], dict[str, Any]],
    kustomization: str,
    version: str,
) -> None:
    objects = rendered[kustomization]
    assert objects, f"{kustomization} renders nothing"
    problems = [p for obj in objects for p in schema_errors(obj, version, crd_schemas)]
    assert not problems, "\n".join(problems)


def _mutations() -> dict[str, tuple[str, Callable[[Manifest], None], str]]:
    """Broken copies of rendered objects and what the validation must say about them."""

    def unknown_probe_field(obj: Manifest) -> None:
        pod_spec(obj)["containers"][0]["livenessProbe"]["httpGett"] = {"path": "/healthz"}

    def no_selector(obj: Manifest) -> None:
        del obj["spec"]["selector"]

    def no_target(obj: Manifest) -> None:
        del obj["spec"]["scaleTargetRef"]

    def text_partitions(obj: Manifest) -> None:
        obj["spec"]["partitions"] = "twelve"

    def unknown_topic_field(obj: Manifest) -> None:
        obj["spec"]["retention"] = "forever"

    def unknown_metadata_field(obj: Manifest) -> None:
        obj["metadata"]["label"] = {"a": "b"}

    return {
        "unknown field": ("StatefulSet", unknown_probe_field, "httpGett"),
        "missing required": ("StatefulSet", no_selector, "'selector' is a required property"),
        "CRD missing required": ("ScaledObject", no_target, "'scaleTargetRef' is a required"),
        "CRD wrong type": ("KafkaTopic", text_partitions, "'twelve' is not of type 'integer'"),
        "CRD unknown field": ("KafkaTopic", unknown_topic_field, "retention"),
        "CRD metadata": ("ServiceMonitor", unknown_metadata_field, "label"),
    }


@pytest.mark.parametrize("case", sorted(_mutations()))
def test_schema_validation_catches_mistakes(
    rendered: Rendered, crd_schemas: dict[tuple[str, str, str], dict[str, Any]], case: str
) -> None:
    kind, mutate, expected = _mutations()[case]
    broken = copy.deepcopy(find_all(rendered["overlays/example"], kind)[0])
    mutate(broken)
    problems = schema_errors(broken, KUBERNETES_VERSIONS[-1], crd_schemas)
    assert any(expected in problem for problem in problems), problems


def test_unknown_kinds_have_no_schema(
    crd_schemas: dict[tuple[str, str, str], dict[str, Any]],
) -> None:
    unknown = {"apiVersion": "example.org/v1", "kind": "Thing", "metadata": {"name": "x"}}
    assert schema_errors(unknown, KUBERNETES_VERSIONS[-1], crd_schemas) == [
        "Thing/x: no schema for example.org/v1 Thing"
    ]


# --- settings names ------------------------------------------------------------------------


def test_settings_env_names_walk_nested_models() -> None:
    names = settings_env_names()
    assert {
        "LENSNET_KAFKA",
        "LENSNET_KAFKA__SASL_PASSWORD",
        "LENSNET_DAEMON__INSTANCE_ID",
        "LENSNET_TRIGGER__HIGH_CADENCE__K",
        "LENSNET_TRIGGER__LOW_CADENCE__DCHI2_MIN",
    } <= names
    assert "LENSNET_KAFKA__PASSWORD" not in names
    assert "LENSNET_TRIGGER__HIGH_CADENCE__KK" not in names


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_lensnet_variable_is_a_setting(rendered: Rendered, kustomization: str) -> None:
    objects = rendered[kustomization]
    names = settings_env_names()
    set_here = {
        key for config_map in find_all(objects, "ConfigMap") for key in config_map.get("data", {})
    }
    for _, container in _workloads(objects):
        set_here |= set(container_env(objects, container, POD_NAME))
    lensnet = {name for name in set_here if name.upper().startswith(ENV_PREFIX)}
    assert lensnet, "no LENSNET_ variable found"
    assert not lensnet - names, f"not settings: {sorted(lensnet - names)}"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_secret_file_is_a_setting(rendered: Rendered, kustomization: str) -> None:
    names = settings_env_names()
    for workload, container in _workloads(rendered[kustomization]):
        files = _secret_files(pod_spec(workload), container)
        assert files, f"{kustomization}: no secret file mounted in {_secrets_dir(container)}"
        # pydantic-settings matches secret files case-insensitively; ours are lower case.
        assert all(name == name.lower() for name in files), files
        assert {name.upper() for name in files} <= names, files


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_settings_load(
    rendered: Rendered, kustomization: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered[kustomization]
    for workload, container in _workloads(objects):
        settings = _load(objects, workload, tmp_path, monkeypatch)
        assert _secrets_dir(container) == str(DEFAULT_SECRETS_DIR)
        if workload["kind"] == "StatefulSet":
            # The transactional.id is <group>-<instance>: unique and stable per pod.
            assert settings.daemon.instance_id == POD_NAME
        if settings.kafka.security_protocol.startswith("SASL"):
            assert settings.kafka.sasl_password is not None
            assert settings.kafka.sasl_password.get_secret_value() == (
                "from-file-lensnet_kafka__sasl_password"
            )


# --- the daemon's StatefulSet --------------------------------------------------------------


@pytest.mark.parametrize("kustomization", DAEMONS)
def test_probes_and_metrics_reach_the_daemon(
    rendered: Rendered, kustomization: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered[kustomization]
    statefulset, _, container = _daemon(objects)
    settings = _load(objects, statefulset, tmp_path, monkeypatch)
    port = settings.daemon.http_port
    assert port == DaemonSettings().http_port
    paths = {}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert _port(container, get["port"]) == port, probe
        paths[probe] = get["path"]
    assert paths == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    annotations = statefulset["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/scrape" in annotations:
        assert int(annotations["prometheus.io/port"]) == port
        paths["annotation"] = annotations["prometheus.io/path"]
    service = find(objects, "Service", statefulset["spec"]["serviceName"])
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for monitor in find_all(objects, "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            target = service_ports[endpoint["port"]]["targetPort"]
            assert _port(container, target) == port
            paths[f"ServiceMonitor {endpoint['port']}"] = endpoint["path"]

    # The daemon's own HTTP server answers each path (503 is an answer; 404 is not).
    with HealthServer("127.0.0.1", 0, Health(), Metrics(), max_silence_s=60.0) as server:
        for source, path in paths.items():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}") as reply:
                    status = reply.status
            except urllib.error.HTTPError as error:
                status = error.code
            assert status in (200, 503), f"{source}: GET {path} -> {status}"


@pytest.mark.parametrize("kustomization", DAEMONS)
def test_drain_fits_in_the_grace_period(
    rendered: Rendered, kustomization: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered[kustomization]
    statefulset, pod, _ = _daemon(objects)
    settings = _load(objects, statefulset, tmp_path, monkeypatch)
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= settings.daemon.drain_timeout_s + GRACE_MARGIN_S


@pytest.mark.parametrize("kustomization", DAEMONS)
def test_state_lives_on_the_pods_own_volume(
    rendered: Rendered, kustomization: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered[kustomization]
    statefulset, _, container = _daemon(objects)
    settings = _load(objects, statefulset, tmp_path, monkeypatch)
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = dict(volume_mounts(container))
    state_mounts = {name for name, path in mounts.items() if path == str(settings.state.directory)}
    assert state_mounts & claims, f"{settings.state.directory} is not a volumeClaimTemplate"
    retention = statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    # Every file a setting names (state, CA, certificates, model) is on a mounted volume.
    kafka, model = settings.kafka, settings.model
    for path in (kafka.ssl_ca_location, kafka.ssl_certificate_location, model.path):
        if path is not None:
            assert any(PurePosixPath(path).is_relative_to(p) for p in mounts.values()), path


@pytest.mark.parametrize("kustomization", DAEMONS)
def test_one_stable_pod_per_instance(
    rendered: Rendered, kustomization: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered[kustomization]
    statefulset, _, container = _daemon(objects)
    settings = _load(objects, statefulset, tmp_path, monkeypatch)
    (instance,) = [v for v in container["env"] if v["name"] == "LENSNET_DAEMON__INSTANCE_ID"]
    assert instance["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    service = find(objects, "Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    replicas = statefulset["spec"].get("replicas")
    if find_all(objects, "ScaledObject"):
        assert replicas is None, "KEDA owns the replica count"
    else:
        assert 1 <= replicas <= settings.topics.partitions
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "Service", "NetworkPolicy"):
        (obj,) = find_all(objects, kind)
        selector = obj["spec"].get("podSelector", obj["spec"].get("selector"))
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    assert find(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


# --- every workload ------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_workloads_are_locked_down(rendered: Rendered, kustomization: str) -> None:
    for workload, container in _workloads(rendered[kustomization]):
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        tmp = [name for name, path in volume_mounts(container) if path == "/tmp"]
        assert tmp, "/tmp must be mounted"
        assert "emptyDir" in volumes[tmp[0]], "/tmp must be a writable emptyDir"
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_network_policy_allows_kafka_dns_and_scraping_only(
    rendered: Rendered, kustomization: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered[kustomization]
    for workload, _ in _workloads(objects):
        settings = _load(objects, workload, tmp_path, monkeypatch)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        (policy,) = [
            p
            for p in find_all(objects, "NetworkPolicy")
            if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        egress = {
            (port.get("protocol", "TCP"), port["port"])
            for rule in policy["spec"]["egress"]
            for port in rule["ports"]
        }
        kafka_ports = {
            ("TCP", int(server.rpartition(":")[2]))
            for server in settings.kafka.bootstrap_servers.split(",")
        }
        assert kafka_ports <= egress
        assert ("UDP", 53) in egress
        ingress = {
            port["port"] for rule in policy["spec"].get("ingress", []) for port in rule["ports"]
        }
        expected = {settings.daemon.http_port} if workload["kind"] == "StatefulSet" else set()
        assert ingress == expected


# --- Kafka: topics, user, autoscaling, replay ----------------------------------------------


def test_kafka_topics_are_the_ones_the_daemon_needs(
    rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered["overlays/example"]
    statefulset, _, _ = _daemon(objects)
    settings = _load(objects, statefulset, tmp_path, monkeypatch)
    topics = {t["spec"]["topicName"]: t for t in find_all(objects, "KafkaTopic")}
    specs = required_topics(settings.topics)
    assert set(topics) == {spec.name for spec in specs}
    for spec in specs:
        topic = topics[spec.name]["spec"]
        assert topic["partitions"] == spec.partitions, spec.name
        assert topic["replicas"] == spec.replication_factor, spec.name
        config = {key: str(value) for key, value in topic.get("config", {}).items()}
        assert spec.config.items() <= config.items(), spec.name
        # What `lensnet topics create` would make on the production cluster (3+ brokers).
        min_insync = replication(3, spec.replication_factor, spec.min_insync_replicas)[1]
        assert config["min.insync.replicas"] == str(min_insync), spec.name
    photometry = {
        topics[name]["spec"]["partitions"] for name in settings.topics.photometry_topics()
    }
    assert photometry == {settings.topics.partitions}
    for name in settings.topics.photometry_topics():
        assert str(topics[name]["spec"]["config"]["retention.ms"]) == "-1"
    # One cluster: the one the user and the scaler talk to.
    clusters = {
        t["metadata"]["labels"]["strimzi.io/cluster"] for t in find_all(objects, "KafkaTopic")
    }
    assert clusters == {find(objects, "KafkaUser")["metadata"]["labels"]["strimzi.io/cluster"]}
    assert all(
        settings.kafka.bootstrap_servers.startswith(f"{c}-kafka-bootstrap") for c in clusters
    )


def test_kafka_user_may_do_what_the_daemon_does(
    rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered["overlays/example"]
    statefulset, _, _ = _daemon(objects)
    settings = _load(objects, statefulset, tmp_path, monkeypatch)
    user = find(objects, "KafkaUser")
    assert user["metadata"]["name"] == settings.kafka.sasl_username
    assert settings.kafka.sasl_mechanism is not None
    assert user["spec"]["authentication"]["type"] == settings.kafka.sasl_mechanism.lower()

    def allowed(kind: str, name: str, operation: str) -> bool:
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            prefix = resource.get("patternType", "literal") == "prefix"
            matches = name.startswith(resource["name"]) if prefix else name == resource["name"]
            if resource["type"] == kind and matches and operation in acl["operations"]:
                return True
        return False

    group = settings.consumer.group_id
    assert all(allowed("topic", t, "Read") for t in settings.topics.photometry_topics())
    assert allowed("topic", settings.topics.alerts, "Write")
    assert allowed("topic", settings.topics.dead_letter, "Write")
    assert allowed("topic", settings.topics.events, "Write")
    assert allowed("topic", settings.topics.events, "Read")  # read back on assignment
    assert allowed("group", group, "Read")
    assert allowed("transactionalId", f"{group}-{settings.daemon.instance_id}", "Write")


def test_keda_scales_the_statefulset_up_to_the_partition_count(
    rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered["overlays/example"]
    statefulset, _, container = _daemon(objects)
    settings = _load(objects, statefulset, tmp_path, monkeypatch)
    env = container_env(objects, container, POD_NAME)
    scaled = find(objects, "ScaledObject")["spec"]
    target = scaled["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "StatefulSet",
        statefulset["metadata"]["name"],
    )
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    assert scaled["maxReplicaCount"] == settings.topics.partitions
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    # Read from the daemon container's environment: the same servers and group.
    assert meta["bootstrapServersFromEnv"] == "LENSNET_KAFKA__BOOTSTRAP_SERVERS"
    assert meta["consumerGroupFromEnv"] == "LENSNET_CONSUMER__GROUP_ID"
    assert env[meta["bootstrapServersFromEnv"]] == settings.kafka.bootstrap_servers
    assert env[meta["consumerGroupFromEnv"]] == settings.consumer.group_id
    assert "topic" not in meta, "the lag of all three photometry topics"
    assert int(meta["lagThreshold"]) > 0
    assert meta["offsetResetPolicy"] == settings.consumer.auto_offset_reset
    assert meta["allowIdleConsumers"] == "false"
    tls = settings.kafka.security_protocol in ("SSL", "SASL_SSL")
    assert meta.get("tls", "disable") == ("enable" if tls else "disable")
    keda_sasl = {None: "none", "PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256"}
    keda_sasl["SCRAM-SHA-512"] = "scram_sha512"
    assert meta.get("sasl", "none") == keda_sasl[settings.kafka.sasl_mechanism]
    auth = find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    for variable in auth.get("env", []):
        assert variable["containerName"] == container["name"]
        assert variable["name"] in env
    secrets = {ref["parameter"]: ref for ref in auth["secretTargetRef"]}
    volumes = {v["name"]: v for v in pod_spec(statefulset)["volumes"]}
    password = volumes["secrets"]["projected"]["sources"][0]["secret"]
    assert secrets["password"]["name"] == password["name"]
    assert secrets["ca"]["name"] == volumes["kafka-ca"]["secret"]["secretName"]


def test_replay_job_reads_the_season_into_the_daemons_topics(
    rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replay_objects = rendered["replay"]
    job = find(replay_objects, "Job", "lensnet-replay")
    pod = pod_spec(job)
    container = pod["containers"][0]
    args = container["args"]
    assert args[args.index("replay") + 1] == "/season"
    assert pod["restartPolicy"] == "Never"
    mounts = dict(volume_mounts(container))
    season = {v["name"]: v for v in pod["volumes"]}[
        next(name for name, path in mounts.items() if path == "/season")
    ]
    claim = season["persistentVolumeClaim"]["claimName"]
    assert find(replay_objects, "PersistentVolumeClaim", claim)
    replay = _load(replay_objects, job, tmp_path / "replay", monkeypatch)
    daemon_objects = rendered["base"]
    daemon = _load(daemon_objects, _daemon(daemon_objects)[0], tmp_path / "daemon", monkeypatch)
    assert replay.topics == daemon.topics
    assert replay.kafka.bootstrap_servers == daemon.kafka.bootstrap_servers
