"""docker/compose.yaml against the published Compose Specification schema, and what it must promise: a
migration the others wait for, workers that scale, health checks, named volumes, a stop grace for the drain."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawljobs.config import Settings
from tests.deploy.schemas import DOCKER, check_compose

COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
CRAWLJOBS_SERVICES = ("migrate", "api", "sweeper", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def seconds(duration: str) -> float:
    """A Compose duration (`1m30s`, `60s`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_the_compose_file_matches_the_compose_specification() -> None:
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("what", "old", "new"),
    [
        ("an unknown condition", "condition: service_completed_successfully", "condition: service_finished"),
        ("a misspelt key", "stop_grace_period: 60s", "stop_grace_periode: 60s"),
        ("a list where a duration goes", "interval: 15s", "interval: [15s]"),
    ],
)
def test_a_broken_compose_file_fails_the_schema(tmp_path: Path, what: str, old: str, new: str) -> None:
    broken = tmp_path / "compose.yaml"
    text = COMPOSE.read_text()
    assert old in text
    broken.write_text(text.replace(old, new, 1))
    result = check_compose(broken)
    assert result.returncode != 0, what


def test_every_service_waits_for_what_it_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", *CRAWLJOBS_SERVICES}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "sweeper", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert services[name]["command"] == [name]


def test_workers_scale_and_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=N`
    for name, service in services.items():
        assert "container_name" not in service, name
        check = service["healthcheck"]
        if name == "migrate":  # a one-off: its exit code is what the others wait on
            assert check == {"disable": True}
            continue
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in ("api", "sweeper", "worker"):
        assert services[name]["healthcheck"]["test"] == ["CMD", "crawljobs", "health", name]
    # Only the API is published, on loopback by default.
    assert services["api"]["ports"] == [
        "${CRAWLJOBS_PUBLISH_ADDRESS:-127.0.0.1}:${CRAWLJOBS_PUBLISH_PORT:-8000}:8000"
    ]
    assert [name for name, service in services.items() if "ports" in service] == ["api"]


def test_the_worker_stop_grace_covers_its_drain(compose: dict[str, Any]) -> None:
    """A worker's drain: its fetches in flight end within the download timeout (renders within the shutdown
    grace), then it writes their results and gives back the rest: the grace must cover both, with room."""
    defaults = Settings()
    drain = max(defaults.download_timeout, defaults.shutdown_grace_seconds) + 10
    assert seconds(compose["services"]["worker"]["stop_grace_period"]) >= drain
    assert seconds(compose["services"]["api"]["stop_grace_period"]) > defaults.shutdown_grace_seconds


def test_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    assert named == {"postgres-data", "redis-data"}
    for name in ("postgres", "redis"):
        mounts = compose["services"][name]["volumes"]
        assert all(mount.split(":")[0] in named for mount in mounts), mounts


def test_the_env_example_names_real_settings_and_documents_each(compose: dict[str, Any]) -> None:
    """Every CRAWLJOBS_* of docker/.env.example is a setting (or a variable of the compose file itself), and
    every variable there has a comment above it (or above its group)."""
    settings = {f"CRAWLJOBS_{name.upper()}" for name in Settings.model_fields}
    compose_only = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    lines = ENV_EXAMPLE.read_text().splitlines()
    names = []
    for index, line in enumerate(lines):
        match = re.match(r"^(?:# )?([A-Z][A-Z0-9_]+)=", line)
        if not match:
            continue
        name = match.group(1)
        names.append(name)
        assert name in settings or name in compose_only, (
            f"{name} is neither a setting nor used by compose.yaml"
        )
        above = index - 1  # a comment may describe a group of variables right below it
        while above > 0 and re.match(r"^[A-Z][A-Z0-9_]+=", lines[above]):
            above -= 1
        assert lines[above].startswith("#"), f"{name} has no comment above it"
    assert {"POSTGRES_PASSWORD", "CRAWLJOBS_WORKER_CONCURRENCY", "CRAWLJOBS_METRICS_TOKEN"} <= set(names)
    # Every variable the compose file interpolates is in the example.
    assert compose_only <= set(names) | {"CRAWLJOBS_DATABASE_URL", "CRAWLJOBS_REDIS_URL"}
