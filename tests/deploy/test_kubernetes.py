"""docker/k8s/: every manifest against its published schema (Kubernetes' own kinds with kubernetes-validate's
bundled schemas, strict; KEDA's with its CRDs' schemas, vendored), and what the manifests must promise."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawljobs.config import Settings
from crawljobs.queue import QueueKeys
from tests.deploy.schemas import DOCKER, K8S, KUBERNETES_VERSIONS, manifest_errors

MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def everything() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource, by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in MANIFESTS:
        for document in documents(path):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in found, f"{key} is defined twice"
            found[key] = document
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_each_manifest_matches_its_schema(path: Path, version: str) -> None:
    for document in documents(path):
        errors = manifest_errors(document, version)
        assert not errors, f"{path.name} {document['kind']}/{document['metadata']['name']}: {errors}"


def _break(
    resources: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str], change: Any
) -> dict[str, Any]:
    document = copy.deepcopy(resources[key])
    change(document)
    return document


@pytest.mark.parametrize(
    ("key", "what", "change"),
    [
        (
            ("Deployment", "crawljobs-worker"),
            "a misspelt field",
            lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSecond=60),
        ),
        (
            ("Deployment", "crawljobs-api"),
            "a probe port that is neither a number nor a name",
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"].update(
                port=[1]
            ),
        ),
        (("ScaledObject", "crawljobs-worker"), "a misspelt field", lambda d: d["spec"].update(minReplicas=1)),
        (
            ("ScaledObject", "crawljobs-worker"),
            "a misspelt Redis scaler key",
            lambda d: d["spec"]["triggers"][0]["metadata"].update(listname="x"),
        ),
        (
            ("ScaledObject", "crawljobs-worker"),
            "a replica count as text",
            lambda d: d["spec"].update(maxReplicaCount="20"),
        ),
        (
            ("TriggerAuthentication", "crawljobs-redis"),
            "a secret reference without its key",
            lambda d: d["spec"]["secretTargetRef"][0].pop("key"),
        ),
    ],
)
def test_a_broken_manifest_fails_its_schema(key: tuple[str, str], what: str, change: Any) -> None:
    broken = _break(everything(), key, change)
    for version in KUBERNETES_VERSIONS:
        assert manifest_errors(broken, version), what


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in MANIFESTS)
    assert [image["name"] for image in kustomization["images"]] == ["crawljobs"]


def pod(resources: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    return resources[("Deployment", name)]["spec"]["template"]["spec"]


def test_a_deployment_per_role_with_its_command_and_probes() -> None:
    resources = everything()
    for role in ("api", "sweeper", "worker"):
        spec = pod(resources, f"crawljobs-{role}")
        [container] = spec["containers"]
        assert container["image"] == "crawljobs" and container["args"] == [role]
        refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {"crawljobs"}
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
    api = pod(resources, "crawljobs-api")["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for role in ("sweeper", "worker"):
        probe = pod(resources, f"crawljobs-{role}")["containers"][0]["livenessProbe"]
        assert probe["exec"]["command"] == ["crawljobs", "health", role]
    job = resources[("Job", "crawljobs-migrate")]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["migrate"]
    service = resources[("Service", "crawljobs-api")]["spec"]
    labels = resources[("Deployment", "crawljobs-api")]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()


def test_the_worker_drains_within_its_grace_and_has_a_memory_dev_shm() -> None:
    resources = everything()
    worker = pod(resources, "crawljobs-worker")
    defaults = Settings()
    assert (
        worker["terminationGracePeriodSeconds"]
        >= max(defaults.download_timeout, defaults.shutdown_grace_seconds) + 10
    )
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert f"{worker['terminationGracePeriodSeconds']}s" == compose["services"]["worker"]["stop_grace_period"]
    volumes = {volume["name"]: volume for volume in worker["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in worker["containers"][0]["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "replicas" not in resources[("Deployment", "crawljobs-worker")]["spec"]  # KEDA sets it


def test_keda_scales_the_workers_on_the_queue_lists() -> None:
    resources = everything()
    scaled = resources[("ScaledObject", "crawljobs-worker")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "crawljobs-worker"
    assert scaled["minReplicaCount"] >= 1
    assert (
        scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
            "stabilizationWindowSeconds"
        ]
        >= 60
    )
    prefix = Settings().queue_prefix
    keys = QueueKeys.for_prefix(prefix)
    # The lists whose lengths add up to the queued work: the two lists workers pop, and the fair scheduler's
    # backlog (one element per id waiting in its per-batch lists; it reads 0 where the scheduler is not in).
    depth = getattr(keys, "depth", None) or (*keys.in_order, f"{prefix}:queue:backlog")
    lists = {trigger["name"]: trigger["metadata"]["listName"] for trigger in scaled["triggers"]}
    assert sorted(lists.values()) == sorted(depth), "the ScaledObject must read the lists of the queued work"
    assert scaled["advanced"]["scalingModifiers"]["formula"] == " + ".join(lists)
    auth = {trigger["authenticationRef"]["name"] for trigger in scaled["triggers"]}
    assert auth == {"crawljobs-redis"}
    secret = resources[("Secret", "crawljobs")]["stringData"]
    for ref in resources[("TriggerAuthentication", "crawljobs-redis")]["spec"]["secretTargetRef"]:
        assert ref["name"] == "crawljobs" and ref["key"] in secret


def test_the_config_map_and_secret_hold_real_settings() -> None:
    resources = everything()
    settings = {f"CRAWLJOBS_{name.upper()}" for name in Settings.model_fields}
    config = resources[("ConfigMap", "crawljobs")]["data"]
    secret = resources[("Secret", "crawljobs")]["stringData"]
    for key in [*config, *secret]:
        assert key in settings or key.startswith("redis-"), f"{key} is not a setting"
    assert {"CRAWLJOBS_DATABASE_URL", "CRAWLJOBS_REDIS_URL", "CRAWLJOBS_METRICS_TOKEN"} <= set(secret)
    assert Settings.model_validate(
        {key.removeprefix("CRAWLJOBS_").lower(): value for key, value in config.items()}
    )
