"""The configuration reference is generated from the settings object and must match it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from crawljobs import configref
from crawljobs.config import Settings


def test_the_reference_matches_the_settings_object() -> None:
    """docs/CONFIGURATION.md is what `python -m crawljobs.configref --write` makes of config.py today."""
    written = configref.REFERENCE.read_text(encoding="utf-8")
    assert written == configref.render(), (
        f"docs/CONFIGURATION.md is out of date with crawljobs/config.py: run `{configref.COMMAND}`"
    )


def test_every_setting_has_a_row_with_its_env_name_default_and_meaning() -> None:
    rows = {entry.env: entry for entry in configref.entries()}
    assert set(rows) == {f"CRAWLJOBS_{name.upper()}" for name in Settings.model_fields}
    assert all(entry.description for entry in rows.values())
    assert rows["CRAWLJOBS_LEASE_SECONDS"].default == "`60`"
    assert rows["CRAWLJOBS_LEASE_SECONDS"].type == "integer (≥ 2)"
    assert rows["CRAWLJOBS_DATABASE_URL"].default == "unset"
    assert rows["CRAWLJOBS_ALLOWED_NETWORKS"].default == "empty"
    assert rows["CRAWLJOBS_LOG_FORMAT"].type == "one of `text`, `json`"
    assert rows["CRAWLJOBS_METRICS_OPEN"].default == "`false`"


class _Added(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRAWLJOBS_")

    # Tenants. Settings added by hand.
    described: int = Field(default=3, ge=1, description="a setting with its description")
    # The comment above a setting is its description when it has none.
    commented: bool = False
    follower: int = 5

    # Rendering (crawlproject). What the next two do.
    grouped_one: int = 1
    grouped_two: str = "x"


class _Undocumented(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRAWLJOBS_")

    documented: int = Field(default=1, description="fine")

    bare: int = 2


def test_the_comments_describe_settings_without_a_description_and_open_sections() -> None:
    described, commented, follower, one, two = configref.entries(_Added)
    assert (described.section, described.env) == ("Tenants", "CRAWLJOBS_DESCRIBED")
    assert described.section_note == "Settings added by hand."
    assert described.description == "a setting with its description"
    assert commented.description == "the comment above a setting is its description when it has none"
    assert follower.description == "see `CRAWLJOBS_COMMENTED` above"  # the same comment's run
    assert (one.section, one.section_note) == ("Rendering (crawlproject)", "")
    assert (one.description, two.description) == ("what the next two do", "see `CRAWLJOBS_GROUPED_ONE` above")
    text = configref.render(_Added)
    assert "| `CRAWLJOBS_COMMENTED` | boolean | `false` |" in text
    assert "## Rendering (crawlproject)\n\n| variable" in text


def test_a_setting_with_no_description_at_all_is_an_error() -> None:
    with pytest.raises(configref.MissingDescription, match="'bare'"):
        configref.entries(_Undocumented)


def test_check_fails_on_a_stale_reference(tmp_path, monkeypatch) -> None:
    stale = tmp_path / "CONFIGURATION.md"
    stale.write_text(configref.render().replace("`60`", "`61`"), encoding="utf-8")
    monkeypatch.setattr(configref, "REFERENCE", stale)
    monkeypatch.setattr(configref, "ROOT", tmp_path)
    assert configref.main(["--check"]) == 1
    assert configref.main(["--write"]) == 0
    assert configref.main(["--check"]) == 0


def test_the_command_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crawljobs.configref", "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
