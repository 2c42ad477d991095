"""Kills for batch-driver tests: an adapter that dies at one step, as ``kill -9`` would."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from quorum.llm.batches.base import BatchItem, BatchStatus, Intent, ItemResult
from quorum.testing.emulator import Emulator


class Killed(BaseException):
    """A kill -9 stand-in: nothing after the raise runs, nothing catches it."""


class KillAt:
    """A batch adapter killed at one step: before or after ``create``, while polling, or
    (``downloading``) after ``after`` results were read."""

    def __init__(self, api: Any, step: str, after: int = 0) -> None:
        self.api, self.step, self.after = api, step, after
        self.name, self.model, self.limits, self.item_size = api.name, api.model, api.limits, api.item_size

    async def create(self, intent: Intent, chunk: Sequence[BatchItem]) -> BatchStatus:
        if self.step == "before_create":
            raise Killed
        status: BatchStatus = await self.api.create(intent, chunk)
        if self.step == "after_create":
            raise Killed
        return status

    async def retrieve(self, batch_id: str) -> BatchStatus:
        if self.step == "polling":
            raise Killed
        status: BatchStatus = await self.api.retrieve(batch_id)
        return status

    async def cancel(self, batch_id: str) -> BatchStatus:
        status: BatchStatus = await self.api.cancel(batch_id)
        return status

    async def find(self, intent: Intent, claimed: frozenset[str] = frozenset()) -> BatchStatus | None:
        found: BatchStatus | None = await self.api.find(intent, claimed)
        return found

    async def results(self, batch_id: str, chunk: Sequence[BatchItem]) -> AsyncIterator[ItemResult]:
        read = 0
        async for result in self.api.results(batch_id, chunk):
            if self.step == "downloading" and read == self.after:
                raise Killed
            read += 1
            yield result

    async def aclose(self) -> None:
        return None


def kill_while_the_batch_runs_then_resume(
    command: list[str], emu: Emulator
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` against ``emu``, SIGKILL it once its batch is created and still
    running, then run it again to the end: the resume follows that batch, creating none."""
    env = {**os.environ, **emu.env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("QUORUM_MODEL", None)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while emu.stats.batches_created == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # the batch was created and is still running
    process.wait()
    assert emu.stats.batches_created == 1
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert emu.stats.batches_created == 1, done.stderr  # the resume followed the same batch
    return done
