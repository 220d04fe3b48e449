"""The published schemas the deployment files are checked against, all from installed packages (no network):

- Compose: the Compose Specification's JSON schema as vendored by check-jsonschema (``vendor.compose-spec``,
  the package's pinned version in pyproject.toml);
- Kubernetes: kubernetes-validate's bundled schemas of each Kubernetes release (strict: unknown fields fail);
- KEDA's ScaledObject: the openAPIV3Schema of KEDA's own CRD, vendored in docker/k8s/schemas/ (its source and
  version are in that folder's README).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
KUBERNETES_VERSION = "1.33.0"


def tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema against the Compose Specification's schema it ships."""
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
