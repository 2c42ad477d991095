"""A reviewer's answer: the schema it fills in, and how the answer is read.

The structured answer is bounded everywhere (enums, ``maxLength``, ``maxItems``), so the
longest answer the schema allows is known in advance: the request asks for that many
tokens and a small model's JSON is never cut off halfway. The bounds shrink with the
model's context (``Bounds.for_context``), since the answer's room is taken from the code's.

The text answer is the chapter's format (``VULNERABILITY 1:``, ``TYPE:``, ``SEVERITY:``,
``LOCATION:``, ``DESCRIPTION:``, ``RECOMMENDATION:``, ``OVERALL_RISK:``), read when a
provider has no structured output or answered text instead. Its free-text ``TYPE`` is
mapped to a ``Category`` by keywords, its ``LOCATION`` to lines.

A request's schema bounds the line numbers to the unit under review (``minimum`` and
``maximum``: a grammar-constrained decoder cannot step outside them). Lines that arrive
outside anyway (a provider that takes the schema as a hint, or a text answer) are
checked against the unit: numbers that are clearly relative to the unit are moved to
file lines, anything else outside it is clamped in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from quorum.apps.review.model import Finding, Unit
from quorum.apps.review.reference import known_cwe
from quorum.apps.review.taxonomy import Category, category_for_cwe, cwe_for, parse_cwe
from quorum.errors import InvalidReply
from quorum.llm.local import longest_answer
from quorum.llm.schema import parse_json

# Mildest first: a small model drifts toward an enum's first value, and a drift toward
# "low" is a weaker false alarm than one toward "critical".
SEVERITY_CHOICES = ("low", "medium", "high", "critical")
CONFIDENCE_CHOICES = ("low", "medium", "high")
RISK_CHOICES = ("none", "low", "medium", "high", "critical")
ANSWER_SHARE = 0.35  # at most this share of a small context goes to the answer
MAX_ANSWER_TOKENS = 8192  # what every current Claude model accepts as max_tokens
TEXT_CLIP = 500
_ITEM_KEYS_CHARS = 220  # keys, punctuation, enums and numbers of one finding, in JSON


@dataclass(frozen=True)
class Bounds:
    """How much one answer may say: findings per unit and characters per text field."""

    max_findings: int = 6
    description_chars: int = 300
    recommendation_chars: int = 200
    # False for a model whose prose is not shown (``Capabilities.writes_prose``): the
    # answer then has no description or recommendation at all, so no tokens go to them.
    prose: bool = True

    @classmethod
    def for_context(cls, max_context: int | None, *, prose: bool = True) -> Bounds:
        """The roomiest bounds whose longest answer takes at most ``ANSWER_SHARE`` of the
        context; the smallest rung when even that does not fit."""
        ladder = [replace(bounds, prose=prose) for bounds in LADDER]
        if max_context is None:
            return ladder[0]
        for bounds in ladder:
            if bounds.grammar_tokens() <= max_context * ANSWER_SHARE:
                return bounds
        return ladder[-1]

    def schema(self, lines: tuple[int, int] | None = None) -> dict[str, Any]:
        """The answer's JSON schema (see the module docs); ``lines`` (first, last) bounds
        the line numbers to the unit under review."""
        return {
            "type": "object",
            "properties": {
                "findings": {"type": "array", "items": self._finding(lines), "maxItems": self.max_findings},
                "overall_risk": {"type": "string", "enum": list(RISK_CHOICES)},
            },
            "required": ["findings", "overall_risk"],
            "additionalProperties": False,
        }

    def _finding(self, lines: tuple[int, int] | None) -> dict[str, Any]:
        line: dict[str, Any] = {"type": "integer"}
        if lines is not None:
            line.update(minimum=lines[0], maximum=lines[1])
        properties: dict[str, Any] = {
            "category": {"type": "string", "enum": [c.value for c in Category]},
            "cwe": {"type": ["integer", "null"]},  # explained in the prompt: small models copy descriptions
            "severity": {"type": "string", "enum": list(SEVERITY_CHOICES)},
            "confidence": {"type": "string", "enum": list(CONFIDENCE_CHOICES)},
            "start_line": line,
            "end_line": line,
        }
        if self.prose:
            properties["description"] = {"type": "string", "maxLength": self.description_chars}
            properties["recommendation"] = {"type": "string", "maxLength": self.recommendation_chars}
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    def max_tokens(self) -> int:
        """Enough tokens for the longest answer: every token spells at least one
        character, so its length in characters bounds it."""
        item = _ITEM_KEYS_CHARS + (self.description_chars + self.recommendation_chars if self.prose else 0)
        return min(MAX_ANSWER_TOKENS, self.max_findings * item + 64)

    def grammar_tokens(self) -> int:
        """What a grammar-constrained decoder (llama.cpp) reserves for the answer: the
        longest JSON text its grammar admits, escapes included, and the end token."""
        bound = longest_answer(self.schema())
        return (bound or self.max_tokens()) + 1


LADDER = (
    Bounds(6, 300, 200),
    Bounds(4, 200, 120),
    Bounds(3, 160, 100),
    Bounds(2, 120, 80),
    Bounds(2, 80, 48),
    Bounds(1, 80, 48),
    Bounds(1, 40, 24),
)


@dataclass(frozen=True)
class Answer:
    """What one reviewer said about one unit."""

    findings: list[Finding]
    overall_risk: str  # one of RISK_CHOICES, or "unknown" when it said none


# -- structured ----------------------------------------------------------------------------


def from_data(data: Any, unit: Unit, reviewer: str) -> Answer:
    """Read a structured answer (already checked against the schema by the provider)."""
    if not isinstance(data, Mapping):
        return Answer([], "unknown")
    items = data.get("findings") or []
    findings = [_finding_from_item(item, unit, reviewer) for item in items if isinstance(item, Mapping)]
    return Answer(findings, _choice(data.get("overall_risk"), RISK_CHOICES, "unknown"))


def _finding_from_item(item: Mapping[str, Any], unit: Unit, reviewer: str) -> Finding:
    stated = known_cwe(parse_cwe(item.get("cwe")))
    category = category_from_text(str(item.get("category", "")), stated)
    start, end = place(_int(item.get("start_line")), _int(item.get("end_line")), unit)
    return Finding(
        reviewer=reviewer,
        category=category,
        cwe=cwe_for(category, stated),
        severity=_choice(item.get("severity"), SEVERITY_CHOICES, "medium"),
        confidence=_choice(item.get("confidence"), CONFIDENCE_CHOICES, "medium"),
        path=unit.path,
        start_line=start,
        end_line=end,
        description=_clean(item.get("description")),
        recommendation=_clean(item.get("recommendation")),
        unit=unit.key,
    )


def from_reply_text(text: str, unit: Unit, reviewer: str) -> Answer:
    """Read an answer that came back as text: JSON that missed the schema (read as
    leniently as the schema allows), else the chapter's text format."""
    try:
        data = parse_json(text, where="reviewer")
    except InvalidReply:
        return from_text(text, unit, reviewer)
    return from_data(data, unit, reviewer)


# -- text ----------------------------------------------------------------------------------

_FIELDS = ("TYPE", "SEVERITY", "LOCATION", "DESCRIPTION", "RECOMMENDATION", "CWE", "CONFIDENCE")
_FIELD_LINE = re.compile(
    r"^[\s*#>_-]*(TYPE|SEVERITY|LOCATION|DESCRIPTION|RECOMMENDATION|CWE|CONFIDENCE|OVERALL[_ ]RISK)"
    r"[\s*_]*:[\s*_]*(.*)$",
    re.IGNORECASE,
)
_VULNERABILITY = re.compile(r"^\W*VULNERABILITY\b", re.IGNORECASE | re.MULTILINE)
_OVERALL = re.compile(r"OVERALL[_ ]RISK\W*:\W*(\w+)", re.IGNORECASE)


def from_text(text: str, unit: Unit, reviewer: str) -> Answer:
    """Read the chapter's text format. An entry needs a TYPE and a DESCRIPTION (as in the
    chapter); the rest have defaults."""
    findings = []
    for block in _VULNERABILITY.split(text)[1:]:
        fields = _fields(block)
        if fields.get("TYPE") and fields.get("DESCRIPTION"):
            findings.append(_finding_from_fields(fields, unit, reviewer))
    match = _OVERALL.search(text)
    risk = _choice(match.group(1) if match else None, RISK_CHOICES, "unknown")
    return Answer(findings, risk)


def _fields(block: str) -> dict[str, str]:
    """``FIELD: value`` lines of one entry; lines that follow a field continue it."""
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in block.splitlines():
        match = _FIELD_LINE.match(line)
        if match:
            current = fields.setdefault(match.group(1).upper().replace(" ", "_"), [])
            current.append(match.group(2))
        elif current is not None and line.strip():
            current.append(line.strip())
    return {name: " ".join(parts).strip().strip("*").strip() for name, parts in fields.items()}


def _finding_from_fields(fields: dict[str, str], unit: Unit, reviewer: str) -> Finding:
    said = parse_cwe(fields.get("CWE")) or _cwe_in(fields["TYPE"]) or _cwe_in(fields["DESCRIPTION"])
    stated = known_cwe(said)  # a model's made-up "CWE-5" is no CWE at all
    category = category_from_text(fields["TYPE"], stated)
    start, end = locate(fields.get("LOCATION", ""), unit)
    return Finding(
        reviewer=reviewer,
        category=category,
        cwe=cwe_for(category, stated),
        severity=_choice(_first_word(fields.get("SEVERITY")), SEVERITY_CHOICES, "medium"),
        confidence=_choice(_first_word(fields.get("CONFIDENCE")), CONFIDENCE_CHOICES, "medium"),
        path=unit.path,
        start_line=start,
        end_line=end,
        description=_clean(fields["DESCRIPTION"]),
        recommendation=_clean(fields.get("RECOMMENDATION")),
        unit=unit.key,
    )


# Checked in order: the specific before the general ("hardcoded password" is a secret,
# not an authentication flaw; "session fixation" is session management).
_KEYWORDS: tuple[tuple[str, Category], ...] = (
    (r"prompt.?injection|instructions? (aimed|addressed) at|\bllm\b", Category.PROMPT_INJECTION),
    (r"\bsql\b|sqli", Category.SQL_INJECTION),
    (r"command|shell|os\.system|subprocess|\brce\b", Category.COMMAND_INJECTION),
    (r"\bxss\b|cross.?site.?script", Category.XSS),
    (r"template|\bssti\b", Category.TEMPLATE_INJECTION),
    (r"\beval\b|\bexec\b|code.?injection|code execution", Category.CODE_INJECTION),
    (r"traversal|\bpath\b", Category.PATH_TRAVERSAL),
    (r"\bssrf\b|server.?side.?request", Category.SSRF),
    (r"\bxxe\b|xml.?external", Category.XXE),
    (r"redirect", Category.OPEN_REDIRECT),
    (r"deseriali|pickle|yaml\.load|marshal", Category.DESERIALIZATION),
    (r"hard.?coded|secret|credential|api.?key", Category.HARDCODED_SECRET),
    (r"random|predictable|guessable|entropy|brute.?forc\w* (token|code)", Category.INSECURE_RANDOM),
    (r"crypt|cipher|hash|md5|sha-?1\b|\bssl\b|\btls\b|certificate", Category.WEAK_CRYPTO),
    (r"csrf|cross.?site.?request", Category.CSRF),
    (r"backdoor|debug|bypass", Category.DEBUG_BACKDOOR),
    (r"session|cookie", Category.SESSION),
    (r"access.?control|authori[sz]|privilege|idor|permission", Category.ACCESS_CONTROL),
    (r"authenticat|password|login|brute", Category.BROKEN_AUTH),
    (r"\blog", Category.SENSITIVE_LOGGING),
    (r"exposure|leak|disclos|plain.?text|sensitive|privacy|\bpii\b", Category.DATA_EXPOSURE),
    (r"denial|\bdos\b|exhaust|redos", Category.DOS),
    (r"injection", Category.CODE_INJECTION),
    (r"validat|saniti[sz]|unchecked input", Category.INPUT_VALIDATION),
)


def category_from_text(text: str, cwe: int | None = None) -> Category:
    """A free-text vulnerability type as a ``Category``: an exact category name, else the
    stated CWE's category, else the first keyword rule that matches, else ``other``."""
    exact = _category(text)
    if exact is not Category.OTHER:
        return exact
    if cwe is not None and category_for_cwe(cwe) is not Category.OTHER:
        return category_for_cwe(cwe)
    lowered = text.lower()
    for pattern, category in _KEYWORDS:
        if re.search(pattern, lowered):
            return category
    return Category.OTHER


# -- lines ---------------------------------------------------------------------------------

_NUMBER = re.compile(r"\d+")
_RANGE = re.compile(r"(\d+)\s*(?:-|–|—|\.\.|to|through)\s*(\d+)")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


def locate(location: str, unit: Unit) -> tuple[int, int]:
    """Lines for a free-text ``LOCATION``: "line 12", "lines 12-14", "12–14", or the name
    of a function defined in the unit; the whole unit when it names nothing we can find."""
    ranged = _RANGE.search(location)
    if ranged:
        return place(int(ranged.group(1)), int(ranged.group(2)), unit)
    number = _NUMBER.search(location)
    if number:
        return place(int(number.group()), int(number.group()), unit)
    return _named(location, unit)


def _named(location: str, unit: Unit) -> tuple[int, int]:
    names = set(_IDENTIFIER.findall(location))
    if unit.name.rsplit(".", 1)[-1] in names:
        return unit.start_line, unit.end_line
    for offset, line in enumerate(unit.code.splitlines()):
        found = re.match(r"\s*(?:async\s+)?(?:def|function|func|fn|class)\s+(\w+)", line)
        if found and found.group(1) in names:
            return unit.start_line + offset, unit.start_line + offset
    return unit.start_line, unit.end_line


def place(start: int | None, end: int | None, unit: Unit) -> tuple[int, int]:
    """Reported lines in file coordinates, inside ``unit``. Numbers outside the unit that
    fit its length are read as counted from the unit's first line (a model that ignored
    the margin); other numbers outside are clamped to the unit's edges."""
    first, last = unit.start_line, unit.end_line
    given = [n for n in (start, end) if n is not None]
    if not given:
        return first, last
    a, b = min(given), max(given)
    if first <= a and b <= last:
        return a, b
    outside = not first <= a <= last and not first <= b <= last
    if outside and first > 1 and a >= 1 and b <= last - first + 1:
        return a + first - 1, b + first - 1
    return min(max(a, first), last), min(max(b, first), last)


# -- small readers -------------------------------------------------------------------------


def _category(text: str) -> Category:
    key = re.sub(r"[\s-]+", "_", text.strip().lower())
    try:
        return Category(key)
    except ValueError:
        return Category.OTHER


def _choice(value: Any, choices: tuple[str, ...], default: str) -> str:
    text = str(value or "").strip().strip("*").strip().lower()
    return text if text in choices else default


def _first_word(text: str | None) -> str | None:
    words = re.findall(r"[A-Za-z]+", text or "")
    return words[0] if words else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    number = _NUMBER.search(str(value or ""))
    return int(number.group()) if number else None


def _cwe_in(text: str) -> int | None:
    found = re.search(r"CWE[-\s]?(\d+)", text, re.IGNORECASE)
    return int(found.group(1)) if found else None


def _clean(value: Any) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= TEXT_CLIP else text[: TEXT_CLIP - 3] + "..."
