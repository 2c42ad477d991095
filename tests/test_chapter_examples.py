"""The chapter's two examples, copied verbatim with only their imports changed, run
against the emulator as if it were Anthropic's API: the environment points the default
model at it, and a script makes the sections and the moderators answer.

The chapter's code below is kept exactly as printed (its trailing spaces included), so it
is neither reformatted nor linted for whitespace.
"""

# ruff: noqa: W291, W293

from __future__ import annotations

from typing import Any

import pytest

from quorum import Section, SectioningWorkflow, Voter, VotingWorkflow
from quorum.llm.registry import DEFAULT_ANTHROPIC
from quorum.testing.emulator import Emulator

# fmt: off
# -- from the chapter: "Implementing Sectioning" ------------------------------------------


async def analyze_document_example():
    """Analyze a document from multiple angles in parallel."""
    
    workflow = SectioningWorkflow()
    
    # Define the sections to analyze
    sections = [
        Section(
            name="Summary",
            prompt_template="Provide a 2-3 sentence summary of this text:\n\n{input}",
            system_prompt="You are a concise summarizer. Be brief and accurate."
        ),
        Section(
            name="Key Points",
            prompt_template="List the 3-5 most important points from this text:\n\n{input}",
            system_prompt="You extract key information as clear bullet points."
        ),
        Section(
            name="Sentiment",
            prompt_template="Analyze the overall sentiment and tone of this text:\n\n{input}",
            system_prompt="You are a sentiment analyst. Describe tone and emotion."
        ),
        Section(
            name="Questions",
            prompt_template="What are 3 questions a reader might have after reading this?\n\n{input}",
            system_prompt="You anticipate reader questions and curiosities."
        )
    ]
    
    # Sample document to analyze
    document = """
    The company announced record quarterly earnings today, exceeding analyst 
    expectations by 15%. Revenue grew 23% year-over-year, driven primarily by 
    strong performance in the cloud services division. However, the CEO noted 
    challenges in the hardware segment, which saw a 5% decline. Looking ahead, 
    management provided cautious guidance for the next quarter, citing 
    macroeconomic uncertainties and supply chain constraints. Despite these 
    concerns, the company plans to increase R&D spending by 20% to accelerate 
    product development in AI and machine learning.
    """
    
    print("Analyzing document in parallel...\n")
    result = await workflow.run(sections, document)
    
    print(f"Completed in {result['execution_time']:.2f}s")
    print(f"Successful sections: {result['successful']}")
    print(f"Failed sections: {result['failed']}")
    print("\n" + "="*60 + "\n")
    print(result['merged'])



# -- from the chapter: "Implementing Voting" ----------------------------------------------


async def content_moderation_example():
    """Use voting to classify content with high confidence."""
    
    workflow = VotingWorkflow(consensus_threshold=0.6)
    
    # Define diverse voters with different perspectives
    voters = [
        Voter(
            name="strict_moderator",
            system_prompt="""You are a strict content moderator. 
            You err on the side of caution and flag anything 
            that could potentially be problematic.""",
            temperature=0.3
        ),
        Voter(
            name="balanced_moderator", 
            system_prompt="""You are a balanced content moderator.
            You carefully weigh context and intent when making decisions.""",
            temperature=0.5
        ),
        Voter(
            name="lenient_moderator",
            system_prompt="""You are a lenient content moderator.
            You focus on clear violations and give benefit of the doubt
            for ambiguous content.""",
            temperature=0.3
        ),
        Voter(
            name="context_analyst",
            system_prompt="""You analyze content with deep attention to context.
            Consider the full picture before making a judgment.""",
            temperature=0.7
        ),
        Voter(
            name="policy_expert",
            system_prompt="""You are an expert in content policies.
            You apply rules consistently and fairly.""",
            temperature=0.3
        )
    ]
    
    # Test content
    content = """
    I can't believe how stupid the new policy is. The people who made it 
    must have rocks for brains. We should organize a protest!
    """
    
    prompt = f"""Classify the following user content:

{content}

Is this content acceptable, needs_review, or should be rejected?"""
    
    options = ["acceptable", "needs_review", "rejected"]
    
    print("Running content moderation vote...\n")
    result = await workflow.run(voters, prompt, options)
    
    print(f"Execution time: {result.execution_time:.2f}s\n")
    print("Individual votes:")
    for vote in result.votes:
        status = "✓" if vote.success else "✗"
        print(f"  {status} {vote.voter_name}: {vote.decision} ({vote.confidence})")
        if vote.reasoning:
            print(f"      Reasoning: {vote.reasoning[:80]}...")
    
    print(f"\nVote counts: {result.vote_counts}")
    print(f"Winner: {result.winner}")
    print(f"Consensus reached: {result.consensus}")

# fmt: on


SECTION_RULES: list[dict[str, Any]] = [
    {"match": "concise summarizer", "reply": "Record earnings beat expectations; guidance is cautious."},
    {
        "match": "extract key information",
        "reply": "- Earnings beat by 15%\n- Revenue up 23%\n- Hardware down 5%",
    },
    {"match": "sentiment analyst", "reply": "Cautiously optimistic."},
    {
        "match": "anticipate reader questions",
        "reply": "1. Why did hardware decline?\n2. What AI products?\n3. How big is R&D?",
    },
]


def moderator(match: str, decision: str, confidence: str, reasoning: str) -> dict[str, Any]:
    return {"match": match, "data": {"decision": decision, "confidence": confidence, "reasoning": reasoning}}


MODERATION_RULES = [
    moderator("strict content moderator", "rejected", "high", "Insults aimed at the policy's authors."),
    moderator("balanced content moderator", "needs_review", "medium", "Harsh, but a legitimate protest."),
    moderator("lenient content moderator", "acceptable", "medium", "Criticism of a policy is allowed."),
    moderator("deep attention to context", "needs_review", "high", "Calls to organize need a human look."),
    moderator("expert in content policies", "needs_review", "medium", "Borderline under the insult rule."),
]


@pytest.fixture
def anthropic_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point the default model at an emulator; yields a function that starts one."""

    def use(emu: Emulator) -> Emulator:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("QUORUM_MODEL", raising=False)
        return emu

    return use


def request_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    parts = [system] if isinstance(system, str) else [b.get("text", "") for b in system or []]
    for message in body["messages"]:
        content = message["content"]
        parts += [content] if isinstance(content, str) else [b.get("text", "") for b in content]
    return "\n".join(parts)


async def test_analyze_document_example(anthropic_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    async with Emulator(script=SECTION_RULES) as emu:
        anthropic_env(emu)
        await analyze_document_example()
        bodies = [body for _path, body in emu.recent]
    out = capsys.readouterr().out
    assert out.startswith("Analyzing document in parallel...\n")
    assert "Successful sections: ['Summary', 'Key Points', 'Sentiment', 'Questions']" in out
    assert "Failed sections: []" in out
    merged = out.split("=" * 60 + "\n\n", 1)[1]
    assert merged == (
        "## Summary\n\nRecord earnings beat expectations; guidance is cautious.\n\n"
        "## Key Points\n\n- Earnings beat by 15%\n- Revenue up 23%\n- Hardware down 5%\n\n"
        "## Sentiment\n\nCautiously optimistic.\n\n"
        "## Questions\n\n1. Why did hardware decline?\n2. What AI products?\n3. How big is R&D?\n"
    )
    assert len(bodies) == 4
    assert all(f"anthropic/{body['model']}" == DEFAULT_ANTHROPIC for body in bodies)  # the default
    assert all("record quarterly earnings" in request_text(body) for body in bodies)


async def test_analyze_document_example_with_a_failing_section(
    anthropic_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = [{"match": "sentiment analyst", "error": "bad_request"}, *SECTION_RULES]
    async with Emulator(script=rules) as emu:
        anthropic_env(emu)
        await analyze_document_example()
    out = capsys.readouterr().out
    assert "Successful sections: ['Summary', 'Key Points', 'Questions']" in out
    assert "Failed sections: ['Sentiment']" in out
    assert out.index("## Key Points") < out.index("## Questions") < out.index("## Failed sections")
    assert "- Sentiment: BadRequest" in out


async def test_content_moderation_example(anthropic_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    async with Emulator(script=MODERATION_RULES) as emu:
        anthropic_env(emu)
        await content_moderation_example()
        bodies = [body for _path, body in emu.recent]
    out = capsys.readouterr().out
    assert out.startswith("Running content moderation vote...\n")
    assert "Individual votes:" in out
    assert "  ✓ strict_moderator: rejected (high)" in out
    assert "  ✓ balanced_moderator: needs_review (medium)" in out
    assert "  ✓ lenient_moderator: acceptable (medium)" in out
    assert "      Reasoning: Insults aimed at the policy's authors...." in out
    assert "Vote counts: {'rejected': 1, 'needs_review': 3, 'acceptable': 1}" in out
    assert "Winner: needs_review" in out
    assert out.endswith("Consensus reached: True\n")  # 3 of 5 = 0.6, the threshold
    assert len(bodies) == 5
    # Every moderator saw the content to judge and was asked for one of the options.
    for body in bodies:
        text = request_text(body)
        assert "rocks for brains" in text
        assert "acceptable, needs_review, rejected" in text
    assert all(body["tool_choice"]["type"] == "tool" for body in bodies)


async def test_content_moderation_example_with_a_failed_and_an_invalid_vote(
    anthropic_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = [
        {"match": "strict content moderator", "error": "bad_request"},
        {"match": "lenient content moderator", "reply": "DECISION: unacceptable"},
        *MODERATION_RULES,
    ]
    async with Emulator(script=rules) as emu:
        anthropic_env(emu)
        await content_moderation_example()
    out = capsys.readouterr().out
    assert "  ✗ strict_moderator: ERROR (None)" in out
    assert "  ✓ lenient_moderator: UNKNOWN (None)" in out  # "unacceptable" is not "acceptable"
    assert "Vote counts: {'needs_review': 3}" in out
    assert "Winner: needs_review" in out
    assert "Consensus reached: True" in out
