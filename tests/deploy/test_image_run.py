"""The image, built and run for real: the daemon in it publishes what the venv's daemon does.

``deploy/image/image.sh build`` builds the image with podman (cached: seconds when only code
changed; ``make test`` builds it before pytest). Everything is run as the base manifests say:
the replay Job's and the StatefulSet's args, user and group, read-only root filesystem, no
capabilities, ``/tmp`` as an empty tmpfs, the state volume and the secrets directory mounted
where the pod mounts them (with the files the projected Secret makes), and the settings of
their ConfigMaps plus :func:`overrides`, the few that cannot be the same on one machine with
one broker. The containers use the host's network and reach the session's broker on 127.0.0.1.

The scenario (once per module, in :func:`scenario`): ``topics create`` and ``replay /season``
from the image; ``lensnet run --until-end`` from the image and, on the same input, from the
venv, each publishing to its own alert topic; then the image's daemon started again on the same
state volume as the StatefulSet starts it, asked for its probes, and stopped like the kubelet
stops a pod (``podman stop`` sends SIGTERM, then SIGKILL after the grace period).

A machine where podman cannot work fails here with the build script's message: nothing is
skipped.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from consumer.edge.alert import alert_to_record
from consumer.edge.subscribe import AlertSubscriber
from consumer.settings import KafkaSettings
from model.simulate import SimulationConfig, write_season
from tests.deploy.kube import DEPLOY, REPO, Manifest, container_env, find, pod_spec

# The image build runs inside the first test's setup when pytest runs alone on a machine
# without the cached image (minutes cold); make test builds it beforehand.
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(2400)]

IMAGE_SH = DEPLOY / "image" / "image.sh"
LENSNET = Path(sys.executable).parent / "lensnet"
#: The season: enough events and artefacts for a few dozen alerts, small enough for seconds.
SEASON = SimulationConfig(n_stars=60, seed=3)
RUN_TIMEOUT_S = 600
#: Run inside a container started like the daemon's: what it holds and how it runs.
INSPECT = """
import json, os, pathlib
from importlib import metadata
from consumer.settings import load_settings

def writable(path):
    try:
        pathlib.Path(path, ".probe").write_text("x")
        pathlib.Path(path, ".probe").unlink()
        return True
    except OSError:
        return False

mounts = {line.split()[1]: line.split()[3].split(",") for line in open("/proc/self/mounts")}
settings = load_settings(pathlib.Path("/var/run/secrets/lensnet"))
secrets = {
    "lensnet_kafka__sasl_password": settings.kafka.sasl_password,
    "lensnet_kafka__ssl_key_password": settings.kafka.ssl_key_password,
}
print(json.dumps({
    "uid": os.getuid(),
    "gid": os.getgid(),
    "read_only_root": "ro" in mounts["/"],
    "writable": {p: writable(p) for p in ("/var/lib/lensnet/state", "/tmp")},
    "versions": {d.metadata["Name"]: d.version for d in metadata.distributions()},
    "secrets": {k: v.get_secret_value() if v else None for k, v in secrets.items()},
    "state_directory": str(settings.state.directory),
}))
"""


def load_wheelhouse() -> ModuleType:
    """deploy/image/wheelhouse.py (a script, not a package) as a module."""
    spec = importlib.util.spec_from_file_location("wheelhouse", DEPLOY / "image" / "wheelhouse.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """podman with the project's configuration (deploy/image/containers.conf)."""
    return subprocess.run(
        [str(IMAGE_SH), "podman", *args], capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a run (structlog, one object per line)."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


@dataclass
class Pod:
    """How a workload of the manifests runs one container, translated to ``podman run``."""

    manifest: Manifest
    objects: list[Manifest]
    pod_name: str

    @property
    def spec(self) -> dict[str, Any]:
        return pod_spec(self.manifest)

    @property
    def container(self) -> dict[str, Any]:
        container: dict[str, Any] = self.spec["containers"][0]
        return container

    @property
    def user(self) -> str:
        context = self.spec["securityContext"]
        assert context["runAsNonRoot"] is True
        return f"{context['runAsUser']}:{context['runAsGroup']}"

    @property
    def annotations(self) -> dict[str, str]:
        annotations: dict[str, str] = self.manifest["spec"]["template"]["metadata"].get(
            "annotations", {}
        )
        return annotations

    @property
    def mounts(self) -> dict[str, str]:
        """Volume name -> mount path."""
        return {m["name"]: m["mountPath"] for m in self.container.get("volumeMounts", [])}

    def env(self, overrides: dict[str, str]) -> dict[str, str]:
        """The container's environment (ConfigMaps, then ``env``), then ``overrides``."""
        env = container_env(self.objects, self.container, self.pod_name)
        return {**env, **overrides}

    def secret_files(self, volume: str) -> list[str]:
        """File names a projected Secret volume puts in the container."""
        spec = next(v for v in self.spec["volumes"] if v["name"] == volume)
        return [
            item["path"]
            for source in spec["projected"]["sources"]
            for item in source.get("secret", {}).get("items", [])
        ]

    def run_options(self, name: str, host_dirs: dict[str, Path]) -> list[str]:
        """``podman run`` options: security context and volumes, as the kubelet would set them.

        ``host_dirs`` maps each persistent or secret volume to a host folder; an ``emptyDir``
        becomes a tmpfs. A volume of another kind fails: the test must learn to mount it.
        """
        security = self.container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        options = ["--name", name, "--network", "host", "--user", self.user]
        # Only the volumes are writable: podman's own tmpfs on /tmp, /run and /var/tmp under
        # --read-only are turned off, and the pod's emptyDir is mounted instead.
        options += ["--read-only", "--read-only-tmpfs=false"]
        options += ["--cap-drop", "all", "--security-opt", "no-new-privileges"]
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        claims = {
            t["metadata"]["name"] for t in self.manifest["spec"].get("volumeClaimTemplates", [])
        }
        for volume, path in self.mounts.items():
            kind = volumes.get(volume, {})
            if "emptyDir" in kind:
                options += ["--tmpfs", f"{path}:rw,mode=1777"]
            elif volume in claims or "persistentVolumeClaim" in kind or "projected" in kind:
                read_only = "projected" in kind or kind.get("persistentVolumeClaim", {}).get(
                    "readOnly", False
                )
                options += ["--volume", f"{host_dirs[volume]}:{path}{':ro' if read_only else ''}"]
            else:
                pytest.fail(f"{volume}: the test does not know how to mount {sorted(kind)}")
        return options


@pytest.fixture(scope="module")
def image(rendered: dict[str, list[Manifest]]) -> str:
    """ID of the image the base manifests name, built (or found up to date) by image.sh."""
    name = str(
        find(rendered["base"], "StatefulSet", "lensnet")["spec"]["template"]["spec"]["containers"][
            0
        ]["image"]
    )
    env = {**os.environ, "IMAGE": name, "PYTHON": sys.executable}
    done = subprocess.run(
        [str(IMAGE_SH), "build"], env=env, capture_output=True, text=True, timeout=2400
    )
    if done.returncode != 0:
        pytest.fail(f"the image could not be built or podman cannot run here:\n{done.stderr}")
    print(f"\n{done.stderr.strip()}")
    # Run what this build made, by ID: another clone on the machine may retag the name.
    built = (REPO / "build" / "image" / "image.id").read_text().strip().removeprefix("sha256:")
    tagged = podman("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()
    assert built == tagged, f"{name} is not what was just built"
    return built


@dataclass
class Run:
    """One finished process: its exit code, log and wall time."""

    returncode: int
    log: str
    seconds: float

    @property
    def events(self) -> list[dict[str, Any]]:
        return log_events(self.log)

    def tail(self) -> str:
        return self.log[-4000:]


@dataclass
class Scenario:
    """What the module's runs produced (see the module docstring)."""

    image: str
    statefulset: Pod
    alerts_image: list[dict[str, Any]] = field(default_factory=list)
    alerts_venv: list[dict[str, Any]] = field(default_factory=list)
    alerts_after_restart: int = 0
    replay: Run | None = None
    image_run: Run | None = None
    venv_run: Run | None = None
    restart: Run | None = None
    stop_seconds: float = 0.0
    probes: dict[str, tuple[int, str]] = field(default_factory=dict)
    inspected: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)


def overrides(prefix: str, bootstrap: str, port: int) -> dict[str, str]:
    """Settings that cannot be the manifests' here: one local broker, a shared host network,
    and fresh topic and group names so that runs never meet. ``evaluate_when_caught_up`` is
    off so that decisions depend on the input alone and two runs can be compared exactly."""
    return {
        "LENSNET_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "LENSNET_TOPICS__REPLICATION_FACTOR": "1",
        "LENSNET_TOPICS__MIN_INSYNC_REPLICAS": "1",
        "LENSNET_TOPICS__PHOTOMETRY_PREFIX": f"{prefix}.photometry.",
        "LENSNET_TOPICS__ALERTS": f"{prefix}.alerts.image",
        "LENSNET_TOPICS__DEAD_LETTER": f"{prefix}.deadletter",
        "LENSNET_TOPICS__EVENTS": f"{prefix}.events.image",
        "LENSNET_CONSUMER__GROUP_ID": f"{prefix}-image",
        "LENSNET_DAEMON__HTTP_PORT": str(port),
        "LENSNET_TRIGGER__EVALUATE_WHEN_CAUGHT_UP": "false",
    }


def env_options(env: dict[str, str]) -> list[str]:
    return [option for key, value in sorted(env.items()) for option in ("--env", f"{key}={value}")]


def run_to_end(command: list[str], env: dict[str, str] | None = None) -> Run:
    started = time.monotonic()
    done = subprocess.run(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    return Run(done.returncode, done.stdout, time.monotonic() - started)


def read_alerts(kafka: KafkaSettings, topic: str) -> list[dict[str, Any]]:
    """Every committed alert of a topic as its Avro record, without the publication time."""
    with AlertSubscriber(kafka, topic, start="earliest", stop_at_end=True) as subscriber:
        records = [alert_to_record(alert) for alert in subscriber]
        assert not subscriber.skipped, subscriber.skipped
    for record in records:
        del record["published_at"]
    return sorted(records, key=lambda record: str(record["alert_id"]))


def wait_ready(port: int, path: str, process: subprocess.Popen[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the daemon exited before it was ready"
        try:
            if http_get(port, path)[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    pytest.fail(f"{path} not ready after {timeout_s} s")


@pytest.fixture(scope="module")
def scenario(
    image: str,
    rendered: dict[str, list[Manifest]],
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenario]:
    base, replay = rendered["base"], rendered["replay"]
    statefulset = find(base, "StatefulSet", "lensnet")
    daemon = Pod(statefulset, base, f"{statefulset['metadata']['name']}-0")
    job = Pod(find(replay, "Job", "lensnet-replay"), replay, "lensnet-replay-x")
    assert job.container["image"] == daemon.container["image"]
    result = Scenario(image=image, statefulset=daemon)
    work = tmp_path_factory.mktemp("image")
    season = work / "season"
    write_season(SEASON, season, progress=False)
    # Volumes: state writable by the pod's group (fsGroup), Secret files root-owned and
    # world-readable (a projected volume's default mode 0644), the season read-only.
    state, secrets = work / "state", work / "secrets"
    state.mkdir()
    secrets.mkdir()
    os.chown(state, 10001, 10001)
    for name in daemon.secret_files("secrets"):
        result.secrets[name] = f"{name}-{uuid.uuid4().hex[:8]}"
        (secrets / name).write_text(result.secrets[name])
        (secrets / name).chmod(0o644)
    host_dirs = {"state": state, "secrets": secrets, "season": season}
    prefix = f"image-{uuid.uuid4().hex[:8]}"
    port = free_port()
    settings = overrides(prefix, kafka_bootstrap, port)
    env = daemon.env(settings)
    names: list[str] = []

    def podman_run(pod: Pod, env: dict[str, str], args: list[str], *entrypoint: str) -> list[str]:
        names.append(f"{prefix}-{len(names)}")
        options = pod.run_options(names[-1], host_dirs)
        options += [*env_options(env), *(("--entrypoint", *entrypoint) if entrypoint else ())]
        return [str(IMAGE_SH), "podman", "run", "--rm", *options, image, *args]

    try:
        # Topics as the README makes them without Strimzi, then the replay Job.
        topics = run_to_end(podman_run(daemon, env, ["topics", "create"]))
        assert topics.returncode == 0, topics.tail()
        result.replay = run_to_end(podman_run(job, job.env(settings), job.container["args"]))
        assert result.replay.returncode == 0, result.replay.tail()

        # What the image holds and how it runs: versions, user, writable paths, secrets.
        inspecting = podman_run(daemon, env, ["-c", INSPECT], "python")
        inspected = run_to_end(inspecting)
        assert inspected.returncode == 0, inspected.tail()
        result.inspected = json.loads(inspected.log.strip().splitlines()[-1])

        # The daemon from the image to the end of the input, then from the venv.
        run_args = [*daemon.container["args"], "--until-end"]
        result.image_run = run_to_end(podman_run(daemon, env, run_args))
        assert result.image_run.returncode == 0, result.image_run.tail()
        venv_env = {k: v for k, v in os.environ.items() if not k.startswith("LENSNET_")}
        venv_env.update(env)
        venv_env.pop("NUMBA_CACHE_DIR")  # the container's /tmp path
        venv_env.update(
            {
                "LENSNET_TOPICS__ALERTS": f"{prefix}.alerts.venv",
                "LENSNET_TOPICS__EVENTS": f"{prefix}.events.venv",
                "LENSNET_CONSUMER__GROUP_ID": f"{prefix}-venv",
                "LENSNET_STATE__DIRECTORY": str(work / "venv-state"),
                "LENSNET_DAEMON__HTTP_PORT": "-1",
            }
        )
        venv_args = [str(LENSNET), "--secrets-dir", str(secrets)]
        created = run_to_end([*venv_args, "topics", "create"], venv_env)
        assert created.returncode == 0, created.tail()
        result.venv_run = run_to_end([*venv_args, "run", "--until-end"], venv_env)
        assert result.venv_run.returncode == 0, result.venv_run.tail()
        kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
        result.alerts_image = read_alerts(kafka, f"{prefix}.alerts.image")
        result.alerts_venv = read_alerts(kafka, f"{prefix}.alerts.venv")

        # The StatefulSet's pod restarted: same volume, same name, its own args; probes; stop.
        result.restart, result.stop_seconds, result.probes = restart(
            podman_run(daemon, env, daemon.container["args"]), names[-1], daemon, port
        )
        result.alerts_after_restart = len(read_alerts(kafka, f"{prefix}.alerts.image"))
        yield result
    finally:
        for name in names:
            podman("rm", "--force", "--ignore", name)


def restart(
    run: list[str], name: str, pod: Pod, port: int
) -> tuple[Run, float, dict[str, tuple[int, str]]]:
    """Start the daemon like the StatefulSet, read its probes once ready, stop it like the
    kubelet (SIGTERM, SIGKILL after the grace period); its run, the stop's seconds, probes."""
    liveness = pod.container["livenessProbe"]["httpGet"]["path"]
    readiness = pod.container["readinessProbe"]["httpGet"]["path"]
    metrics = pod.annotations["prometheus.io/path"]
    grace = int(pod.spec["terminationGracePeriodSeconds"])
    started = time.monotonic()
    process = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(port, readiness, process, timeout_s=240)
        probes = {path: http_get(port, path) for path in (liveness, readiness, metrics)}
        stopping = time.monotonic()
        stopped = podman("stop", "--time", str(grace), name, timeout=grace + 60)
        stop_seconds = time.monotonic() - stopping
        assert stopped.returncode == 0, stopped.stderr
        log, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return Run(process.returncode, log, time.monotonic() - started), stop_seconds, probes


# --- the checks -----------------------------------------------------------------------------


def test_image_holds_exactly_the_lock_of_the_venvs_versions(scenario: Scenario) -> None:
    wheelhouse = load_wheelhouse()
    lock = {}
    for line in (
        (REPO / "build" / "image" / "wheelhouse" / "requirements.txt").read_text().splitlines()
    ):
        if line and not line.startswith("#"):
            name, _, version = line.split()[0].partition("==")
            lock[name] = version
    if not os.environ.get("TORCH_INDEX"):
        assert lock == wheelhouse.runtime_pins(), "the lock is not the venv's runtime closure"
    canonical = {
        wheelhouse.canonicalize_name(name): version
        for name, version in scenario.inspected["versions"].items()
    }
    project = canonical.pop("lensnet-broker")
    assert project == wheelhouse.installed_version("lensnet-broker")
    assert canonical == lock, "the image's environment differs from the lock"


def test_runs_as_the_manifests_user_with_only_the_volumes_writable(scenario: Scenario) -> None:
    facts = scenario.inspected
    assert f"{facts['uid']}:{facts['gid']}" == scenario.statefulset.user
    assert facts["read_only_root"] is True
    assert facts["writable"] == {"/var/lib/lensnet/state": True, "/tmp": True}
    assert facts["state_directory"] == scenario.statefulset.mounts["state"]


def test_settings_come_from_the_secrets_directory(scenario: Scenario) -> None:
    assert scenario.inspected["secrets"] == scenario.secrets


def test_replay_job_fills_the_topics(scenario: Scenario) -> None:
    assert scenario.replay is not None
    print(f"\nreplay from the image: {scenario.replay.seconds:.1f} s")
    found = re.search(r"(\d+) stars, (\d+) observations", scenario.replay.log)
    sent = re.search(r"^sent (\d+) ", scenario.replay.log, re.M)
    assert found is not None, scenario.replay.tail()
    assert sent is not None, scenario.replay.tail()
    assert int(found[1]) == SEASON.n_stars
    assert int(sent[1]) == int(found[2]) > 0


#: LensNet's probabilities of one alert may differ in the last bits between two runs of the same
#: daemon on the same input: a candidate is scored in a chunk of the candidates pending with it,
#: padded to the chunk's longest light curve (model.classify.score), and which candidates are
#: pending together depends on how the consumed batches fell. Seen once: p_no 5.9277136e-06
#: against 5.9277022e-06 (relative 2e-6). Every other field, and every decision, is exact.
SCORE_RTOL = 1e-4
SCORE_ATOL = 1e-6
#: The other models' numbers (point-lens fit, novelty, second opinion) may differ in their last
#: bits too (another BLAS and reduction order), which an ill-conditioned fit's covariance
#: amplifies (seen: 1.5e-6 relative on the errors of an unconstrained blend flux). 1e-4 of a
#: value is still far below any fit's own uncertainty.
MODEL_RTOL = 1e-4
#: A weakly constrained fit lies in a flat valley of chi^2 where the last bits move the
#: optimum (seen: a source flux 1.7e-4 apart, a t0 error of 58 d 2e-4 apart): a value with its
#: own uncertainty (``x`` beside ``x_err``) may differ by ERROR_SHARE of it, and an uncertainty
#: by ERROR_SHARE of itself. Far below anything a follow-up decision uses.
ERROR_SHARE = 1e-2
#: Alert fields computed by models, compared so; every other field must be equal.
MODEL_FIELDS = ("event_model", "novelty", "second_opinion")


def nearly_equal(
    mine: Any, theirs: Any, atol: float = SCORE_ATOL, rtol: float = MODEL_RTOL
) -> bool:
    """Equal structure and values, floats within ``rtol`` or ``atol`` (see ERROR_SHARE)."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        if mine.keys() != theirs.keys():
            return False
        for key in mine:
            error = mine.get(f"{key}_err")
            if key.endswith("_err"):
                tolerances = (SCORE_ATOL, ERROR_SHARE)
            elif isinstance(error, float) and math.isfinite(error):
                tolerances = (max(SCORE_ATOL, ERROR_SHARE * abs(error)), MODEL_RTOL)
            else:
                tolerances = (SCORE_ATOL, MODEL_RTOL)
            if not nearly_equal(mine[key], theirs[key], *tolerances):
                return False
        return True
    if isinstance(mine, list) and isinstance(theirs, list):
        return len(mine) == len(theirs) and all(
            nearly_equal(a, b, atol, rtol) for a, b in zip(mine, theirs, strict=True)
        )
    if isinstance(mine, float) and isinstance(theirs, float):
        return math.isclose(mine, theirs, rel_tol=rtol, abs_tol=atol)
    return bool(mine == theirs)


def split_probabilities(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """An alert record without LensNet's probabilities, and those probabilities by name."""
    scores = dict(record["lensnet"])
    site_scores = scores.pop("site_scores")
    probabilities = {k: float(scores.pop(k)) for k in ("p_event", "p_no", "p_maybe", "p_yes")}
    probabilities.update({f"site_scores.{k}": float(v) for k, v in sorted(site_scores.items())})
    return {**record, "lensnet": scores}, probabilities


def score_differences(mine: dict[str, Any], theirs: dict[str, Any]) -> tuple[list[str], float]:
    """Fields of two alert records that differ, and the largest probability difference.

    Everything must be equal but LensNet's probabilities, which must be within SCORE_RTOL /
    SCORE_ATOL of each other, and the other models' numbers (MODEL_FIELDS, MODEL_RTOL).
    """
    rest_mine, probabilities_mine = split_probabilities(mine)
    rest_theirs, probabilities_theirs = split_probabilities(theirs)
    problems = [
        key
        for key in rest_mine
        if not (
            nearly_equal(rest_mine[key], rest_theirs.get(key))
            if key in MODEL_FIELDS
            else rest_mine[key] == rest_theirs.get(key)
        )
    ]
    if probabilities_mine.keys() != probabilities_theirs.keys():
        return [*problems, "lensnet.site_scores sites"], 0.0
    largest = 0.0
    for key, value in probabilities_mine.items():
        other = probabilities_theirs[key]
        largest = max(largest, abs(value - other))
        if not math.isclose(value, other, rel_tol=SCORE_RTOL, abs_tol=SCORE_ATOL):
            problems.append(f"lensnet.{key}: {value!r} != {other!r}")
    return problems, largest


def test_score_differences_tolerate_only_the_last_bits_of_probabilities() -> None:
    scores: dict[str, Any] = {
        "model_version": "v1",
        "p_event": 0.9,
        "p_no": 5.927713573328219e-06,
        "p_maybe": 0.5,
        "p_yes": 0.4,
        "site_scores": {"CTIO": 0.8},
    }
    alert: dict[str, Any] = {"alert_id": "KMT-1-2461108.22576", "trigger_hjd": 2461108.22576}
    alert["lensnet"] = scores
    close = {**alert, "lensnet": {**scores, "p_no": 5.927702204644447e-06}}
    assert score_differences(alert, close)[0] == []
    apart = {**alert, "lensnet": {**scores, "p_event": 0.91}}
    assert score_differences(alert, apart)[0] == ["lensnet.p_event: 0.9 != 0.91"]
    later = {**alert, "trigger_hjd": 2461108.5}
    assert score_differences(alert, later)[0] == ["trigger_hjd"]
    other_site = {**alert, "lensnet": {**scores, "site_scores": {"SSO": 0.8}}}
    assert score_differences(alert, other_site)[0] == ["lensnet.site_scores sites"]
    fit = {"t0": 2461189.0039573736, "converged": True, "datasets": [{"fs": 1457.2951309517427}]}
    fitted = {**alert, "event_model": fit}
    last_bits = {"t0": 2461189.003957373, "converged": True, "datasets": [{"fs": 1457.29513095}]}
    assert score_differences(fitted, {**fitted, "event_model": last_bits})[0] == []
    loose = {**alert, "event_model": {"datasets": [{"fs": 5280.46, "fs_err": 800.0}]}}
    looser = {**alert, "event_model": {"datasets": [{"fs": 5281.36, "fs_err": 800.0}]}}
    assert score_differences(loose, looser)[0] == []
    moved = {**fit, "datasets": [{"fs": 1458.0}]}
    assert score_differences(fitted, {**fitted, "event_model": moved})[0] == ["event_model"]
    vague = {**fit, "t0_err": 58.16382144424476}
    vaguer = {**fit, "t0_err": 58.17724174697943}
    assert (
        score_differences({**alert, "event_model": vague}, {**alert, "event_model": vaguer})[0]
        == []
    )
    not_converged = {**fit, "converged": False}
    assert score_differences(fitted, {**fitted, "event_model": not_converged})[0] == ["event_model"]


def test_alerts_from_the_image_equal_the_venv_daemons(scenario: Scenario) -> None:
    assert scenario.image_run is not None
    assert scenario.venv_run is not None
    print(
        f"\n{len(scenario.alerts_image)} alerts; run --until-end from the image "
        f"{scenario.image_run.seconds:.1f} s, from the venv {scenario.venv_run.seconds:.1f} s"
    )
    assert len(scenario.alerts_image) >= 5, "too few alerts for the comparison to mean much"
    # The decisions: which stars alerted, and when (the id is the star and the trigger time).
    assert [a["alert_id"] for a in scenario.alerts_image] == [
        a["alert_id"] for a in scenario.alerts_venv
    ]
    largest = 0.0
    for mine, theirs in zip(scenario.alerts_image, scenario.alerts_venv, strict=True):
        problems, difference = score_differences(mine, theirs)
        assert problems == [], f"{mine['alert_id']}: {problems}"
        largest = max(largest, difference)
    print(f"largest difference of a LensNet probability: {largest:.3g}")
    stopped = [e for e in scenario.image_run.events if e.get("event") == "stopped"]
    assert stopped
    assert stopped[-1]["alerts_published"] == len(scenario.alerts_image)


def test_restart_restores_every_partition_from_the_state_volume(scenario: Scenario) -> None:
    assert scenario.restart is not None
    opened = [e for e in scenario.restart.events if e.get("event") == "partition opened"]
    partitions = int(scenario.statefulset.env({})["LENSNET_TOPICS__PARTITIONS"])
    assert sorted(e["partition"] for e in opened) == list(range(partitions))
    assert {e["source"] for e in opened} == {"checkpoint"}, scenario.restart.tail()
    assert sum(e["stars"] for e in opened) == SEASON.n_stars
    assert scenario.alerts_after_restart == len(scenario.alerts_image), "alerted again"


def test_probes_answer_from_the_container(scenario: Scenario) -> None:
    liveness, readiness, metrics = scenario.probes.values()
    assert liveness == (200, "ok\n")
    assert readiness == (200, "ok\n")
    status, text = metrics
    assert status == 200
    # The daemon's own families (their values move with input; this run has none new).
    for family in ("lensnet_observations_total", "lensnet_transactions_total", "lensnet_stars"):
        assert f"# TYPE {family} " in text, family


def test_sigterm_drains_and_exits_0_within_the_grace_period(scenario: Scenario) -> None:
    run = scenario.restart
    assert run is not None
    grace = scenario.statefulset.spec["terminationGracePeriodSeconds"]
    print(f"\nSIGTERM to exit: {scenario.stop_seconds:.1f} s (grace period {grace} s)")
    assert run.returncode == 0, run.tail()
    assert scenario.stop_seconds < grace
    events = [e.get("event") for e in run.events]
    assert "signal received, draining" in events
    assert events[-1] == "stopped", run.tail()
