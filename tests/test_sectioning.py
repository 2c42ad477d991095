"""Sectioning: the chapter's result shape, merge order, failures kept in the merge,
templates checked before any call, usage and cost, and sections that run a vote inside
(budgets, deadlines and cancellation reach the inner calls)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from quorum import Budget, FakeProvider, Section, SectioningWorkflow, Status, Voter, VotingWorkflow
from quorum.engine import FailurePolicy, run
from quorum.errors import ConfigError, IncompleteRun
from quorum.llm import Price
from quorum.llm.fake import estimate_tokens
from quorum.patterns import SectioningResult

PRICE = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
LONG = 30.0  # a latency no test waits for: such calls are always cancelled
DOC = "The company announced record quarterly earnings today."


def leftover_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]


def chapter_sections() -> list[Section]:
    return [
        Section("Summary", "Summarize:\n\n{input}", "You are a concise summarizer."),
        Section("Key Points", "List the key points:\n\n{input}", "You extract key information."),
        Section("Sentiment", "Analyze the sentiment:\n\n{input}", "You are a sentiment analyst."),
    ]


RULES = [
    {"match": "Summarize", "reply": "A short summary.", "latency": 0.02},
    {"match": "key points", "reply": "- one\n- two", "latency": 0.0},
    {"match": "sentiment", "reply": "Upbeat.", "latency": 0.01},
]


async def test_the_chapter_result_shape_by_key_and_by_attribute() -> None:
    fake = FakeProvider(rules=RULES)
    result = await SectioningWorkflow(llm=fake).run(chapter_sections(), DOC)
    assert set(result.keys()) >= {"sections", "successful", "failed", "execution_time", "merged"}
    assert result["successful"] == result.successful == ["Summary", "Key Points", "Sentiment"]
    assert result["failed"] == result.failed == []
    assert result["execution_time"] == result.execution_time >= 0
    summary = result["sections"]["Summary"]
    assert summary is result.sections["Summary"]
    assert (summary.name, summary.content, summary.success, summary.error) == (
        "Summary",
        "A short summary.",
        True,
        None,
    )
    assert "merged" in result
    assert result["merged"] == result.merged


async def test_each_section_sends_its_prompt_with_the_input_and_its_system_prompt() -> None:
    fake = FakeProvider(rules=RULES)
    await SectioningWorkflow(llm=fake, max_tokens=321).run(chapter_sections(), DOC)
    sent = {r.system: r.messages[-1].content for r in fake.calls}
    assert sent["You are a concise summarizer."] == f"Summarize:\n\n{DOC}"
    assert sent["You are a sentiment analyst."] == f"Analyze the sentiment:\n\n{DOC}"
    assert {r.max_tokens for r in fake.calls} == {321}


async def test_merge_keeps_section_order_whatever_the_finishing_order() -> None:
    fake = FakeProvider(rules=RULES)  # Summary finishes last, Key Points first
    result = await SectioningWorkflow(llm=fake).run(chapter_sections(), DOC)
    assert result.merged == (
        "## Summary\n\nA short summary.\n\n## Key Points\n\n- one\n- two\n\n## Sentiment\n\nUpbeat."
    )
    assert list(result.sections) == ["Summary", "Key Points", "Sentiment"]


async def test_failed_sections_are_listed_in_the_merge_not_dropped() -> None:
    rules = [{"match": "key points", "error": "bad_request"}, *RULES]
    fake = FakeProvider(rules=rules)
    result = await SectioningWorkflow(llm=fake).run(chapter_sections(), DOC)
    assert result.successful == ["Summary", "Sentiment"]
    assert result.failed == ["Key Points"]
    failed = result.sections["Key Points"]
    assert failed.success is False
    assert failed.content == ""
    assert failed.status == "error"
    assert failed.error is not None
    assert "BadRequest" in failed.error
    assert result.merged is not None
    assert result.merged.index("## Summary") < result.merged.index("## Sentiment")
    assert result.merged.endswith(f"## Failed sections\n\n- Key Points: {failed.error}")


async def test_merge_results_false_leaves_no_merged_key() -> None:
    result = await SectioningWorkflow(llm=FakeProvider(rules=RULES)).run(
        chapter_sections(), DOC, merge_results=False
    )
    assert "merged" not in result
    assert result.merged is None
    keys = result.keys()
    assert "merged" not in keys
    with pytest.raises(KeyError):
        result["merged"]  # as with the chapter's dictionary


def test_unknown_keys_raise_key_error() -> None:
    result = SectioningResult(sections={}, successful=[], failed=[], execution_time=0.0)
    with pytest.raises(KeyError):
        result["results"]


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("Summarize {text}", "{text}"),
        ("Summarize {input} for {audience}", "{audience}"),
        ("Positional {} here: {input}", "{}"),
        ("Index {0}", "{0}"),
        ("Attribute {input.upper}", "{input.upper}"),
        ('Return JSON like {"a": 1}: {input}', '{"a"'),
        ("A stray } brace: {input}", "brace"),
        ("A stray { brace: {input}", "brace"),
        ("Nested spec {input:{width}}", "{width}"),
    ],
)
async def test_a_bad_template_fails_before_any_call(template: str, says: str) -> None:
    fake = FakeProvider(rules=RULES)
    sections = [*chapter_sections(), Section("Broken", template)]
    with pytest.raises(ConfigError) as caught:
        await SectioningWorkflow(llm=fake).run(sections, DOC)
    assert fake.calls == []
    message = str(caught.value)
    assert "'Broken'" in message
    assert says in message
    assert "{{" in message  # it says how to write a literal brace


async def test_doubled_braces_and_conversions_are_fine() -> None:
    fake = FakeProvider(rules=[{"match": ".", "reply": "ok"}])
    sections = [Section("JSON", 'Answer like {{"a": 1}} about {input!r}')]
    result = await SectioningWorkflow(llm=fake).run(sections, "doc")
    assert result.successful == ["JSON"]
    assert fake.calls[0].messages[-1].content == "Answer like {\"a\": 1} about 'doc'"


async def test_section_names_must_be_unique() -> None:
    fake = FakeProvider()
    with pytest.raises(ConfigError, match="unique"):
        await SectioningWorkflow(llm=fake).run([Section("A", "{input}"), Section("A", "{input}")], DOC)
    assert fake.calls == []


async def test_usage_and_cost_are_reported_per_section_and_in_total() -> None:
    fake = FakeProvider(rules=RULES, price=PRICE)
    result = await SectioningWorkflow(llm=fake).run(chapter_sections(), DOC)
    per_section = [s.cost or 0.0 for s in result.sections.values()]
    assert all(c > 0 for c in per_section)
    assert result.cost == pytest.approx(sum(per_section))
    assert result.usage.input_tokens == sum(s.usage.input_tokens for s in result.sections.values()) > 0
    assert result.summary.count(Status.OK) == 3


async def test_max_concurrent_bounds_the_calls_in_flight() -> None:
    fake = FakeProvider(rules=[{"match": ".", "reply": "ok"}], latency=0.005)
    sections = [Section(f"S{i}", "{input}") for i in range(6)]
    await SectioningWorkflow(llm=fake, max_concurrent=2).run(sections, DOC)
    assert fake.max_in_flight == 2
    assert len(fake.calls) == 6


async def test_require_all_policy_raises_with_every_result_kept() -> None:
    rules = [{"match": "key points", "error": "bad_request"}, *RULES]
    workflow = SectioningWorkflow(llm=FakeProvider(rules=rules), policy=FailurePolicy.REQUIRE_ALL)
    with pytest.raises(IncompleteRun, match="Key Points") as caught:
        await workflow.run(chapter_sections(), DOC)
    assert len(caught.value.result.outcomes) == 3


# -- nesting: a section that runs a vote ---------------------------------------------


def vote_section(name: str, workflow: VotingWorkflow, voters: list[Voter]) -> Section:
    async def handler(prompt: str) -> str:
        result = await workflow.run(voters, prompt, ["yes", "no"])
        return f"{result.winner} ({len(result.votes)} votes, {result.failed} failed)"

    return Section(name, f"{name}: is this good news? {{input}}", handler=handler)


def voters(n: int) -> list[Voter]:
    return [Voter(f"v{i}", f"You are v{i}.") for i in range(n)]


async def test_a_section_can_run_a_vote() -> None:
    rules = [
        {"match": "You are v[01]\\.", "data": {"decision": "yes", "confidence": "high", "reasoning": "r"}},
        {"match": "You are v2\\.", "data": {"decision": "no", "confidence": "low", "reasoning": "r"}},
    ]
    fake = FakeProvider(rules=rules, price=PRICE)
    vote = VotingWorkflow(llm=fake)
    sections = [vote_section("Tone", vote, voters(3)), vote_section("Outlook", vote, voters(3))]
    result = await SectioningWorkflow(llm=fake).run(sections, DOC)
    assert result.successful == ["Tone", "Outlook"]
    assert result.sections["Tone"].content == "yes (3 votes, 0 failed)"
    assert len(fake.calls) == 6
    assert all("is this good news?" in r.messages[-1].content for r in fake.calls)
    # The inner calls are charged to the section that made them, and roll up to the total.
    tone_input = sum(estimate_tokens(r.text) for r in fake.calls if "Tone:" in r.messages[-1].content)
    assert result.sections["Tone"].usage.input_tokens == tone_input > 0
    assert result.usage.input_tokens == sum(estimate_tokens(r.text) for r in fake.calls)
    assert result.cost == pytest.approx(sum(s.cost or 0.0 for s in result.sections.values()))


async def test_a_handler_may_return_an_object_with_content() -> None:
    class Report:
        content = "from the handler"

    async def handler(prompt: str) -> Report:
        return Report()

    result = await SectioningWorkflow(llm=FakeProvider()).run([Section("R", "{input}", handler=handler)], DOC)
    assert result.sections["R"].content == "from the handler"
    assert isinstance(result.sections["R"].detail, Report)


async def test_an_outer_budget_stops_the_calls_inside_the_votes() -> None:
    answer = {"decision": "yes", "confidence": "high", "reasoning": "r"}
    fake = FakeProvider(rules=[{"match": "You are", "data": answer}], price=PRICE)
    probe = await VotingWorkflow(llm=fake).run(voters(1), "Tone: is this good news? " + DOC, ["yes", "no"])
    per_call = probe.cost or 0.0
    fake.calls.clear()
    vote = VotingWorkflow(llm=fake, concurrency=1)
    sections = [vote_section(f"S{i}", vote, voters(5)) for i in range(3)]
    workflow = SectioningWorkflow(llm=fake, max_concurrent=1)
    budget = Budget(dollars=per_call * 6.5)  # room for 7 calls of 15: reached inside S1's vote

    outer = await run(lambda _: workflow.run(sections, DOC), [0], budget=budget)
    result = outer.values[0]

    assert len(fake.calls) == 7
    assert budget.exhausted is not None
    assert result.sections["S0"].content == "yes (5 votes, 0 failed)"
    assert result.sections["S1"].content == "yes (5 votes, 3 failed)"  # 2 asked, 3 skipped
    assert result.failed == ["S2"]
    assert "skipped" in (result.sections["S2"].error or "")
    assert result.merged is not None
    assert "- S2: skipped" in result.merged


async def test_nested_budgets_each_see_the_calls_made_under_them() -> None:
    answer = {"decision": "yes", "confidence": "high", "reasoning": "r"}
    fake = FakeProvider(rules=[{"match": "You are", "data": answer}], price=PRICE)
    vote = VotingWorkflow(llm=fake, concurrency=1)
    inner_budgets: dict[str, Budget] = {}

    def capped_section(name: str, calls: int) -> Section:
        async def handler(prompt: str) -> str:
            inner = inner_budgets[name] = Budget(tokens=1)  # spent by the first call
            done = await run(lambda _: vote.run(voters(calls), prompt, ["yes", "no"]), [0], budget=inner)
            result = done.values[0]
            return f"{result.winner} ({len(result.votes) - result.failed} answered)"

        return Section(name, f"{name}: {{input}}", handler=handler)

    outer = Budget(dollars=100.0)
    sections = [capped_section("Capped", 4), vote_section("Free", vote, voters(3))]
    done = await run(lambda _: SectioningWorkflow(llm=fake).run(sections, DOC), [0], budget=outer)
    result = done.values[0]
    assert result.sections["Capped"].content == "yes (1 answered)"  # its own cap stopped it
    assert result.sections["Free"].content == "yes (3 votes, 0 failed)"  # not the other's
    assert len(fake.calls) == 4
    capped_tokens = inner_budgets["Capped"].spent_tokens
    assert 0 < capped_tokens < outer.spent_tokens
    assert outer.spent_tokens == result.usage.total_tokens
    assert outer.spent_dollars == pytest.approx(result.cost)


async def test_an_outer_deadline_reaches_the_calls_inside_the_votes() -> None:
    rules = [{"match": "You are", "data": {"decision": "yes", "confidence": "high", "reasoning": "r"}}]
    fake = FakeProvider(rules=rules, latency=LONG)
    vote = VotingWorkflow(llm=fake)
    sections = [vote_section("A", vote, voters(3)), vote_section("B", vote, voters(3))]
    before = asyncio.all_tasks()
    started = time.perf_counter()
    outer = await run(lambda _: SectioningWorkflow(llm=fake).run(sections, DOC), [0], deadline=0.05)
    assert time.perf_counter() - started < 5
    assert fake.calls  # the inner calls had started...
    assert fake.cancelled == len(fake.calls) == 6  # ...and every one was stopped
    assert fake.in_flight == 0
    assert outer.outcomes[0].status is Status.TIMEOUT
    await asyncio.sleep(0)
    assert leftover_tasks(before) == []


async def test_cancelling_the_outer_run_cancels_the_calls_inside() -> None:
    rules = [{"match": "You are", "data": {"decision": "yes", "confidence": "high", "reasoning": "r"}}]
    fake = FakeProvider(rules=rules, latency=LONG)
    vote = VotingWorkflow(llm=fake)
    sections = [vote_section("A", vote, voters(3)), vote_section("B", vote, voters(2))]
    before = asyncio.all_tasks()
    task = asyncio.create_task(SectioningWorkflow(llm=fake).run(sections, DOC))
    for _ in range(200):
        if fake.in_flight == 5:
            break
        await asyncio.sleep(0.001)
    assert fake.in_flight == 5
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.cancelled == 5
    assert fake.in_flight == 0
    await asyncio.sleep(0)
    assert leftover_tasks(before) == []
