"""One local Ray cluster whose workers see an emulator's environment, for the command-line
tests that run on a cluster (``--ray``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from quorum.errors import ConfigError
from quorum.testing.emulator import Emulator


@contextmanager
def local_cluster(emulator: Emulator) -> Iterator[str]:
    """Start a two-CPU local cluster with the emulator's variables set (workers inherit
    them), yield its address, and stop it and restore the environment afterwards."""
    ray = pytest.importorskip("ray")
    saved = {name: os.environ.get(name) for name in emulator.env()}
    os.environ.update(emulator.env())  # the workers are started with this environment
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            yield str(context.address_info["gcs_address"])
        finally:
            ray.shutdown()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class UnstartableExecutor:
    """A ``RayExecutor`` whose workers cannot start (as when quorum is missing on the nodes)."""

    def __init__(self, address: str | None, *, workers: int, concurrency: int) -> None:
        self.workers, self.concurrency = workers, concurrency

    def check_address(self) -> None:
        pass

    def stream(self, *_args: Any, **_options: Any) -> Any:
        return self

    async def __aenter__(self) -> None:
        raise ConfigError("the Ray workers cannot import quorum: No module named 'quorum'")

    def shutdown(self) -> None:
        pass
