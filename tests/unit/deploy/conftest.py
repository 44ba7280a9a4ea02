"""Parsed deployment files, and what the code says each service needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import unavailable

DEPLOY = Path(__file__).parents[3] / "deploy"


def render(kustomization: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, parsed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        unavailable("kubectl is not installed (Debian: apt-get install kubernetes-client)")
    done = subprocess.run([str(kubectl), "kustomize", str(kustomization)], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="session", params=["base", "overlays/minikube"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Every resource of the base, then of the minikube overlay."""
    return render(DEPLOY / "k8s" / request.param)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """deploy/compose.yaml, with YAML merge keys resolved."""
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded
