"""The review reports: text (the chapter's layout), JSON, Markdown and HTML.

Results are built by hand from the data model, so these tests pin what each report
shows without running a review. ``sample_result`` is shared with the SARIF and browser
tests.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from typing import Any

import pytest

from quorum.apps.review.model import (
    CodeReviewResult,
    Finding,
    FindingGroup,
    ReviewerVote,
    Skipped,
    Unit,
    UnitReview,
    Vulnerability,
)
from quorum.apps.review.report_html import to_html
from quorum.apps.review.report_json import dumps, group_ids, to_json
from quorum.apps.review.report_markdown import to_markdown
from quorum.apps.review.report_text import format_review_report
from quorum.apps.review.taxonomy import CWE_OF, Category
from quorum.engine.outcome import Summary
from quorum.llm.types import Usage

REVIEWERS = ["injection", "auth", "crypto", "data", "logic"]

LOGIN = """API_KEY = "sk-live-1234"

def login(db, username, password):
    query = f"SELECT * FROM users WHERE name='{username}' AND pw='{password}'"
    return db.execute(query)
"""

# Code under review that would run in the page if the report did not escape it.
VIEWS = """def page(name):
    html = "<h1>Hello</h1>"
    html += "<script>document.title = 'pwned'</script>" + name
    return html
"""


def finding(reviewer: str, category: Category, path: str, start: int, end: int, **extra: Any) -> Finding:
    fields: dict[str, Any] = {
        "severity": "high",
        "confidence": "high",
        "description": f"{reviewer} saw {category.value}",
        "recommendation": f"fix the {category.value}",
        "cwe": CWE_OF[category],
    }
    fields.update(extra)
    return Finding(reviewer=reviewer, category=category, path=path, start_line=start, end_line=end, **fields)


def sample_groups() -> list[FindingGroup]:
    sql = [
        finding(name, Category.SQL_INJECTION, "app/login.py", 4, 5, severity=sev)
        for name, sev in (("injection", "critical"), ("auth", "high"), ("data", "high"))
    ]
    secret = [finding(n, Category.HARDCODED_SECRET, "app/login.py", 1, 1) for n in ("crypto", "data")]
    xss = finding(
        "injection",
        Category.XSS,
        "app/views.py",
        3,
        3,
        severity="medium",
        description="Reflected <b>name</b> | unescaped * into HTML",
    )
    other = finding("logic", Category.OTHER, "app/views.py", 1, 1, severity="low", cwe=1321)
    return [
        FindingGroup(sql, confirmed=True),
        FindingGroup(secret, confirmed=True),
        FindingGroup([xss]),
        FindingGroup([other]),
    ]


def sample_units() -> list[Unit]:
    return [
        Unit("app/login.py", "login", "function", 1, 5, LOGIN),
        Unit("app/views.py", "page", "function", 1, 4, VIEWS),
    ]


def sample_reviews(units: list[Unit]) -> list[UnitReview]:
    """Every reviewer on every unit, three at a time; logic's two calls fail."""
    reviews = []
    for n, (name, unit) in enumerate((name, unit) for unit in units for name in REVIEWERS):
        start = (n // 3) * 1.1
        status, error = "ok", None
        if name == "logic":
            status, error = (
                ("error", "RateLimited: 429 rate limit exceeded")
                if unit.path.endswith("login.py")
                else ("timeout", "Timeout: no answer in 30 s")
            )
        reviews.append(
            UnitReview(
                reviewer=name,
                unit=unit,
                status=status,
                error=error,
                usage=Usage(1200, 340),
                cost=0.004,
                started_s=start,
                finished_s=start + 1.0,
            )
        )
    return reviews


def sample_votes() -> list[ReviewerVote]:
    votes = []
    for name in REVIEWERS:
        if name == "logic":
            votes.append(
                ReviewerVote(name, [], "unknown", success=False, error="RateLimited: 429 rate limit")
            )
            continue
        found = [Vulnerability("sql_injection", "high", "app/login.py:4", "bad", "bind parameters")]
        votes.append(ReviewerVote(name, found, "critical" if name != "crypto" else "high"))
    return votes


def sample_result() -> CodeReviewResult:
    """Two confirmed groups, two potential ones, a failed reviewer, skipped files, a
    ``<script>`` in the reviewed code and a run summary."""
    groups = sample_groups()
    units = sample_units()
    return CodeReviewResult(
        votes=sample_votes(),
        confirmed_vulnerabilities=[g.as_chapter_dict() for g in groups],
        risk_consensus="critical",
        confidence=0.75,
        execution_time=3.214,
        groups=groups,
        units=units,
        reviews=sample_reviews(units),
        files=["app/login.py", "app/views.py"],
        skipped=[
            Skipped("vendor/jquery.js", "vendored"),
            Skipped("static/logo.png", "binary"),
            Skipped("static/app.min.js", "generated"),
        ],
        reviewers=list(REVIEWERS),
        confirmation_threshold=2,
        model="fake/reviewer",
        summary=Summary(
            counts={"ok": 8, "error": 1, "timeout": 1},
            usage=Usage(12000, 3400),
            cost=0.0421,
            wall_s=3.2,
            busy_s=10.0,
            retries=2,
        ),
        sources={"app/login.py": LOGIN, "app/views.py": VIEWS},
    )


def chapter_result() -> CodeReviewResult:
    """A result built the chapter's way: only its five fields, dicts without CWE."""
    return CodeReviewResult(
        votes=[
            ReviewerVote("injection_specialist", [], "high"),
            ReviewerVote("auth_specialist", [], "unknown", success=False, error="boom"),
        ],
        confirmed_vulnerabilities=[
            {
                "type": "SQL Injection",
                "severity": "high",
                "location": "login function",
                "descriptions": ["f-string query"],
                "recommendations": ["parameterise"],
                "reporters": ["injection_specialist"],
                "vote_count": 1,
                "confirmed": False,
            }
        ],
        risk_consensus="high",
        confidence=1.0,
        execution_time=1.5,
    )


# -- text ------------------------------------------------------------------------------


def test_text_report_keeps_the_chapter_layout() -> None:
    report = format_review_report(sample_result())
    lines = report.splitlines()
    assert lines[:3] == ["=" * 60, "SECURITY CODE REVIEW REPORT", "=" * 60]
    order = ["Overall Risk: CRITICAL", "Confidence: 75%", "Review Time: 3.21s", "Reviewer Assessments:"]
    order += ["CONFIRMED VULNERABILITIES (2):", "POTENTIAL ISSUES (2) - needs further review:"]
    positions = [report.index(heading) for heading in order]
    assert positions == sorted(positions)
    assert lines[-1] == "=" * 60


def test_text_report_splits_confirmed_from_potential() -> None:
    report = format_review_report(sample_result())
    confirmed, potential = report.split("POTENTIAL ISSUES")
    assert "1. [CRITICAL] sql_injection (CWE-89)" in confirmed
    assert "   Location: app/login.py:4-5" in confirmed
    assert "   Votes: 3 reviewers (injection, auth, data)" in confirmed
    assert "2. [HIGH] hardcoded_secret (CWE-798)" in confirmed
    assert "xss" not in confirmed
    assert "  - [medium] xss (CWE-79) at app/views.py:3 (1 vote)" in potential
    assert "  - [low] other (CWE-1321) at app/views.py:1 (1 vote)" in potential


def test_text_report_shows_failures_files_and_the_run() -> None:
    report = format_review_report(sample_result())
    assert "  logic: ERROR - RateLimited: 429 rate limit" in report
    assert "  injection: critical (1 issue)" in report
    assert "Failed Calls (2):" in report
    assert "  logic on app/login.py:1-5: error - RateLimited: 429 rate limit exceeded" in report
    assert "  logic on app/views.py:1-4: timeout - Timeout: no answer in 30 s" in report
    assert "Files Reviewed: 2" in report
    assert "Files Skipped: 3 (1 binary, 1 generated, 1 vendored)" in report
    assert f"Run: {sample_result().summary.line()}" in report


def test_text_report_renders_a_result_built_the_chapter_way() -> None:
    report = format_review_report(chapter_result())
    assert "No confirmed vulnerabilities (threshold not met)" in report
    assert "  - [high] SQL Injection at login function (1 vote)" in report
    assert "  auth_specialist: ERROR - boom" in report
    assert "Files Reviewed" not in report
    assert "Run:" not in report
    assert "Failed Calls" not in report


def test_text_report_clips_long_descriptions_to_one_line() -> None:
    result = chapter_result()
    result.confirmed_vulnerabilities[0].update(confirmed=True, descriptions=["", "word\n" * 100])
    line = next(x for x in format_review_report(result).splitlines() if "Description:" in x)
    assert line.startswith("   Description: word word")
    assert line.endswith("…")
    assert len(line) == len("   Description: ") + 200


# -- JSON ------------------------------------------------------------------------------


def _only_json_types(value: Any, path: str = "$") -> None:
    """Exactly JSON's types: a str subclass (an enum) or a float NaN would slip into
    ``json.dumps`` unnoticed."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, path
            _only_json_types(item, f"{path}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _only_json_types(item, f"{path}[{n}]")
    else:
        assert type(value) in (str, int, float, bool, type(None)), f"{path}: {type(value).__name__}"
        assert not (isinstance(value, float) and not math.isfinite(value)), path


def test_json_round_trips_with_the_documented_fields() -> None:
    data = json.loads(dumps(sample_result()))
    assert data == to_json(sample_result())
    assert (data["schema"], data["schema_version"]) == ("quorum.review", 2)
    assert data["risk"] == {"consensus": "critical", "confidence": 0.75, "from_reviewers": "critical"}
    summary = data["summary"]
    assert summary["tasks"] == 10
    assert summary["counts"] == {"error": 1, "ok": 8, "timeout": 1}
    assert summary["usage"]["input_tokens"] == 12000
    assert summary["usage"]["output_tokens"] == 3400
    assert (summary["cost_usd"], summary["wall_s"], summary["busy_s"], summary["time_saved_s"]) == (
        0.0421,
        3.2,
        10.0,
        6.8,
    )
    sql = data["groups"][0]
    assert sql["reporters"] == ["auth", "data", "injection"]
    assert sql["vote_count"] == 3
    assert (sql["confirmed"], sql["severity"], sql["cwe"], sql["category"]) == (
        True,
        "critical",
        89,
        "sql_injection",
    )
    assert (sql["file"], sql["start_line"], sql["end_line"]) == ("app/login.py", 4, 5)
    assert len(sql["descriptions"]) == 3
    assert sql["excerpt"]["start_line"] == 2
    assert [v["reviewer"] for v in data["votes"]] == REVIEWERS
    assert data["units"][0]["key"] == "app/login.py:1-5"
    failed = [r for r in data["reviews"] if r["status"] != "ok"]
    assert [r["error"] for r in failed] == [
        "RateLimited: 429 rate limit exceeded",
        "Timeout: no answer in 30 s",
    ]
    assert data["reviews"][0]["duration_s"] == 1.0
    assert data["skipped_counts"] == {"vendored": 1, "binary": 1, "generated": 1}
    _only_json_types(to_json(sample_result()))


def test_json_never_writes_nan_or_infinity() -> None:
    result = sample_result()
    result.confidence = math.nan
    result.summary.cost = math.inf
    result.reviews[0].started_s = math.nan
    text = dumps(result)
    assert "NaN" not in text
    assert "Infinity" not in text
    data = json.loads(text)
    assert data["risk"]["confidence"] is None
    assert data["summary"]["cost_usd"] is None
    assert data["reviews"][0]["duration_s"] is None


def test_group_ids_survive_moved_code_and_differ_between_groups() -> None:
    result = sample_result()
    before = group_ids(result)
    assert len(set(before)) == len(before)
    # Three blank lines on top and reindented code: same weakness, same code, new lines.
    moved = sample_result()
    moved.sources["app/login.py"] = "\n\n\n" + LOGIN.replace("    query", "        query")
    for group in moved.groups:
        if group.path == "app/login.py":
            group.findings = [
                replace(f, start_line=f.start_line + 3, end_line=f.end_line + 3) for f in group.findings
            ]
    assert group_ids(moved) == before


# -- Markdown --------------------------------------------------------------------------


def test_markdown_has_every_section() -> None:
    md = to_markdown(sample_result())
    for heading in (
        "# Security code review",
        "## Confirmed findings (2)",
        "## Potential issues (2)",
        "## Reviewers",
        "## Failed calls (2)",
        "## Skipped files (3)",
    ):
        assert f"\n{heading}\n" in f"\n{md}"
    assert "| Overall risk | **CRITICAL** (confidence 75%) |" in md
    assert "| Cost | $0.0421 |" in md
    assert "| Time | 3.20 s wall, 10.00 s of calls (6.80 s saved by running them in parallel) |" in md
    assert "### 1. Critical: SQL injection (CWE-89) in `app/login.py:4-5`" in md
    assert "| logic | error | 1 | 2 | 2 |" in md


def test_markdown_excerpt_marks_the_flagged_lines() -> None:
    md = to_markdown(sample_result())
    block = md.split("```python\n", 1)[1].split("\n```", 1)[0].splitlines()
    assert block[0].startswith("  2 | ")
    assert [line[:4] for line in block] == ["  2 ", "  3 ", "> 4 ", "> 5 "]


def test_markdown_escapes_what_reviewers_wrote() -> None:
    md = to_markdown(sample_result())
    row = next(line for line in md.splitlines() if "Cross-site scripting" in line)
    assert "&lt;b&gt;name&lt;/b&gt; \\| unescaped \\* into HTML" in row
    assert len(re.findall(r"(?<!\\)\|", row)) == 7  # six cells: the escaped pipe added none


def test_markdown_fence_outlasts_backticks_in_the_code() -> None:
    result = sample_result()
    result.sources["app/login.py"] = LOGIN.replace("return", "```\nreturn")
    assert "\n````python\n" in to_markdown(result)


# -- HTML (as text; tests/test_review_html_browser.py renders it) ------------------------


def test_html_has_the_sections_and_loads_nothing() -> None:
    page = to_html(sample_result())
    for section in ("summary", "findings", "vote-matrix", "timeline", "failed-calls", "skipped"):
        assert f'<section id="{section}">' in page
    assert "http://" not in page
    assert "https://" not in page
    assert "Content-Security-Policy" in page
    assert "script-src 'none'" in page
    assert page.count('<article class="finding confirmed"') == 2
    assert page.count('<article class="finding potential"') == 2


def test_html_escapes_code_and_descriptions() -> None:
    page = to_html(sample_result())
    assert "<script" not in page.lower()
    assert "document.title" in page  # the code is on the page, as text
    assert "<b>name</b>" not in page
    assert "&lt;b&gt;name&lt;/b&gt;" in page


def test_html_marks_flagged_lines_in_highlighted_code() -> None:
    page = to_html(sample_result())
    sql = page.split('id="finding-1"', 1)[1].split("</article>", 1)[0]
    assert sql.count('class="hll"') == 2  # lines 4 and 5 of the file
    assert re.search(r'<span class="linenos">\s*2</span>', sql)  # numbered as in the file
    assert 'class="k"' in sql or 'class="kn"' in sql  # Pygments tokens


def test_html_vote_matrix_rows_are_reviewers_and_columns_findings() -> None:
    page = to_html(sample_result())
    matrix = page.split('<section id="vote-matrix">', 1)[1].split("</section>", 1)[0]
    body = matrix.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = body.split("</tr>")[:-1]
    assert len(rows) == len(REVIEWERS)
    assert [re.search(r">([a-z]+)</th>", row)[1] for row in rows] == REVIEWERS  # type: ignore[index]
    injection = rows[0]
    assert injection.count("●") == 2  # the SQL injection and the XSS
    assert injection.count('class="confirmed hit"') == 1
    assert matrix.count('<th scope="col" class="confirmed"') == 2
    assert 'class="failed"' in rows[4]


def test_html_timeline_draws_every_call_and_failures_apart() -> None:
    page = to_html(sample_result())
    svg = page.split('<section id="timeline">', 1)[1].split("</section>", 1)[0]
    assert svg.count('<rect class="ok"') == 8
    assert svg.count('<rect class="failed"') == 2
    assert "slot 3" in svg
    assert "slot 4" not in svg
    assert ">seconds</text>" in svg
    assert ">0</text>" in svg


@pytest.mark.parametrize("render", [to_html, to_markdown, format_review_report, dumps])
def test_reports_render_an_empty_review(render: Any) -> None:
    empty = CodeReviewResult(
        votes=[], confirmed_vulnerabilities=[], risk_consensus="none", confidence=0.0, execution_time=0.0
    )
    assert render(empty)
