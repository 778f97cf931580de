"""Fixtures of the deploy tests: the offline tools and each kustomization, rendered once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.kube import DEPLOY, Manifest, deploy_tool, load_crds, render

#: Every kustomization an operator applies (components are rendered through the example).
KUSTOMIZATIONS = ("base", "overlays/example", "replay")


@pytest.fixture(scope="session")
def kustomize() -> Path:
    """kustomize, built from source once per machine (deploy/tools.sh)."""
    return deploy_tool("kustomize")


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """Strict schemas of the custom resources, from the real CRDs (deploy/tools.sh crds)."""
    return load_crds(deploy_tool("crds"))


@pytest.fixture(scope="session")
def rendered(kustomize: Path) -> dict[str, list[Manifest]]:
    """``kustomize build`` of each kustomization, by its folder under deploy/kubernetes."""
    return {name: render(kustomize, DEPLOY / "kubernetes" / name) for name in KUSTOMIZATIONS}
