"""Document analysis by sectioning: independent looks at one text, run at once.

By default the chapter's four sections (Summary, Key Points, Sentiment, Questions, with
its prompts and system prompts); ``load_sections`` reads others from a TOML file::

    [[section]]
    name = "Risks"
    prompt = "List the risks this text mentions:\\n\\n{input}"
    system = "You are a cautious risk analyst."   # optional

Every template is checked when the file is read, before any call: a mistake is one
``ConfigError`` naming the file and the section. Failed sections are kept in the result
and listed in the Markdown, never dropped.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quorum.engine.budget import Budget
from quorum.engine.connection import connect
from quorum.engine.context import nest
from quorum.engine.events import EventSink
from quorum.errors import ConfigError
from quorum.llm.provider import Provider
from quorum.patterns.sectioning import Section, SectioningResult, SectioningWorkflow, check_template

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
CONCURRENCY = 5


async def analyze(
    text: str,
    *,
    llm: Provider | str | None = None,
    sections: Sequence[Section] = SECTIONS,
    max_tokens: int = MAX_TOKENS,
    concurrency: int = CONCURRENCY,
    budget: Budget | None = None,
    on_event: EventSink | None = None,
) -> SectioningResult:
    """Run every section over ``text`` at once; the result merges them in section order.

    ``llm``: a provider, connection or model string (``None``: the default model).
    ``budget`` and ``on_event`` reach every section's call."""
    if not text.strip():
        raise ConfigError("the document is empty: there is nothing to analyze")
    workflow = SectioningWorkflow(max_tokens=max_tokens, max_concurrent=concurrency, llm=connect(llm))
    with nest(on_event=on_event, budget=budget):
        return await workflow.run(sections, text)


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
    check_template(prompt, where=named)
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
    """The merged sections as Markdown, failed sections listed at the end."""
    body = result.merged if result.merged is not None else ""
    return f"# {title}\n\n{body}\n" if title else f"{body}\n"


def to_json(result: SectioningResult, *, source: str | None = None) -> dict[str, Any]:
    """The result as plain JSON data: every section in order, failed ones included."""
    return {
        "source": source,
        "sections": [
            {
                "name": r.name,
                "success": r.success,
                "status": r.status,
                "content": r.content,
                "error": r.error,
                "execution_time": round(r.execution_time, 3),
            }
            for r in result.sections.values()
        ],
        "successful": result.successful,
        "failed": result.failed,
        "execution_time": round(result.execution_time, 3),
        "usage": result.usage.as_json(),
        "cost": result.cost,
        "merged": result.merged,
    }
