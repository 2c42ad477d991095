"""The review as SARIF 2.1.0, the format GitHub code scanning ingests.

One run; ``tool.driver`` is quorum with one rule per category (or category and CWE)
that a reported group uses; one result per group, located by a path relative to the
repository root (``uriBaseId: %SRCROOT%``) and a line region.

What GitHub does with it shaped three choices:

* **Only confirmed groups by default.** GitHub opens an alert for every result in the
  file, and an alert should mean the vote confirmed the weakness; a finding one reviewer
  made alone stays in the JSON, Markdown and HTML reports. ``include_potential=True``
  adds them as level ``note`` under rules of their own (``<rule>/unconfirmed``) that
  carry no ``security`` tag and no ``security-severity``: GitHub takes an alert's
  security severity from its *rule*, so sharing the confirmed rule would file a lone
  guess as a critical security alert.
* **security-severity** is a numeric string on each rule (critical 9.5, high 8.0,
  medium 5.5, low 3.0, info 1.0), from the most severe result of that rule in the run;
  each result's own ``level`` follows its own severity (error, warning, note).
* **partialFingerprints** carry ``quorumFindingHash/v1``: a hash of the rule, the file and
  the flagged code with whitespace normalised (``report_json.group_ids``), so an alert
  keeps its identity when the code moves to other lines.

Failed calls become error notifications on the invocation, skipped files notifications
too (``warning`` for a file that could not be read, ``note`` for one left out by choice),
and ``executionSuccessful`` is false when any call failed, any file could not be read or
nothing was reviewed at all. A review by a model whose prose is not shown says so in each
message ("Advisory") and in the run's properties.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote

from quorum.apps.review.model import CodeReviewResult, FindingGroup, Skipped, Unit, UnitReview
from quorum.apps.review.report_json import (
    category_title,
    group_cwe,
    group_ids,
    normalise_path,
    reviewer_names,
    rule_id,
    source_lines,
)
from quorum.apps.review.taxonomy import Category, severity_rank

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/quorum/"
FINGERPRINT_KEY = "quorumFindingHash/v1"
ADVISORY = "Advisory: found by a model whose prose is not shown; the text is quorum's reference."

# GitHub's bands: over 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium, 0.1-3.9 low.
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "1.0"}
LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}

# The official names of the CWEs the taxonomy maps to, for rules' full descriptions.
CWE_NAMES = {
    20: "Improper Input Validation",
    22: "Improper Limitation of a Pathname to a Restricted Directory ('Path Traversal')",
    78: "Improper Neutralization of Special Elements used in an OS Command ('OS Command Injection')",
    79: "Improper Neutralization of Input During Web Page Generation ('Cross-site Scripting')",
    89: "Improper Neutralization of Special Elements used in an SQL Command ('SQL Injection')",
    94: "Improper Control of Generation of Code ('Code Injection')",
    200: "Exposure of Sensitive Information to an Unauthorized Actor",
    284: "Improper Access Control",
    287: "Improper Authentication",
    327: "Use of a Broken or Risky Cryptographic Algorithm",
    330: "Use of Insufficiently Random Values",
    352: "Cross-Site Request Forgery (CSRF)",
    384: "Session Fixation",
    400: "Uncontrolled Resource Consumption",
    489: "Active Debug Code",
    502: "Deserialization of Untrusted Data",
    532: "Insertion of Sensitive Information into Log File",
    601: "URL Redirection to Untrusted Site ('Open Redirect')",
    611: "Improper Restriction of XML External Entity Reference",
    798: "Use of Hard-coded Credentials",
    918: "Server-Side Request Forgery (SSRF)",
    1336: "Improper Neutralization of Special Elements Used in a Template Engine",
    1427: "Improper Neutralization of Input Used for LLM Prompting",
}


def to_sarif(
    result: CodeReviewResult,
    *,
    tool_version: str,
    include_potential: bool = False,
    srcroot: str | Path | None = None,
    cwd: str | Path | None = None,
    information_uri: str = INFORMATION_URI,
) -> dict[str, Any]:
    """The review as a SARIF 2.1.0 log (plain data; ``json.dumps`` it).

    ``srcroot`` is the repository root, recorded as ``%SRCROOT%``; every path is written
    relative to it. ``cwd`` is the directory relative paths were given from (a review run
    in ``proj/app`` names ``db.py``, which is ``app/db.py`` under the root); without it,
    relative paths are taken as relative to the root already. A path outside the root is
    written as a ``file:`` URI without a base (valid SARIF, but GitHub can only place
    results whose paths are relative to the repository root).
    """
    if srcroot is not None and cwd is not None:
        result = _rebased(result, Path(cwd), Path(srcroot))
    ids = group_ids(result)
    chosen = [(g, gid) for g, gid in zip(result.groups, ids, strict=True) if g.confirmed or include_potential]
    rules = _rules([g for g, _ in chosen])
    index = {rule["id"]: n for n, rule in enumerate(rules)}
    root = Path(srcroot) if srcroot is not None else None
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "quorum",
                "informationUri": information_uri,
                "version": tool_version,
                "semanticVersion": tool_version,
                "rules": rules,
            }
        },
        "invocations": [_invocation(result, root)],
        "results": [_result(result, g, gid, index, root) for g, gid in chosen],
        "properties": _run_properties(result, include_potential),
    }
    if root is not None:
        run["originalUriBaseIds"] = {"%SRCROOT%": {"uri": root.resolve().as_uri().rstrip("/") + "/"}}
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


# -- rules -----------------------------------------------------------------------------


def sarif_rule_id(group: FindingGroup) -> str:
    """The rule a group's result is filed under (see the module docstring)."""
    return rule_id(group) if group.confirmed else f"{rule_id(group)}/unconfirmed"


def _rules(groups: list[FindingGroup]) -> list[dict[str, Any]]:
    """One rule per rule id, in the order groups first use them, at the severity of
    the most severe group filed under it."""
    worst: dict[str, FindingGroup] = {}
    for group in groups:
        rid = sarif_rule_id(group)
        if rid not in worst or severity_rank(group.severity) > severity_rank(worst[rid].severity):
            worst[rid] = group
    return [_rule(rid, group) for rid, group in worst.items()]


def _rule(rid: str, group: FindingGroup) -> dict[str, Any]:
    cwe = group_cwe(group)
    title = category_title(group.category)
    if group.category is Category.OTHER and cwe is not None:
        title += f" (CWE-{cwe})"  # "Other weakness" alone would not tell rules apart
    full = _cwe_text(cwe)
    rule: dict[str, Any] = {
        "id": rid,
        "name": _pascal(rid),
        "shortDescription": {"text": title if group.confirmed else f"{title} (unconfirmed)"},
        "fullDescription": {"text": full},
        "defaultConfiguration": {"level": _level(group) if group.confirmed else "note"},
        "properties": _rule_properties(group, cwe),
    }
    if cwe is not None:
        rule["helpUri"] = f"https://cwe.mitre.org/data/definitions/{cwe}.html"
        rule["help"] = {"text": f"{full}. See {rule['helpUri']}"}
    return rule


def _rule_properties(group: FindingGroup, cwe: int | None) -> dict[str, Any]:
    tags = ["security"] if group.confirmed else ["unconfirmed"]
    if cwe is not None:
        # CodeQL's spelling (three digits at least), which GitHub's CWE filters expect.
        tags.append(f"external/cwe/cwe-{cwe:03d}")
    properties: dict[str, Any] = {"tags": tags, "precision": "high" if group.confirmed else "low"}
    if group.confirmed:
        properties["security-severity"] = SECURITY_SEVERITY.get(_severity(group), "5.5")
    return properties


def _cwe_text(cwe: int | None) -> str:
    if cwe is None:
        return "A weakness outside quorum's fixed categories, reported without a CWE id."
    name = CWE_NAMES.get(cwe)
    return f"CWE-{cwe}: {name}" if name else f"CWE-{cwe}"


def _pascal(rid: str) -> str:
    """``sql_injection/cwe-564`` → ``SqlInjectionCwe564``."""
    words = rid.replace("/", "_").replace("-", "_").split("_")
    return "".join(word.capitalize() for word in words if word)


# -- results ---------------------------------------------------------------------------


def _result(
    result: CodeReviewResult, group: FindingGroup, gid: str, index: dict[str, int], root: Path | None
) -> dict[str, Any]:
    rid = sarif_rule_id(group)
    return {
        "ruleId": rid,
        "ruleIndex": index[rid],
        "level": _level(group) if group.confirmed else "note",
        "message": {"text": _message(result, group)},
        "locations": [{"physicalLocation": _physical(result, group, root)}],
        "partialFingerprints": {FINGERPRINT_KEY: gid},
        "properties": {
            "reporters": group.reporters,
            "vote_count": group.vote_count,
            "confirmed": group.confirmed,
            "severity": _severity(group),
            "category": group.category.value,
            "family": group.family,
        },
    }


def _message(result: CodeReviewResult, group: FindingGroup) -> str:
    cwe = group_cwe(group)
    head = category_title(group.category) + (f" (CWE-{cwe})" if cwe is not None else "")
    description = next((f.description.strip() for f in group.findings if f.description.strip()), "")
    fix = next((f.recommendation.strip() for f in group.findings if f.recommendation.strip()), "")
    total = len(reviewer_names(result))
    verdict = "Confirmed" if group.confirmed else "Not confirmed; reported"
    parts = [
        *([ADVISORY] if result.advisory and all(f.source == "llm" for f in group.findings) else []),
        f"{head}: {description}" if description else head,
        f"{verdict} by {group.vote_count} of {total} reviewers ({', '.join(group.reporters)})"
        + (f"; by rule: {group.confirmed_by_rule}." if group.confirmed_by_rule else "."),
    ]
    if fix:
        parts.append(f"Fix: {fix}")
    return " ".join(" ".join(p.split()) for p in parts)


def _physical(result: CodeReviewResult, group: FindingGroup, root: Path | None) -> dict[str, Any]:
    start = max(1, group.start_line)
    end = max(start, group.end_line)
    region: dict[str, Any] = {"startLine": start, "endLine": end}
    lines = source_lines(result, group.path)[start - 1 : end]
    if lines:
        region["snippet"] = {"text": "\n".join(lines) + "\n"}
    return {"artifactLocation": artifact_location(group.path, root), "region": region}


def artifact_location(path: str, root: Path | None = None) -> dict[str, str]:
    """A relative URI under ``%SRCROOT%`` (forward slashes, percent-encoded); an absolute
    path outside ``root`` as a ``file:`` URI of its own."""
    if _is_absolute(path) and root is not None:
        try:
            path = Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    if PurePosixPath(path).is_absolute():
        return {"uri": PurePosixPath(path).as_uri()}
    if PureWindowsPath(path).is_absolute():
        return {"uri": PureWindowsPath(path).as_uri()}
    return {"uri": quote(normalise_path(path), safe="/"), "uriBaseId": "%SRCROOT%"}


def _rebased(result: CodeReviewResult, cwd: Path, root: Path) -> CodeReviewResult:
    """``result`` with every path that names a file under ``root`` (relative paths taken
    from ``cwd``) made relative to ``root``: locations and fingerprints then read the same
    whichever directory the review ran from."""
    top = root.resolve()

    def from_root(path: str) -> str:
        candidate = Path(path) if _is_absolute(path) else cwd / path
        if not candidate.exists():
            return path
        try:
            return candidate.resolve().relative_to(top).as_posix()
        except ValueError:
            return path

    def unit(u: Unit) -> Unit:
        return replace(u, path=from_root(u.path))

    groups = [
        FindingGroup(
            [replace(f, path=from_root(f.path)) for f in g.findings], g.confirmed, g.confirmed_by_rule
        )
        for g in result.groups
    ]
    return replace(
        result,
        groups=groups,
        units=[unit(u) for u in result.units],
        reviews=[replace(r, unit=unit(r.unit)) for r in result.reviews],
        skipped=[replace(s, path=from_root(s.path)) for s in result.skipped],
        sources={from_root(p): text for p, text in result.sources.items()},
    )


def _is_absolute(path: str) -> bool:
    return PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute()


def _severity(group: FindingGroup) -> str:
    severity = group.severity.strip().lower()
    return severity if severity in LEVEL else "medium"


def _level(group: FindingGroup) -> str:
    return LEVEL[_severity(group)]


# -- the invocation --------------------------------------------------------------------


def _invocation(result: CodeReviewResult, root: Path | None) -> dict[str, Any]:
    failed = result.failed_reviews
    ok = not failed and not result.unreadable and not result.nothing_reviewed
    invocation: dict[str, Any] = {"executionSuccessful": ok}
    notes = [_notification(r, root) for r in failed] + [_skip_note(s, root) for s in result.skipped]
    if notes:
        invocation["toolExecutionNotifications"] = notes
    return invocation


def _skip_note(skipped: Skipped, root: Path | None) -> dict[str, Any]:
    return {
        "level": "warning" if skipped.unreadable else "note",
        "message": {"text": f"{skipped.path} not reviewed: {skipped.describe()}"},
        "locations": [{"physicalLocation": {"artifactLocation": artifact_location(skipped.path, root)}}],
        "properties": {"skipped": skipped.reason},
    }


def _notification(review: UnitReview, root: Path | None) -> dict[str, Any]:
    unit = review.unit
    region = {"startLine": max(1, unit.start_line), "endLine": max(1, unit.start_line, unit.end_line)}
    return {
        "level": "error",
        "message": {
            "text": f"{review.reviewer} on {unit.key}: {review.status}: {review.error or 'no message'}"
        },
        "locations": [
            {"physicalLocation": {"artifactLocation": artifact_location(unit.path, root), "region": region}}
        ],
    }


def _run_properties(result: CodeReviewResult, include_potential: bool) -> dict[str, Any]:
    return {
        "risk": result.risk_consensus,
        "confirmation_threshold": result.confirmation_threshold,
        "reviewers": reviewer_names(result),
        "model": result.model,
        "potential_included": include_potential,
        "potential_omitted": 0 if include_potential else len(result.potential),
        "advisory": result.advisory,
        "skipped": len(result.skipped),
    }
