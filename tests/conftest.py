"""Fixtures shared by the command-line tests."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from quorum.testing.emulator import Emulator


@pytest.fixture
def cli(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose environment points every SDK at the test module's ``emulator``
    (each module scripts its own) and chooses no default model."""
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("QUORUM_MODEL", raising=False)
    return CliRunner()
