"""The HTML report rendered by a real browser: headless Chromium loads the page from a
file and prints the DOM it built, so these tests see what a reader would.

Needs Debian's chromium (``.ci/install-chromium`` installs it); skipped without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from quorum.apps.review.model import Skipped
from quorum.apps.review.report_html import to_html
from test_review_reports import REVIEWERS, sample_result

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

# Headless, as root in a container, and quiet: nothing that reaches the network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def dom(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The DOM Chromium built from the sample report (rendered once for the module)."""
    return _render(tmp_path_factory, to_html(sample_result()))


def _render(tmp_path_factory: pytest.TempPathFactory, html: str) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed; .ci/install-chromium installs it")
    tmp = tmp_path_factory.mktemp("browser")
    page = tmp / "report.html"
    page.write_text(html, encoding="utf-8")
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<body" in done.stdout, done.stderr[-2000:]
    return done.stdout


def _section(dom: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', dom, re.DOTALL)
    assert match, f"no section {section_id!r} in the rendered page"
    return match[1]


def test_rendered_page_shows_the_summary(dom: str) -> None:
    summary = _section(dom, "summary")
    assert '<span class="risk risk-critical">CRITICAL</span>' in summary
    assert "$0.0421" in summary
    assert "6.80 s" in summary  # time saved
    assert "1 binary, 1 generated, 1 vendored" in summary


def test_rendered_page_shows_the_findings_with_code(dom: str) -> None:
    findings = _section(dom, "findings")
    assert len(re.findall(r'<article class="finding confirmed"', findings)) == 2
    assert len(re.findall(r'<article class="finding potential"', findings)) == 2
    assert "SQL injection" in findings
    assert findings.count('class="hll"') >= 2


def test_rendered_page_shows_the_vote_matrix(dom: str) -> None:
    matrix = _section(dom, "vote-matrix")
    rows = re.findall(r'<th scope="row"[^>]*>([^<]+)</th>', matrix.split("<tfoot>")[0])
    assert rows == REVIEWERS
    assert matrix.count('hit">●</td>') == 7  # 3 + 2 + 1 + 1 votes


def test_rendered_page_shows_the_timeline(dom: str) -> None:
    timeline = _section(dom, "timeline")
    assert timeline.count("<rect class=") == 10 + 3  # ten calls, three lanes
    assert ">seconds</text>" in timeline


def test_script_in_reviewed_code_did_not_run(dom: str) -> None:
    # The reviewed code sets document.title; had it run, the title would say so.
    assert "<title>Security code review: CRITICAL risk</title>" in dom
    assert "pwned</title>" not in dom
    # No script element exists at all: the code reached the DOM as text, escaped.
    assert "<script" not in dom.lower()
    assert "&lt;script&gt;document.title = 'pwned'&lt;/script&gt;" in dom


def test_rendered_page_lists_skipped_files_unreadable_first(tmp_path_factory: pytest.TempPathFactory) -> None:
    result = sample_result()
    result.skipped = [
        Skipped("vendor/jquery.js", "vendored"),
        Skipped(
            "data/big.py",
            "too large",
            "10,485,760 bytes, over the limit of 1,000,000; raise it with --max-file-size",
        ),
        Skipped(
            "<img src=x onerror=alert(1)>.py",
            "not UTF-8",
            "first bad byte on line 2; convert the file to UTF-8",
        ),
    ]
    skipped = _section(_render(tmp_path_factory, to_html(result)), "skipped")
    assert "<h2>Skipped files (3)</h2>" in skipped
    assert "2 of these could not be read, so were not reviewed." in skipped
    rows = re.findall(
        r'<tr class="([\w-]+)"><td><code>(.*?)</code></td><td>(.*?)</td><td>(.*?)</td></tr>', skipped
    )
    assert [(kind, reason) for kind, _path, reason, _detail in rows] == [
        ("unreadable", "too large"),
        ("unreadable", "not UTF-8"),
        ("left-out", "vendored"),
    ]
    assert "raise it with --max-file-size" in rows[0][3]
    assert rows[1][1] == "&lt;img src=x onerror=alert(1)&gt;.py"  # a file name is text, never markup
    assert "<img" not in skipped
