"""llama.cpp model instances, and the pool that lends them to worker threads.

llama.cpp generates on the CPU and holds the GIL only between tokens, so several small
single-threaded instances side by side use the cores better than one instance with many
threads (on a 2-core machine two 1-thread instances gave about 1.75x the throughput of one
2-thread instance). The pool hands an idle instance to each call, loads new ones lazily up
to ``size``, and runs the work in its own thread pool so the event loop never blocks.

A thread cannot be interrupted. When the awaiting coroutine is cancelled the pool sets the
call's cancel flag, which the job polls between tokens, and takes the instance back only
once the thread has really finished: an instance is never used by two threads at once,
never lost, and ``aclose()`` returns only when no worker thread is left running.

``load_model`` makes one instance with the chat template its prompts need.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

from quorum.errors import LocalModelUnavailable, PoolClosed

Instance = TypeVar("Instance")
T = TypeVar("T")

# A job runs in a worker thread with an instance and a flag it must poll: once the flag
# is set, nobody waits for its answer any more and it should stop as soon as it can.
Job = Callable[[Instance, threading.Event], T]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool: ``loaded`` instances exist (or are loading), ``idle`` ones
    wait for work, ``busy`` threads are running (a cancelled call's thread stays busy
    until its generation has stopped)."""

    size: int
    loaded: int
    idle: int
    busy: int


class InstancePool(Generic[Instance]):
    """Up to ``size`` instances made by ``load`` (called in a worker thread), lent out one
    call at a time by ``run``."""

    def __init__(
        self, load: Callable[[], Instance], size: int, close: Callable[[Instance], None] = lambda _: None
    ) -> None:
        self.size = size
        self._load = load
        self._close_instance = close
        self._free: list[Instance] = []
        self._loaded = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._running: dict[asyncio.Future[Any], threading.Event] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def stats(self) -> PoolStats:
        return PoolStats(self.size, self._loaded, len(self._free), len(self._running))

    async def run(self, job: Job[Instance, T]) -> T:
        """Run ``job(instance, cancel)`` in a worker thread on an idle instance."""
        instance = await self._acquire()
        cancel = threading.Event()
        future: asyncio.Future[T] = self._submit(lambda: job(instance, cancel), cancel)
        # The instance comes back when the thread is done, not when the caller gives up.
        future.add_done_callback(lambda _: self._release(instance))
        try:
            # shield: cancelling the caller must not mark the thread's future done early.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            raise

    async def aclose(self) -> None:
        """Stop every running job, wait for its thread, then free all instances.

        Calls waiting for an instance fail with ``PoolClosed``. Safe to call twice."""
        self._closed = True
        for cancel in self._running.values():
            cancel.set()
        self._wake_all()
        if self._running:
            # asyncio.wait, unlike gather, does not cancel the futures if aclose itself
            # is cancelled: the threads keep their instances until they really stop.
            await asyncio.wait(list(self._running))
        while self._free:
            self._discard(self._free.pop())
        if self._executor is not None:
            # Every job has finished, so this only joins idle threads: it returns at once.
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _acquire(self) -> Instance:
        while True:
            if self._closed:
                raise PoolClosed("the local model pool is closed; create a new provider")
            if self._free:
                return self._free.pop()
            if self._loaded < self.size:
                return await self._load_one()
            await self._wait_for_release()

    async def _load_one(self) -> Instance:
        self._loaded += 1  # counted before the await, so concurrent callers never overshoot
        future: asyncio.Future[Instance] = self._submit(self._load, threading.Event())
        try:
            instance = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._adopt)  # keep what the thread is still loading
            raise
        except BaseException:
            self._forget_one()
            raise
        if self._closed:  # closed while loading: nothing may be submitted any more
            self._discard(instance)
            raise PoolClosed("the local model pool was closed while a model was loading")
        return instance

    def _adopt(self, future: asyncio.Future[Instance]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._forget_one()
        else:
            self._release(future.result())

    def _forget_one(self) -> None:
        """A load failed: free its place so that a waiting call may try again."""
        self._loaded -= 1
        self._wake_one()

    def _submit(self, fn: Callable[[], T], cancel: threading.Event) -> asyncio.Future[T]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="quorum-llama")
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        self._running[future] = cancel
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: asyncio.Future[Any]) -> None:
        del self._running[future]
        if not future.cancelled():
            future.exception()  # mark it retrieved: a cancelled caller will never look

    def _release(self, instance: Instance) -> None:
        if self._closed:
            self._discard(instance)
            return
        self._free.append(instance)
        self._wake_one()

    def _discard(self, instance: Instance) -> None:
        self._close_instance(instance)
        self._loaded -= 1

    async def _wait_for_release(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # we were woken but leave: pass the wake-up on
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class Model:
    """One loaded llama.cpp instance and the chat template that formats its prompts."""

    llama: Any
    formatter: Callable[..., Any]

    def prompt(self, messages: list[dict[str, str]]) -> tuple[list[int], list[str], list[Any]]:
        """Prompt tokens, stop strings and stop checks, made as ``create_chat_completion``
        makes them; tokenizing here lets the caller check the context before generating."""
        formatted = self.formatter(messages=messages)
        tokens = self.llama.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        stop = formatted.stop or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        return list(tokens), stops, list(formatted.stopping_criteria or [])

    def trained_context(self) -> int | None:
        """The context length the model was trained on, when its file says."""
        arch = self.llama.metadata.get("general.architecture", "")
        value = str(self.llama.metadata.get(f"{arch}.context_length", ""))
        return int(value) if value.isdigit() else None

    def close(self) -> None:
        self.llama.close()


def load_model(llama_cpp: ModuleType, path: Path, *, n_ctx: int, threads: int) -> Model:
    """Load one instance of the GGUF file at ``path`` (slow: call it in a worker thread)."""
    try:
        # One load at a time: llama-cpp-python silences a load by pointing file descriptors
        # 1 and 2 at /dev/null and back (dup/dup2). Two loads in two threads interleave
        # those swaps and can leave the process's stdout and stderr on /dev/null for good:
        # a review then ends with exit status 0 and not a word printed.
        with _LOAD_LOCK, _safe_weight_layout():
            llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,  # verbose=False: no stderr chatter
            )
    except (ValueError, RuntimeError) as exc:
        raise LocalModelUnavailable(
            f"llama.cpp could not load {path} ({exc}); the file may be damaged, "
            f"or newer than this llama-cpp-python: pip install -U llama-cpp-python"
        ) from exc
    return Model(llama, _chat_formatter(llama))


_LOAD_LOCK = threading.Lock()


@contextmanager
def _safe_weight_layout() -> Iterator[None]:
    """Load with llama.cpp's "extra buffer types" off on CPUs with Intel AMX.

    On AMX CPUs llama.cpp repacks weights for its AMX kernels by default, and those
    kernels crash the process (SIGSEGV in ggml_backend_amx_mul_mat, llama.cpp issue
    #20824). llama.cpp's own CLI offers ``--no-repack`` for this; llama-cpp-python does
    not pass the setting through, so its default-parameter function is wrapped while one
    model loads; ``load_model`` holds ``_LOAD_LOCK`` around it, since loads run in several
    threads.
    """
    low: Any = importlib.import_module("llama_cpp.llama_cpp")
    fields = {name for name, *_ in getattr(low.llama_model_params, "_fields_", [])}
    if not _cpu_has_amx() or "use_extra_bufts" not in fields:
        yield
        return
    original = low.llama_model_default_params

    def without_repacking() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_repacking  # safe: the caller holds _LOAD_LOCK
    try:
        yield
    finally:
        low.llama_model_default_params = original


@functools.cache
def _cpu_has_amx() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: ggml's AMX kernels are x86 Linux only
        return False
    return "amx_int8" in flags or "amx_tile" in flags


def _chat_formatter(llama: Any) -> Callable[..., Any]:
    """The model's own chat template, the one ``create_chat_completion`` would use; GGUF
    files without one get ChatML, the format most instruct models use."""
    chat_format = importlib.import_module("llama_cpp.llama_chat_format")
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        chatml: Callable[..., Any] = chat_format.format_chatml
        return chatml
    eos, bos = llama.token_eos(), llama.token_bos()
    formatter: Callable[..., Any] = chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=_token_text(llama, eos),
        bos_token=_token_text(llama, bos),
        stop_token_ids=[eos],
    )
    return formatter


def _token_text(llama: Any, token: int) -> str:
    if token < 0:
        return ""
    return str(llama.detokenize([token], special=True).decode("utf-8", errors="replace"))
