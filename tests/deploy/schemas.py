"""The published schemas the deployment files are checked against, all from installed packages (no network):

- Compose: the Compose Specification's JSON schema as vendored by check-jsonschema (``vendor.compose-spec``,
  the package's pinned version in pyproject.toml);
- Kubernetes: kubernetes-validate's bundled schemas of each Kubernetes release (strict: unknown fields fail);
- KEDA's ScaledObject: the openAPIV3Schema of KEDA's own CRD, vendored in docker/k8s/schemas/ (its source and
  version are in that folder's README).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
# The oldest and the newest Kubernetes release whose schemas kubernetes-validate bundles that we check against.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


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


VENDOR = Path(__file__).resolve().parent / "vendor"
KEDA_SCHEMAS = {
    "ScaledObject": VENDOR / "keda-scaledobjects-v1alpha1.json",
    "TriggerAuthentication": VENDOR / "keda-triggerauthentications-v1alpha1.json",
}

# The Redis scaler's metadata keys (KEDA v2.20.2, pkg/scalers/redis_scaler.go): each may be given as is, and
# those KEDA also resolves from the target's environment as `<key>FromEnv`. Values are strings (a CRD map of
# strings); the numeric and boolean ones must parse as such.
_REDIS_FROM_ENV = (
    "address",
    "addresses",
    "username",
    "password",
    "host",
    "hosts",
    "port",
    "ports",
    "sentinelUsername",
    "sentinelPassword",
    "sentinelMaster",
)
_REDIS_PLAIN = ("unsafeSsl", "listLength", "activationListLength", "listName", "databaseIndex", "enableTLS")
REDIS_TRIGGER_METADATA = {
    "type": "object",
    "required": ["listName"],
    "additionalProperties": False,
    "properties": {
        **{key: {"type": "string", "minLength": 1} for key in _REDIS_FROM_ENV},
        **{f"{key}FromEnv": {"type": "string", "minLength": 1} for key in _REDIS_FROM_ENV},
        "listName": {"type": "string", "minLength": 1},
        "listLength": {"type": "string", "pattern": r"^[0-9]+$"},
        "activationListLength": {"type": "string", "pattern": r"^[0-9]+$"},
        "databaseIndex": {"type": "string", "pattern": r"^[0-9]+$"},
        "enableTLS": {"type": "string", "enum": ["true", "false"]},
        "unsafeSsl": {"type": "string", "enum": ["true", "false"]},
    },
}
assert set(REDIS_TRIGGER_METADATA["properties"]) >= set(_REDIS_PLAIN)


def strict(schema: Any) -> Any:
    """A CRD schema as the API server checks it with strict field validation: unknown fields refused where
    the schema lists properties and neither allows others nor preserves unknown fields."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def keda_errors(document: dict[str, Any]) -> list[str]:
    """What is wrong with a KEDA resource: against its CRD's schema (strict), and a Redis trigger's metadata
    against the scaler's keys. Empty when it is valid."""
    import jsonschema

    kind = document.get("kind", "")
    schema = strict(json.loads(KEDA_SCHEMAS[kind].read_text()))
    schema.pop("$comment", None)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(document)
    ]
    if document.get("apiVersion") != "keda.sh/v1alpha1":
        errors.append(f"apiVersion {document.get('apiVersion')!r} is not keda.sh/v1alpha1")
    if kind == "ScaledObject":
        for index, trigger in enumerate(document.get("spec", {}).get("triggers", [])):
            if trigger.get("type") == "redis":
                errors += [
                    f"spec/triggers/{index}/metadata: {error.message}"
                    for error in jsonschema.Draft7Validator(REDIS_TRIGGER_METADATA).iter_errors(
                        trigger.get("metadata", {})
                    )
                ]
    return errors


def kubernetes_errors(document: dict[str, Any], version: str) -> list[str]:
    """What is wrong with a resource of Kubernetes' own kinds, against that release's schema (strict)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


def manifest_errors(document: dict[str, Any], version: str) -> list[str]:
    if str(document.get("apiVersion", "")).startswith("keda.sh/"):
        return keda_errors(document)
    return kubernetes_errors(document, version)
