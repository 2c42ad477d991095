"""Fixtures shared by the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from quorum.testing.emulator import Emulator


@pytest.fixture(autouse=True)
def own_response_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets a response cache of its own: commands cache by default, and no
    test may read another's answers or write to the user's cache."""
    monkeypatch.setenv("QUORUM_CACHE_DIR", str(tmp_path / "quorum-cache"))


@pytest.fixture
def cli(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose environment points every SDK at the test module's ``emulator``
    (each module scripts its own) and chooses no default model."""
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("QUORUM_MODEL", raising=False)
    return CliRunner()
