"""Ray, imported only when a cluster is used, and its failures told in one line each."""

from __future__ import annotations

import logging
import re
import socket
from types import ModuleType
from typing import Any

from quorum.errors import ConfigError

PROBE_TIMEOUT_S = 3.0
INSTALL_HINT = "pip install 'quorum[ray]'"


def import_ray() -> ModuleType:
    """The ``ray`` module, or a ``ConfigError`` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"running on a Ray cluster needs the optional extra 'ray' ({exc}); install it: {INSTALL_HINT}"
        ) from exc
    return ray


def start(address: str | None, namespace: str) -> bool:
    """Connect to the cluster at ``address`` (or start a local one without); ``True`` if
    this call started or joined Ray (and so should shut it down), ``False`` if the
    process was already connected."""
    ray = import_ray()
    if address not in (None, "auto", "local"):
        probe(address)
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=address,
            namespace=namespace,
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
        raise ConfigError(f"could not connect to {where}: {_first_line(exc)}") from exc
    return True


def probe(address: str) -> None:
    """Fail fast on an address nobody answers at (Ray itself retries for minutes)."""
    host, port = check_address(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"no Ray cluster answers at {address!r} ({exc.strerror or exc}); give the head node's "
            f"address as host:port (e.g. 10.0.0.5:6379, or ray://10.0.0.5:10001 for Ray Client), "
            f"or no address to start a local cluster"
        ) from exc


def check_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a Ray address, or a ``ConfigError`` showing the form."""
    bare = address.removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"a Ray address is host:port (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001), got {address!r}"
        )
    return host.strip("[]"), int(port)


def worker_start_error(exc: BaseException, runtime_env: Any) -> ConfigError:
    """What to say when the worker actors could not start (most often: no quorum there)."""
    text = str(exc)
    named = re.search(r"No module named '([\w.]+)'", text)
    missing = named.group(1).split(".")[0] if named else None
    if missing is None and ("ModuleNotFoundError" in text or "ImportError" in text):
        missing = "quorum"
    if missing is None:
        why = "could not start"
    elif missing == "quorum":
        why = "cannot import quorum"
    else:  # quorum is there, the provider's SDK is not (a worker builds its connection first)
        why = f"cannot import {missing!r}"
    env = f" (runtime_env={runtime_env!r})" if runtime_env else ""
    return ConfigError(
        f"the Ray workers {why}{env}: {_first_line(exc)}; install quorum on the cluster's nodes or "
        f"give RayExecutor(runtime_env={{'pip': ['quorum[ray]']}}) so each worker has it"
    )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    interesting = [line for line in lines if "Error" in line and not line.startswith("File ")]
    return (interesting[-1] if interesting else lines[0] if lines else type(exc).__name__)[:300]
