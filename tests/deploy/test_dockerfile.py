"""docker/Dockerfile: linted by hadolint, built from files that exist in its context, installed by the same
script as CI (.ci/run), and running commands that exist. (No Docker engine runs here: the build itself is not.)"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
IGNORE = ROOT / "docker" / "Dockerfile.dockerignore"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    # Every finding fails, down to "info"; no rule is ignored.
    return subprocess.run(
        [executable, "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for line in joined.splitlines()
        if line.strip() and (parts := line.strip().split(None, 1))
    ]


def test_hadolint_finds_nothing() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_broken_dockerfile(tmp_path: Path) -> None:
    """The lint can fail: an untagged base, root at the end and a cd in a RUN are each reported."""
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        DOCKERFILE.read_text()
        .replace("FROM python:3.11-slim-bookworm", "FROM python")
        .replace("USER 10001:10001", "USER root")
        .replace("WORKDIR /home/crawljobs", "RUN cd /home/crawljobs")
    )
    result = hadolint(broken)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3002", "DL3003"):
        assert rule in result.stdout, result.stdout


def included(path: str, patterns: list[str]) -> bool:
    """Docker's rule for a .dockerignore: the last pattern that matches decides; `!` re-includes."""
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        candidates = [path, *(str(parent) for parent in Path(path).parents if str(parent) != ".")]
        if any(
            fnmatch.fnmatch(candidate, body) or fnmatch.fnmatch(candidate, body.removeprefix("**/"))
            for candidate in candidates
        ):
            keep = negate
    return keep


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    patterns = [
        line.strip() for line in IGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    copies = [args for name, args in instructions(DOCKERFILE.read_text()) if name == "COPY"]
    assert copies
    for args in copies:
        sources = [part for part in args.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert included(source, patterns), f"COPY {source}: excluded by {IGNORE.name}"
    # And nothing the image does not need goes into the context.
    for unwanted in (".venv", ".git", "tests/unit/test_urls.py", "bench/crawl.py", ".crawljobs"):
        assert not included(unwanted, patterns), unwanted


def test_the_image_installs_through_the_script_ci_runs() -> None:
    """The system packages are installed by scripts/install-system-deps, in the image and in .ci/run alike."""
    runs = [args for name, args in instructions(DOCKERFILE.read_text()) if name == "RUN"]
    assert any("install-system-deps --image" in run for run in runs)
    assert not any("apt-get" in run for run in runs), "install system packages through the shared script"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^scripts/install-system-deps --test$", ci, re.MULTILINE)
    assert "apt-get install" not in ci
    script = (ROOT / "scripts" / "install-system-deps").read_text()
    assert "runtime=(chromium fonts-liberation)" in script and "tini" in script


def test_tini_is_pid_1_and_the_image_runs_as_a_numeric_non_root_user() -> None:
    steps = instructions(DOCKERFILE.read_text())
    entrypoint = [args for name, args in steps if name == "ENTRYPOINT"]
    assert entrypoint == ['["/usr/bin/tini", "--", "crawljobs"]']
    users = [args for name, args in steps if name == "USER"]
    assert users[-1] == "10001:10001"
    assert not users[-1].startswith("0")


@pytest.mark.parametrize("command", ["api", "worker", "sweeper", "migrate", "health"])
def test_the_roles_the_image_runs_are_crawljobs_commands(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crawljobs.cli", command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_every_data_file_of_the_packages_is_installed_by_the_image() -> None:
    """The image installs the project as a package (`pip install --no-deps .`, not editable, the source tree
    not kept on the path): a file the code reads that package-data does not name would be missing there."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_data: dict[str, list[str]] = config.get("package-data", {})
    tracked = subprocess.run(
        ["git", "ls-files", "crawljobs", "crawlproject", "service"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked
    for path in tracked:
        if path.endswith(".py"):
            continue
        top, _, rest = path.partition("/")
        patterns = package_data.get(top, [])
        assert any(fnmatch.fnmatch(rest, pattern) for pattern in patterns), (
            f"{path} is not in [tool.setuptools.package-data] of pyproject.toml: the image would not have it"
        )
