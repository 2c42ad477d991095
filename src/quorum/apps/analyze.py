"""Document analysis by sectioning: independent looks at one text, run at once.

By default the chapter's four sections (Summary, Key Points, Sentiment, Questions, with
its prompts and system prompts); ``load_sections`` reads others from a TOML file::

    [[section]]
    name = "Risks"
    prompt = "List the risks this text mentions:\\n\\n{input}"
    system = "You are a cautious risk analyst."   # optional

Every template is checked when the file is read, before any call: a mistake is one
``ConfigError`` naming the file and the section. A document too long for the model's
context is refused before any call, with its size and the model's. Failed sections are
kept in the result and listed in the Markdown, never dropped.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from quorum.apps.totals import SCHEMA_VERSION, totals
from quorum.engine import settings
from quorum.engine.budget import Budget
from quorum.engine.connection import connect
from quorum.engine.context import nest
from quorum.engine.cost import CHARS_PER_TOKEN
from quorum.engine.events import EventSink
from quorum.errors import ConfigError
from quorum.llm.provider import Provider
from quorum.llm.secrets import redact
from quorum.patterns.sectioning import Section, SectioningResult, SectioningWorkflow, check_template, merge

# The chapter's ``analyze_document_example``: same names, prompts and system prompts.
SECTIONS: tuple[Section, ...] = (
    Section(
        name="Summary",
        prompt_template="Provide a 2-3 sentence summary of this text:\n\n{input}",
        system_prompt="You are a concise summarizer. Be brief and accurate.",
    ),
    Section(
        name="Key Points",
        prompt_template="List the 3-5 most important points from this text:\n\n{input}",
        system_prompt="You extract key information as clear bullet points.",
    ),
    Section(
        name="Sentiment",
        prompt_template="Analyze the overall sentiment and tone of this text:\n\n{input}",
        system_prompt="You are a sentiment analyst. Describe tone and emotion.",
    ),
    Section(
        name="Questions",
        prompt_template="What are 3 questions a reader might have after reading this?\n\n{input}",
        system_prompt="You anticipate reader questions and curiosities.",
    ),
)
SECTION_KEYS = ("name", "prompt", "system")
MAX_TOKENS = 1024


async def analyze(
    text: str,
    *,
    llm: Provider | str | None = None,
    sections: Sequence[Section] = SECTIONS,
    max_tokens: int = MAX_TOKENS,
    concurrency: int | None = None,
    budget: Budget | None = None,
    on_event: EventSink | None = None,
) -> SectioningResult:
    """Run every section over ``text`` at once; the result merges them in section order.

    ``llm``: a provider, connection or model string (``None``: the default model).
    ``concurrency``, ``budget`` and ``on_event`` default to the run settings in force
    (``quorum.engine.settings.use``) and reach every section's call."""
    if not text.strip():
        raise ConfigError("the document is empty: there is nothing to analyze")
    connection = connect(llm)
    check_fits(text, sections, max_context=connection.capabilities.max_context, max_tokens=max_tokens)
    chosen = settings.current()
    workflow = SectioningWorkflow(
        max_tokens=max_tokens, max_concurrent=concurrency or chosen.concurrency, llm=connection
    )
    with nest(on_event=on_event or chosen.on_event, budget=budget or chosen.budget):
        return await workflow.run(sections, text)


def check_fits(text: str, sections: Sequence[Section], *, max_context: int | None, max_tokens: int) -> None:
    """Refuse, before any call, a document that no section's request could hold: every
    section would fail the same way after the wait. The estimate is quorum's usual
    four characters a token, so a document that passes may still be refused by the model."""
    if max_context is None:
        return
    longest = max(len(s.prompt_template) + len(s.system_prompt or "") for s in sections)
    needed = (len(text) + longest) // CHARS_PER_TOKEN + max_tokens
    if needed > max_context:
        room = max(0, (max_context - max_tokens) * CHARS_PER_TOKEN - longest)
        raise ConfigError(
            f"the document is {len(text):,} characters (about {len(text) // CHARS_PER_TOKEN:,} tokens), "
            f"but the model reads at most {max_context:,} tokens, its answer of up to {max_tokens:,} "
            f"included: about {room:,} characters of document fit. Analyze a shorter part, or use "
            "a model with a larger context (e.g. --model anthropic/claude-haiku-4-5)"
        )


def load_sections(path: str | Path) -> list[Section]:
    """Sections from a TOML file of ``[[section]]`` tables (``name``, ``prompt`` with
    ``{input}``, optional ``system``), every template checked before any call."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: no such sections file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from exc
    tables = data.get("section")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(
            f'{where}: defines no [[section]] tables; write [[section]] name = "..." prompt = "..."'
        )
    extra = sorted(set(data) - {"section"})
    if extra:
        raise ConfigError(f"{where}: unknown top-level keys {extra}; only [[section]] tables are read")
    sections = [_section(raw, f"{where}: section {i}", where) for i, raw in enumerate(tables, start=1)]
    _check_unique(sections, where)
    return sections


def _section(raw: Any, where: str, path: str) -> Section:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a [[section]] table")
    unknown = sorted(set(raw) - set(SECTION_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {', '.join(SECTION_KEYS)}")
    for key in ("name", "prompt"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ConfigError(f"{where}: missing {key!r} (a non-empty string)")
    if "system" in raw and not isinstance(raw["system"], str):
        raise ConfigError(f"{where}: 'system' must be a string")
    name, prompt = raw["name"].strip(), raw["prompt"]
    named = f"{path}: section {name!r}"
    try:
        check_template(prompt, where=named)
    except ConfigError as exc:  # the file's key is "prompt", whatever the Python field is called
        raise ConfigError(str(exc).replace("prompt_template", "prompt")) from exc
    if not _uses_input(prompt):
        raise ConfigError(f"{named}: prompt never uses {{input}}, so the document would not be sent")
    return Section(name=name, prompt_template=prompt, system_prompt=raw.get("system") or None)


def _uses_input(template: str) -> bool:
    return any(name == "input" for _text, name, _spec, _conv in string.Formatter().parse(template))


def _check_unique(sections: Sequence[Section], where: str) -> None:
    seen: set[str] = set()
    for section in sections:
        if section.name in seen:
            raise ConfigError(f"{where}: two sections are named {section.name!r}; names must be unique")
        seen.add(section.name)


def to_markdown(result: SectioningResult, *, title: str | None = None) -> str:
    """The merged sections as Markdown, failed sections listed at the end (their errors
    redacted: a base URL in an error can carry credentials)."""
    body = _merged(result)
    return f"# {title}\n\n{body}\n" if title else f"{body}\n"


def _merged(result: SectioningResult) -> str:
    return merge([replace(r, error=redact(r.error) if r.error else None) for r in result.sections.values()])


def to_json(result: SectioningResult, *, source: str | None = None) -> dict[str, Any]:
    """The result as plain JSON data: every section in order, failed ones included, and
    the run's totals under the keys every command shares (``quorum.apps.totals``)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "sections": [
            {
                "name": r.name,
                "success": r.success,
                "status": r.status,
                "content": r.content,
                "error": redact(r.error) if r.error else None,
                "wall_s": round(r.execution_time, 3),
                "usage": r.usage.as_json(),
                "cost_usd": r.cost,
            }
            for r in result.sections.values()
        ],
        "successful": result.successful,
        "failed": result.failed,
        "merged": _merged(result),
        "summary": {"sections": len(result.sections), **totals(result.summary)},
    }
