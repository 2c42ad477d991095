"""Sectioning: independent sections of one job run concurrently, then merge in order.

The chapter's ``Section``, ``SectionResult`` and ``SectioningWorkflow`` keep their names,
parameters and result shape (``result["merged"]`` works, and so does ``result.merged``).
Templates are checked before any call is made: a template may use ``{input}`` and
doubled braces only. Failed sections are listed in the merge, never silently dropped.
A section can do more than one call: give it a ``handler`` (for instance one that runs a
vote); budgets, deadlines and cancellation reach the calls inside it.
"""

from __future__ import annotations

import string
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from quorum.engine.collect import run
from quorum.engine.outcome import Outcome, Summary
from quorum.engine.parallel import ConcurrentWorkflow
from quorum.errors import ConfigError
from quorum.llm.types import Reply, Request, Usage

Handler = Callable[[str], Awaitable[Any]]


@dataclass
class Section:
    """A part of the job: a prompt template over ``{input}``, an optional system prompt,
    and optionally a ``handler`` that turns the filled-in prompt into the section's content
    (a string, or an object with a ``content`` attribute) instead of a single call."""

    name: str
    prompt_template: str
    system_prompt: str | None = None
    handler: Handler | None = field(default=None, repr=False)


@dataclass
class SectionResult:
    name: str
    content: str
    success: bool
    error: str | None = None
    status: str = "ok"
    execution_time: float = 0.0
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    detail: Any = field(default=None, repr=False)  # what a handler returned, if not a string


@dataclass
class SectioningResult:
    """The chapter's dictionary, as an object that also answers ``result["key"]``."""

    sections: dict[str, SectionResult]
    successful: list[str]
    failed: list[str]
    execution_time: float
    merged: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    summary: Summary = field(default_factory=Summary)

    def __getitem__(self, key: str) -> Any:
        if key not in self:  # "merged" too, when merge_results=False, as in the chapter
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.__dataclass_fields__ and (key != "merged" or self.merged is not None)

    def keys(self) -> list[str]:
        return [k for k in self.__dataclass_fields__ if k in self]


class SectioningWorkflow(ConcurrentWorkflow):
    async def run(
        self, sections: Sequence[Section], input_data: str, merge_results: bool = True
    ) -> SectioningResult:
        """Process every section over ``input_data`` concurrently; merge in section order."""
        check_sections(sections)
        started = time.perf_counter()
        outcome = await run(
            lambda section: self._process(section, input_data),
            sections,
            concurrency=self.max_concurrent,
            policy=self.policy,
            ids=lambda _i, section: section.name,
        )
        results = [_section_result(s, o) for s, o in zip(sections, outcome.outcomes, strict=True)]
        output = SectioningResult(
            sections={r.name: r for r in results},
            successful=[r.name for r in results if r.success],
            failed=[r.name for r in results if not r.success],
            execution_time=time.perf_counter() - started,
            usage=outcome.summary.usage,
            cost=outcome.summary.cost,
            summary=outcome.summary,
        )
        if merge_results:
            output.merged = merge(results)
        return output

    async def _process(self, section: Section, input_data: str) -> Any:
        prompt = section.prompt_template.format(input=input_data)
        if section.handler is not None:
            return await section.handler(prompt)
        request = Request.of(prompt, system=section.system_prompt, max_tokens=self.max_tokens)
        reply: Reply = await self.llm.complete(request)
        return reply.text


def check_sections(sections: Sequence[Section]) -> None:
    """Fail before any call on a bad template or a repeated name."""
    names = [s.name for s in sections]
    if len(set(names)) != len(names):
        raise ConfigError(f"section names must be unique, got {names}")
    for section in sections:
        check_template(section.prompt_template, where=f"section {section.name!r}")


def check_template(template: str, *, where: str, fields: Sequence[str] = ("input",)) -> None:
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(
            f"{where}: prompt_template is not a valid template ({exc}); "
            "write {{ and }} for literal braces"
        ) from exc
    for _text, name, spec, _conv in parts:
        if name is not None and name not in fields:
            allowed = ", ".join("{" + f + "}" for f in fields)
            shown = "{" + name + "}" if name else "{}"
            raise ConfigError(
                f"{where}: prompt_template uses {shown}, but only {allowed} is filled in; "
                "write {{ and }} for literal braces"
            )
        if spec:  # a format spec may hold fields of its own: "{input:{width}}"
            check_template(spec, where=where, fields=fields)


def merge(results: Sequence[SectionResult]) -> str:
    """Successful sections as Markdown in section order, then the failed ones listed."""
    parts = [f"## {r.name}\n\n{r.content}" for r in results if r.success]
    failed = [f"- {r.name}: {r.error}" for r in results if not r.success]
    if failed:
        parts.append("## Failed sections\n\n" + "\n".join(failed))
    return "\n\n".join(parts)


def _section_result(section: Section, outcome: Outcome[Any]) -> SectionResult:
    value = outcome.value
    content = value if isinstance(value, str) else str(getattr(value, "content", "") or "")
    return SectionResult(
        name=section.name,
        content=content if outcome.ok else "",
        success=outcome.ok,
        error=outcome.error_message if not outcome.ok else None,
        status=str(outcome.status),
        execution_time=outcome.duration,
        usage=outcome.usage,
        cost=outcome.cost,
        detail=None if isinstance(value, str) else value,
    )
