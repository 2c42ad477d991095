"""What a voter is asked to answer, and how its answer is read.

Where the provider supports structured output, a voter answers a JSON schema whose
``decision`` is an enum of the options (small models follow an enum reliably under a
grammar), with ``confidence`` and a short ``reasoning``. Otherwise the chapter's text
format is asked for and parsed: ``DECISION:``, ``CONFIDENCE:``, ``REASONING:`` lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CONFIDENCES = ("high", "medium", "low")
REASONING_MAX_CHARS = 300


def decision_schema(options: Sequence[str] | None) -> dict[str, Any]:
    decision: dict[str, Any] = {"type": "string", "description": "your choice"}
    if options:
        decision = {"type": "string", "enum": list(options), "description": "exactly one of the options"}
    else:
        decision["maxLength"] = 200
    return {
        "type": "object",
        "properties": {
            "decision": decision,
            "confidence": {"type": "string", "enum": list(CONFIDENCES)},
            "reasoning": {"type": "string", "maxLength": REASONING_MAX_CHARS},
        },
        "required": ["decision", "confidence", "reasoning"],
        "additionalProperties": False,
    }


def structured_prompt(prompt: str, options: Sequence[str] | None) -> str:
    if options:
        return (
            f"{prompt}\n\nYou must choose exactly one of these options: {', '.join(options)}\n"
            "Give your decision, your confidence (high, medium or low) and a brief reasoning."
        )
    return f"{prompt}\n\nGive your decision, your confidence (high, medium or low) and a brief reasoning."


def text_prompt(prompt: str, options: Sequence[str] | None) -> str:
    """The chapter's prompt, for providers without structured output."""
    choice = f"\n\nYou must choose exactly one of these options: {', '.join(options)}" if options else ""
    return (
        f"{prompt}{choice}\n\nRespond in this format:\nDECISION: [your choice]\n"
        "CONFIDENCE: [high/medium/low]\nREASONING: [brief explanation]"
    )


@dataclass(frozen=True, slots=True)
class Answer:
    decision: str | None
    confidence: str | None
    reasoning: str | None


def from_data(data: Any) -> Answer:
    if not isinstance(data, dict):
        return Answer(None, None, None)
    return Answer(
        _text(data.get("decision")), _confidence(data.get("confidence")), _text(data.get("reasoning"))
    )


def from_text(text: str) -> Answer:
    """The chapter's ``DECISION:`` parsing, tolerant of Markdown bold and indentation. A
    text that is a JSON object (a structured answer that broke its schema, say with the
    option spelled "Needs Review", handed back as text) is read by its fields instead."""
    data = _json_object(text)
    if data is not None:
        return from_data(data)
    return Answer(
        extract_field(text, "DECISION"),
        _confidence(extract_field(text, "CONFIDENCE")),
        extract_field(text, "REASONING"),
    )


def extract_field(text: str, name: str) -> str | None:
    pattern = re.compile(rf"^\W*{name}\W*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)
    match = pattern.search(text)
    if match is None:
        return None
    value = match.group(1).strip().strip("*").strip()
    return value or None


def _json_object(text: str) -> dict[str, Any] | None:
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    if not body.startswith("{"):
        return None
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


def _confidence(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    word = text.strip("[]* ").split()[0].lower() if text.strip("[]* ") else ""
    return word if word in CONFIDENCES else text
