"""scripts/deploy, the one command: with no Docker engine (none runs on these machines) it stops at once with
a message saying so, having changed nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.schemas import ROOT

DEPLOY = ROOT / "scripts" / "deploy"


def deploy(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEPLOY), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_without_docker_it_says_so_and_changes_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "dirname", "sed"):  # what the script needs before it looks for docker
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    before = (ROOT / "docker" / ".env").exists()
    result = deploy("--scale", "worker=3", env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "deploy: docker is not installed" in result.stderr
    assert (ROOT / "docker" / ".env").exists() == before


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker command is not installed")
def test_with_no_engine_running_it_says_so_and_changes_nothing(tmp_path: Path) -> None:
    """The real docker command, pointed at a socket nothing listens on (as on these machines, where no engine
    runs at all)."""
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}", "HOME": str(tmp_path)}
    before = (ROOT / "docker" / ".env").exists()
    result = deploy("--scale", "worker=3", env=env)
    assert result.returncode == 1
    assert "deploy: no Docker engine is running" in result.stderr
    assert "Cannot connect to the Docker daemon" in result.stderr  # what docker itself said, passed on
    assert (ROOT / "docker" / ".env").exists() == before


def test_help_names_the_scale_option() -> None:
    result = deploy("--help", env=dict(os.environ))
    assert result.returncode == 0
    assert "--scale worker=4" in result.stdout


def test_it_scales_through_the_compose_file_it_validates() -> None:
    """The script drives docker/compose.yaml (the file tests/deploy/test_compose.py validates) and passes its
    arguments on to `docker compose up`."""
    text = DEPLOY.read_text()
    assert "-f docker/compose.yaml" in text
    assert '"${compose[@]}" up -d --wait --remove-orphans "$@"' in text
    assert '"${compose[@]}" run --rm migrate' in text
