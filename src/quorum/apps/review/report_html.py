"""The review as one self-contained HTML page.

Everything is inline: the stylesheet, the highlighted code (Pygments, with its styles in
the page's stylesheet), the vote matrix and the call timeline (inline SVG). The page
loads nothing and runs no script; a Content-Security-Policy forbids both, so even a
mistake in escaping could not run the code under review. The "confirmed only" toggle is
a checkbox and one CSS rule.

Sections carry stable ids for readers and tests: ``summary``, ``findings``,
``vote-matrix``, ``timeline`` (and ``failed-calls``, ``skipped`` when there are any).
Findings are numbered confirmed first, then potential; finding *n* has the id
``finding-n`` and is column *n* of the vote matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

from pygments import highlight
from pygments.formatter import Formatter
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.lexers.special import TextLexer
from pygments.util import ClassNotFound

from quorum.apps.review import _html_assets as assets
from quorum.apps.review.model import CodeReviewResult, FindingGroup, UnitReview
from quorum.apps.review.reference import ADVISORY_NOTE
from quorum.apps.review.report_json import (
    Excerpt,
    category_title,
    excerpt,
    group_cwe,
    group_ids,
    reviewer_names,
)
from quorum.apps.review.report_text import format_cost, format_counts, skipped_count

_FAILED_STATUSES = {"error", "timeout"}


def to_html(result: CodeReviewResult) -> str:
    """The whole review as one HTML document (a string; write it with UTF-8)."""
    numbered = _numbered(result)
    body = [
        _header(result),
        _advisory(result),
        _summary(result),
        _findings(result, numbered),
        _vote_matrix(result, numbered),
        _timeline(result),
        _failed_calls(result),
        _skipped(result),
        _footer(result),
    ]
    return _page(f"Security code review: {result.risk_consensus.upper()} risk", "\n".join(body))


@dataclass(frozen=True)
class _Numbered:
    """A group with its number on the page (confirmed first) and its stable id."""

    number: int
    group: FindingGroup
    gid: str


def _numbered(result: CodeReviewResult) -> list[_Numbered]:
    pairs = list(zip(result.groups, group_ids(result), strict=True))
    ordered = [p for p in pairs if p[0].confirmed] + [p for p in pairs if not p[0].confirmed]
    return [_Numbered(n, group, gid) for n, (group, gid) in enumerate(ordered, 1)]


def _page(title: str, body: str) -> str:
    css = assets.CSS + _code_css()
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{assets.CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


# -- header and summary ----------------------------------------------------------------


def _header(result: CodeReviewResult) -> str:
    meta = [f"{len(reviewer_names(result))} reviewers", f"confirmed at {result.confirmation_threshold} votes"]
    if result.model:
        meta.insert(0, f"model {result.model}")
    links = " ".join(
        f'<a href="#{anchor}">{label}</a>'
        for anchor, label in (
            ("summary", "Summary"),
            ("findings", "Findings"),
            ("vote-matrix", "Votes"),
            ("timeline", "Timeline"),
        )
    )
    return (
        f'<header><h1>Security code review</h1><p class="meta">{escape(" · ".join(meta))}</p>'
        f"<nav>{links}</nav></header>"
    )


def _advisory(result: CodeReviewResult) -> str:
    if not result.advisory:
        return ""
    return f'<section id="advisory"><p class="note"><strong>{escape(ADVISORY_NOTE)}</strong></p></section>'


def _summary(result: CodeReviewResult) -> str:
    risk = _token(result.risk_consensus)
    stats = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in _stats(result))
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'<p>Overall risk <span class="risk risk-{risk}">{escape(result.risk_consensus.upper())}</span> '
        f"with {result.confidence:.0%} of reviewers agreeing.{_raised(result)}</p>"
        f'<dl class="stats">{stats}</dl>{_time_bars(result)}</section>'
    )


def _raised(result: CodeReviewResult) -> str:
    if not result.risk_from_reviewers:
        return ""
    said = escape(result.risk_from_reviewers.upper())
    return f" It is the severity of the most severe confirmed finding; the reviewers said {said}."


def _stats(result: CodeReviewResult) -> list[tuple[str, str]]:
    summary = result.summary
    stats = [
        ("Confidence", f"{result.confidence:.0%}"),
        ("Confirmed findings", str(len(result.confirmed))),
        ("Potential issues", str(len(result.potential))),
        ("Files reviewed", str(len(result.files))),
        ("Files skipped", skipped_count(result)),
        ("Reviewers", str(len(reviewer_names(result)))),
    ]
    if summary.total:
        stats += [
            ("Calls", f"{summary.total} ({format_counts(summary.counts)})"),
            ("Retries", str(summary.retries)),
            ("Tokens in / out", f"{summary.usage.prompt_tokens:,} / {summary.usage.output_tokens:,}"),
            ("Cost", format_cost(summary.cost)),
            ("Wall time", f"{summary.wall_s:.2f} s"),
            ("Time in calls", f"{summary.busy_s:.2f} s"),
            ("Time saved", f"{summary.time_saved_s:.2f} s"),
        ]
    else:
        stats.append(("Review time", f"{result.execution_time:.2f} s"))
    if summary.stopped:
        stats.append(("Stopped early", summary.stopped))
    return stats


def _time_bars(result: CodeReviewResult) -> str:
    """Wall time against the time the calls took in total: the chapter's "time saved"."""
    wall, busy = result.summary.wall_s, result.summary.busy_s
    longest = max(wall, busy)
    if longest <= 0:
        return ""
    rows = [("wall", "Wall time", wall), ("busy", "Sum of call times", busy)]
    bars = "".join(
        f'<div><span class="label">{label}</span>'
        f'<span class="fill {cls}" style="width:{60 * value / longest:.1f}%"></span>'
        f'<span class="mono">{value:.2f} s</span></div>'
        for cls, label, value in rows
    )
    return f'<div class="bars" aria-label="wall time against time in calls">{bars}</div>'


# -- findings --------------------------------------------------------------------------


def _findings(result: CodeReviewResult, numbered: list[_Numbered]) -> str:
    confirmed = [n for n in numbered if n.group.confirmed]
    potential = [n for n in numbered if not n.group.confirmed]
    parts = [
        '<section id="findings"><h2>Findings</h2>',
        '<p><label><input type="checkbox" id="only-confirmed"> Show confirmed findings only</label></p>',
        f'<h3 class="confirmed-heading">Confirmed ({len(confirmed)})</h3>',
    ]
    if result.nothing_reviewed and result.skipped:
        parts.append(
            '<p class="note"><strong>Nothing was reviewed</strong>: every file was skipped '
            '(see <a href="#skipped">Skipped files</a>). This is not a pass.</p>'
        )
    elif not confirmed:
        parts.append('<p class="note">No finding reached the confirmation threshold.</p>')
    parts += [_finding(result, n) for n in confirmed]
    if potential:
        parts.append(
            f'<div class="potential"><h3>Potential issues ({len(potential)})</h3>'
            f'<p class="note">Reported by fewer than {result.confirmation_threshold} reviewers: '
            "worth a look, not confirmed.</p></div>"
        )
        parts += [_finding(result, n) for n in potential]
    parts.append("</section>")
    return "\n".join(parts)


def _finding(result: CodeReviewResult, item: _Numbered) -> str:
    group = item.group
    kind = "confirmed" if group.confirmed else "potential"
    severity = _token(group.severity)
    cwe = group_cwe(group)
    reporters = ", ".join(group.reporters)
    header = (
        f'<h4><span class="sev sev-{escape(severity)}">{escape(severity)}</span> '
        f"{item.number}. {escape(category_title(group.category))}"
        + (f' <span class="tag">CWE-{cwe}</span>' if cwe is not None else "")
        + f' <span class="tag">{kind}</span>{_advisory_tag(result, group)}</h4>'
        f"<p><code>{escape(group.location)}</code> · {group.vote_count} of "
        f"{len(reviewer_names(result))} reviewers: {escape(reporters)}"
        + (f" · confirmed by rule: {escape(group.confirmed_by_rule)}" if group.confirmed_by_rule else "")
        + "</p>"
    )
    return (
        f'<article class="finding {kind}" id="finding-{item.number}" data-group-id="{escape(item.gid)}">'
        f"{header}{_descriptions(group)}{_excerpt_html(result, group)}</article>"
    )


def _advisory_tag(result: CodeReviewResult, group: FindingGroup) -> str:
    """Findings only the model made, when its prose is not shown, are advisory."""
    if result.advisory and all(f.source == "llm" for f in group.findings):
        return ' <span class="tag advisory">advisory</span>'
    return ""


def _descriptions(group: FindingGroup) -> str:
    said = "".join(
        f"<li><strong>{escape(f.reviewer)}</strong>: {escape(f.description)}</li>" for f in group.findings
    )
    fixes = list(dict.fromkeys(f.recommendation.strip() for f in group.findings if f.recommendation.strip()))
    fix_html = "".join(f"<li>{escape(fix)}</li>" for fix in fixes)
    return f"<ul>{said}</ul>" + (f"<p><strong>Fix</strong></p><ul>{fix_html}</ul>" if fixes else "")


def _excerpt_html(result: CodeReviewResult, group: FindingGroup) -> str:
    found = excerpt(result, group)
    if found is None:
        return '<p class="note">Source not available for an excerpt.</p>'
    return f'<div class="excerpt">{_highlight(found, _lexer(result, group.path, found))}</div>'


def _highlight(found: Excerpt, lexer: Lexer) -> str:
    """Pygments escapes the code itself; ``hl_lines`` counts from the excerpt's first
    line, whatever number that line has in the file."""
    flagged = [n - found.start_line + 1 for n, _, mark in found.numbered() if mark]
    formatter = HtmlFormatter(
        cssclass="code", linenos="inline", linenostart=found.start_line, hl_lines=flagged, wrapcode=True
    )
    return str(highlight("\n".join(found.lines) + "\n", lexer, formatter))


def _lexer(result: CodeReviewResult, path: str, found: Excerpt) -> Lexer:
    # stripnl=False: a lexer that dropped leading blank lines would shift every line number.
    options = {"stripnl": False, "ensurenl": True}
    unit = next((u for u in result.units if u.path == path), None)
    try:
        if unit is not None:
            return get_lexer_by_name(unit.language, **options)
        return get_lexer_for_filename(path, "\n".join(found.lines), **options)
    except ClassNotFound:
        return TextLexer(**options)


def _code_css() -> str:
    # Called through the base class, whose signature is typed; the subclass's is not.
    formatter: Formatter[str] = HtmlFormatter(style="default")
    return formatter.get_style_defs(".code")


# -- vote matrix -----------------------------------------------------------------------


def _vote_matrix(result: CodeReviewResult, numbered: list[_Numbered]) -> str:
    reviewers = reviewer_names(result)
    if not numbered or not reviewers:
        return '<section id="vote-matrix"><h2>Votes</h2><p class="note">Nothing was reported.</p></section>'
    head = "".join(_matrix_column(item) for item in numbered)
    rows = "".join(_matrix_row(result, name, numbered) for name in reviewers)
    totals = "".join(f'<td class="{_kind(i.group)}">{i.group.vote_count}</td>' for i in numbered)
    return (
        '<section id="vote-matrix"><h2>Votes</h2>'
        '<p class="note">Rows are reviewers, columns are findings; ● marks a reviewer that reported the '
        "finding. Shaded columns are confirmed.</p>"
        f'<table class="matrix"><thead><tr><th scope="col">Reviewer</th>{head}'
        f'<th scope="col">Total</th></tr></thead><tbody>{rows}</tbody>'
        f'<tfoot><tr><th scope="row">Votes</th>{totals}<td></td></tr></tfoot></table></section>'
    )


def _matrix_column(item: _Numbered) -> str:
    group = item.group
    label = f"{category_title(group.category)} at {group.location} ({_kind(group)})"
    return (
        f'<th scope="col" class="{_kind(group)}" title="{escape(label)}">'
        f'<a href="#finding-{item.number}">{item.number}</a></th>'
    )


def _matrix_row(result: CodeReviewResult, name: str, numbered: list[_Numbered]) -> str:
    cells = []
    for item in numbered:
        hit = name in item.group.reporters
        mark = "●" if hit else ""
        cells.append(f'<td class="{_kind(item.group)}{" hit" if hit else ""}">{mark}</td>')
    total = sum(name in item.group.reporters for item in numbered)
    failed = any(r.reviewer == name and r.status in _FAILED_STATUSES for r in result.reviews) or any(
        v.reviewer_name == name and not v.success for v in result.votes
    )
    attrs = ' class="failed" title="some calls of this reviewer failed"' if failed else ""
    return f'<tr><th scope="row"{attrs}>{escape(name)}</th>{"".join(cells)}<td>{total}</td></tr>'


def _token(text: str) -> str:
    """A word safe in a class name: the stylesheet colours known severities and risks,
    anything else a model answered gets the neutral colour."""
    return re.sub(r"[^a-z0-9-]+", "-", text.strip().lower()) or "unknown"


def _kind(group: FindingGroup) -> str:
    return "confirmed" if group.confirmed else "potential"


# -- timeline --------------------------------------------------------------------------

_LEFT, _RIGHT, _TOP, _LANE, _GAP, _AXIS = 64, 16, 8, 18, 4, 28
_WIDTH = 960


def _timeline(result: CodeReviewResult) -> str:
    timed = [r for r in result.reviews if r.started_s is not None and r.finished_s is not None]
    head = '<section id="timeline"><h2>Timeline</h2>'
    if not timed:
        return head + '<p class="note">No call timing was recorded.</p></section>'
    lanes = _lanes(timed)
    untimed = len(result.reviews) - len(timed)
    note = f"{len(timed)} calls on {len(lanes)} concurrent slots; a bar is one call, colour by reviewer." + (
        f" {untimed} calls without timing are not shown." if untimed else ""
    )
    return head + f'<p class="note">{note}</p>{_legend(result)}{_svg(result, lanes)}</section>'


def _lanes(reviews: list[UnitReview]) -> list[list[UnitReview]]:
    """Calls packed into slots, first fit by start time: a slot holds calls that did not
    overlap, so the number of slots is the most calls that ran at once."""
    lanes: list[list[UnitReview]] = []
    for review in sorted(reviews, key=lambda r: (_start(r), _end(r))):
        lane = next((lane for lane in lanes if _end(lane[-1]) <= _start(review) + 1e-9), None)
        if lane is None:
            lanes.append([review])
        else:
            lane.append(review)
    return lanes


def _svg(result: CodeReviewResult, lanes: list[list[UnitReview]]) -> str:
    span = max(max(_end(r) for lane in lanes for r in lane), 1e-3)
    height = _TOP + len(lanes) * (_LANE + _GAP) + _AXIS
    colours = _colours(result)
    parts = [
        f'<svg class="timeline" viewBox="0 0 {_WIDTH} {height}" '
        f'role="img" aria-label="timeline of {sum(map(len, lanes))} calls over {span:.2f} seconds">'
    ]
    parts += _axis(span, height)
    for index, lane in enumerate(lanes):
        y = _TOP + index * (_LANE + _GAP)
        parts.append(
            f'<rect class="lane" x="{_LEFT}" y="{y}" width="{_WIDTH - _LEFT - _RIGHT}" height="{_LANE}"/>'
            f'<text x="{_LEFT - 6}" y="{y + _LANE - 5}" text-anchor="end">slot {index + 1}</text>'
        )
        parts += [_bar(r, y, span, colours) for r in lane]
    parts.append("</svg>")
    return "".join(parts)


def _axis(span: float, height: float) -> list[str]:
    """Vertical grid lines and labels at a round step, and the axis title."""
    base = height - _AXIS
    step = _tick_step(span)
    parts = [f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{_WIDTH - _RIGHT}" y2="{base}"/>']
    for i in range(int(span / step + 1e-9) + 1):
        x = _x(i * step, span)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{base}"/>'
            f'<text x="{x:.1f}" y="{base + 14}" text-anchor="middle">{i * step:g}</text>'
        )
    parts.append(f'<text x="{_WIDTH - _RIGHT}" y="{base + 26}" text-anchor="end">seconds</text>')
    return parts


def _tick_step(span: float) -> float:
    """The smallest step of 1, 2 or 5 times a power of ten that gives at most 10 ticks."""
    exponent = -3
    while True:
        for mantissa in (1, 2, 5):
            step = mantissa * 10.0**exponent
            if span / step <= 10:
                return step
        exponent += 1


def _bar(review: UnitReview, y: float, span: float, colours: dict[str, str]) -> str:
    start, end = _start(review), _end(review)
    x, width = _x(start, span), max(1.0, _x(end, span) - _x(start, span))
    status = review.status
    if status in _FAILED_STATUSES:
        fill, cls = assets.FAILED, "failed"
    elif status != "ok":
        fill, cls = assets.STOPPED, "stopped"
    else:
        fill, cls = colours.get(review.reviewer, assets.PALETTE[0]), "ok"
    tip = f"{review.reviewer} on {review.unit.key}: {status}, {start:.2f}–{end:.2f} s"
    if review.error:
        tip += f" — {review.error}"
    return (
        f'<rect class="{cls}" x="{x:.1f}" y="{y + 2}" width="{width:.1f}" height="{_LANE - 4}" '
        f'fill="{fill}" rx="2"><title>{escape(tip)}</title></rect>'
    )


def _legend(result: CodeReviewResult) -> str:
    items = [(name, colour) for name, colour in _colours(result).items()]
    items += [("failed (error, timeout)", assets.FAILED), ("cancelled or skipped", assets.STOPPED)]
    spans = "".join(
        f'<span><i style="background:{colour}"></i>{escape(name)}</span>' for name, colour in items
    )
    return f'<p class="legend">{spans}</p>'


def _colours(result: CodeReviewResult) -> dict[str, str]:
    names = reviewer_names(result)
    return {name: assets.PALETTE[i % len(assets.PALETTE)] for i, name in enumerate(names)}


def _x(seconds: float, span: float) -> float:
    return _LEFT + (_WIDTH - _LEFT - _RIGHT) * seconds / span


def _start(review: UnitReview) -> float:
    return max(0.0, review.started_s or 0.0)


def _end(review: UnitReview) -> float:
    return max(_start(review), review.finished_s or 0.0)


# -- failures, skips, footer -----------------------------------------------------------


def _failed_calls(result: CodeReviewResult) -> str:
    failed = [r for r in result.reviews if r.status != "ok"]
    if not failed:
        return ""
    rows = "".join(
        f"<tr><td>{escape(r.reviewer)}</td><td><code>{escape(r.unit.key)}</code></td>"
        f"<td>{escape(r.status)}</td><td>{escape(r.error or '(no message)')}</td></tr>"
        for r in failed
    )
    return (
        f'<section id="failed-calls"><h2>Failed calls ({len(failed)})</h2><table><thead><tr>'
        f"<th>Reviewer</th><th>Unit</th><th>Status</th><th>Error</th></tr></thead><tbody>{rows}</tbody>"
        "</table></section>"
    )


def _skipped(result: CodeReviewResult) -> str:
    if not result.skipped:
        return ""
    ordered = result.unreadable + [s for s in result.skipped if not s.unreadable]
    rows = "".join(
        f'<tr class="{"unreadable" if s.unreadable else "left-out"}"><td><code>{escape(s.path)}</code></td>'
        f"<td>{escape(s.reason)}</td><td>{escape(s.detail)}</td></tr>"
        for s in ordered
    )
    intro = (
        f'<p class="note">{len(result.unreadable)} of these could not be read, so were not reviewed.</p>'
        if result.unreadable
        else ""
    )
    return (
        f'<section id="skipped"><h2>Skipped files ({len(result.skipped)})</h2>{intro}'
        "<table><thead><tr><th>File</th><th>Reason</th><th>Detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


def _footer(result: CodeReviewResult) -> str:
    line = result.summary.line() if result.summary.total else f"Review time {result.execution_time:.2f} s"
    return f"<footer>{escape(line)}</footer>"
