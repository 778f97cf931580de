"""Offline checks of Kubernetes manifests: rendering, schemas, and the settings they set.

Nothing here talks to a cluster. Kustomize and the CRDs come from ``deploy/tools.sh`` (built and
fetched once per machine into a cache); Kubernetes' own JSON schemas from the package
kubernetes-validate, which ships them for each Kubernetes minor version ("local-strict": every
object rejects fields it does not define, as ``kubectl apply`` does with server-side field
validation).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from pydantic import BaseModel
from referencing import Registry, Resource

from consumer.settings import ENV_DELIMITER, ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TOOLS_SH = DEPLOY / "tools.sh"

Manifest = dict[str, Any]

_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
_OBJECT_META = f"{_DEFINITIONS_ID}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


class ToolError(RuntimeError):
    """A deploy tool could not be built or run."""


def deploy_tool(name: str) -> Path:
    """Path that ``deploy/tools.sh NAME`` prints (building or fetching it on first use)."""
    try:
        done = subprocess.run(
            [str(TOOLS_SH), name], capture_output=True, text=True, timeout=1200, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise ToolError(f"deploy/tools.sh {name}: timed out after {error.timeout} s") from error
    if done.returncode != 0:
        raise ToolError(f"deploy/tools.sh {name} failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def render(kustomize: Path, kustomization: Path) -> list[Manifest]:
    """Objects of ``kustomize build`` of one kustomization folder."""
    done = subprocess.run(
        [str(kustomize), "build", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ToolError(f"kustomize build {kustomization} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def describe(manifest: Manifest) -> str:
    """``Kind/name`` of an object, for messages."""
    return f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"


def group_version(manifest: Manifest) -> tuple[str, str]:
    """API group ("" for the core group) and version of an object."""
    group, _, version = str(manifest["apiVersion"]).rpartition("/")
    return group, version


# --- schemas -------------------------------------------------------------------------------


def _schema_folder(kubernetes_version: str) -> Path:
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    folder = Path(str(root)) / f"v{kubernetes_version}-local-strict"
    if not folder.is_dir():
        known = sorted(p.name for p in Path(str(root)).iterdir())
        raise ToolError(f"kubernetes-validate has no schemas for {kubernetes_version}: {known}")
    return folder


@functools.cache
def _kubernetes_registry(kubernetes_version: str) -> Registry[Any]:
    definitions = json.loads((_schema_folder(kubernetes_version) / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


def kubernetes_schema(kubernetes_version: str, manifest: Manifest) -> dict[str, Any] | None:
    """Strict JSON schema of a built-in kind, or None when Kubernetes does not define it."""
    group, version = group_version(manifest)
    # Files are named <kind>[-<first label of the group>]-<version>.json, e.g.
    # networkpolicy-networking-v1.json for networking.k8s.io/v1.
    parts = [str(manifest["kind"]).lower(), group.split(".")[0], version]
    path = _schema_folder(kubernetes_version) / ("-".join(p for p in parts if p) + ".json")
    if not path.is_file():
        return None
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def _strict(node: Any) -> Any:
    """A CRD's OpenAPI v3 schema as JSON schema, rejecting fields it does not define.

    The API server prunes unknown fields of custom resources (and ``kubectl apply`` fails on
    them, with server-side field validation); ``nullable`` is OpenAPI's way to allow null.
    """
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "properties" in node:
        out["properties"] = {key: _strict(value) for key, value in node["properties"].items()}
        if "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out[key] = _strict(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            out[key] = [_strict(sub) for sub in node[key]]
    if node.get("nullable") and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    return out


def load_crds(folder: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Strict schema of each served (group, version, kind) of the CRD files in ``folder``."""
    schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served", False):
                continue
            schema = _strict(version["schema"]["openAPIV3Schema"])
            # metadata is the usual ObjectMeta, checked against Kubernetes' definition of it.
            schema.setdefault("properties", {})["metadata"] = {"$ref": _OBJECT_META}
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            schemas[(spec["group"], version["name"], spec["names"]["kind"])] = schema
    return schemas


def schema_errors(
    manifest: Manifest,
    kubernetes_version: str,
    crds: Mapping[tuple[str, str, str], dict[str, Any]],
) -> list[str]:
    """Every schema violation of one object (an empty list when it is valid)."""
    group, version = group_version(manifest)
    schema = crds.get((group, version, str(manifest["kind"])))
    if schema is None:
        schema = kubernetes_schema(kubernetes_version, manifest)
    if schema is None:
        return [f"{describe(manifest)}: no schema for {manifest['apiVersion']} {manifest['kind']}"]
    validator = Draft202012Validator(schema, registry=_kubernetes_registry(kubernetes_version))
    problems = [
        f"{describe(manifest)}: {error.json_path}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]
    if not manifest.get("metadata", {}).get("name"):
        problems.append(f"{describe(manifest)}: metadata.name is required")
    return problems


# --- settings ------------------------------------------------------------------------------


def settings_env_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> set[str]:
    """Every environment variable that sets a field of ``model``, at any depth.

    A nested model can be set whole (``LENSNET_KAFKA`` as JSON) or field by field
    (``LENSNET_KAFKA__BOOTSTRAP_SERVERS``), so both levels are names.
    """
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        names.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_env_names(annotation, f"{name}{ENV_DELIMITER}")
    return names


# --- pod specs -----------------------------------------------------------------------------


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    """Pod spec of a workload (StatefulSet, Deployment, Job, ...)."""
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def find(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of ``kind`` (and ``name``) in a rendering."""
    found = [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    if len(found) != 1:
        raise LookupError(f"expected one {kind}{'/' + name if name else ''}, found {len(found)}")
    return found[0]


def find_all(objects: list[Manifest], kind: str) -> list[Manifest]:
    """Every object of ``kind`` in a rendering."""
    return [obj for obj in objects if obj["kind"] == kind]


def container_env(
    objects: list[Manifest], container: Mapping[str, Any], pod_name: str
) -> dict[str, str]:
    """The environment a container starts with: its ConfigMaps, then its own ``env``.

    ``fieldRef: metadata.name`` resolves to ``pod_name``; other sources are left out.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is None:
            continue
        config_map = find(objects, "ConfigMap", ref["name"])
        env.update({key: str(value) for key, value in config_map.get("data", {}).items()})
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = _expand(str(variable["value"]), env)
        elif variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[variable["name"]] = pod_name
    return env


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` references to variables defined before."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def mounted_files(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """Files that Secret and ConfigMap volumes put in the container: path -> source key.

    Only volumes that list their ``items`` (or projected sources that do) are known here.
    """
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    files: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        sources: list[Mapping[str, Any]] = []
        for kind in ("secret", "configMap"):
            if kind in volume:
                sources.append(volume[kind])
        for projected in volume.get("projected", {}).get("sources", []):
            sources.extend(projected[kind] for kind in ("secret", "configMap") if kind in projected)
        for source in sources:
            for item in source.get("items", []):
                files[f"{mount['mountPath'].rstrip('/')}/{item['path']}"] = item["key"]
    return files


def volume_mounts(container: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(volume name, mount path) of each mount of a container."""
    for mount in container.get("volumeMounts", []):
        yield mount["name"], mount["mountPath"]
