"""SARIF 2.1.0 output: valid against the official schema, and what GitHub code scanning
needs on top (rules for every ruleId, regions from line 1, relative URIs, fingerprints,
security-severity)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from quorum.apps.review.model import CodeReviewResult, FindingGroup
from quorum.apps.review.report_sarif import FINGERPRINT_KEY, artifact_location, to_sarif
from test_review_reports import LOGIN, chapter_result, sample_result


def _repo_root() -> Path:
    """The directory holding pyproject.toml, found upwards from this file."""
    here = Path(__file__).resolve()
    return next(p for p in here.parents if (p / "pyproject.toml").is_file())


SCHEMA_PATH = _repo_root().parent / "shared" / "schemas" / "sarif-schema-2.1.0.json"


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is in the dev extra: pip install -e .[dev]"
    )
    if not SCHEMA_PATH.is_file():
        pytest.skip(f"the official SARIF schema is not at {SCHEMA_PATH} (it lives outside the repository)")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _validate(validator: Any, log: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(json.loads(json.dumps(log))), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


@pytest.mark.parametrize("include_potential", [False, True])
def test_sarif_is_valid_against_the_official_schema(validator: Any, include_potential: bool) -> None:
    _validate(validator, to_sarif(sample_result(), tool_version="0.1.0", include_potential=include_potential))


def test_sarif_of_an_empty_or_chapter_style_review_is_valid(validator: Any) -> None:
    log = to_sarif(chapter_result(), tool_version="0.1.0", include_potential=True)
    _validate(validator, log)
    assert log["runs"][0]["results"] == []


def test_sarif_has_what_github_reads() -> None:
    log = to_sarif(sample_result(), tool_version="1.2.3")
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-schema-2.1.0.json")
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("quorum", "1.2.3")
    assert driver["informationUri"].startswith("https://")
    rules = {rule["id"]: rule for rule in driver["rules"]}
    assert len(rules) == len(driver["rules"])
    for result in run["results"]:
        assert result["ruleId"] in rules
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        (location,) = result["locations"]
        artifact, region = (
            location["physicalLocation"]["artifactLocation"],
            location["physicalLocation"]["region"],
        )
        assert artifact["uriBaseId"] == "%SRCROOT%"
        assert not artifact["uri"].startswith("/")
        assert "\\" not in artifact["uri"]
        assert region["startLine"] >= 1
        assert region["endLine"] >= region["startLine"]
        assert result["partialFingerprints"][FINGERPRINT_KEY]


def test_sarif_rules_carry_cwe_tags_and_security_severity() -> None:
    run = to_sarif(sample_result(), tool_version="0.1.0")["runs"][0]
    rules = {rule["id"]: rule for rule in run["tool"]["driver"]["rules"]}
    assert set(rules) == {"sql_injection", "hardcoded_secret"}
    sql = rules["sql_injection"]
    assert sql["name"] == "SqlInjection"
    assert sql["shortDescription"]["text"] == "SQL injection"
    assert "SQL Injection" in sql["fullDescription"]["text"]
    assert sql["helpUri"] == "https://cwe.mitre.org/data/definitions/89.html"
    assert sql["properties"]["tags"] == ["security", "external/cwe/cwe-089"]
    assert sql["properties"]["security-severity"] == "9.5"  # its worst result is critical
    assert float(rules["hardcoded_secret"]["properties"]["security-severity"]) == 8.0


def test_sarif_results_say_who_voted_and_how_severe() -> None:
    run = to_sarif(sample_result(), tool_version="0.1.0")["runs"][0]
    sql, secret = run["results"]
    assert sql["level"] == "error"
    assert sql["properties"]["reporters"] == ["auth", "data", "injection"]
    assert sql["properties"]["vote_count"] == 3
    assert sql["properties"]["confirmed"] is True
    assert "Confirmed by 3 of 5 reviewers" in sql["message"]["text"]
    region = sql["locations"][0]["physicalLocation"]["region"]
    assert (region["startLine"], region["endLine"]) == (4, 5)
    assert region["snippet"]["text"].startswith('    query = f"SELECT')
    assert secret["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "app/login.py"


def test_sarif_leaves_potential_findings_out_unless_asked() -> None:
    run = to_sarif(sample_result(), tool_version="0.1.0")["runs"][0]
    assert all(r["properties"]["confirmed"] for r in run["results"])
    assert run["properties"]["potential_omitted"] == 2


def test_sarif_potential_findings_are_notes_under_rules_without_security_severity() -> None:
    run = to_sarif(sample_result(), tool_version="0.1.0", include_potential=True)["runs"][0]
    potential = [r for r in run["results"] if not r["properties"]["confirmed"]]
    assert [r["ruleId"] for r in potential] == ["xss/unconfirmed", "other/cwe-1321/unconfirmed"]
    assert {r["level"] for r in potential} == {"note"}
    rules = {rule["id"]: rule for rule in run["tool"]["driver"]["rules"]}
    xss = rules["xss/unconfirmed"]
    assert "security-severity" not in xss["properties"]
    assert "security" not in xss["properties"]["tags"]
    assert (
        rules["other/cwe-1321/unconfirmed"]["shortDescription"]["text"]
        == "Other weakness (CWE-1321) (unconfirmed)"
    )


def test_sarif_fingerprints_are_unique_and_survive_moved_code() -> None:
    def fingerprints(result: CodeReviewResult) -> list[str]:
        run = to_sarif(result, tool_version="0.1.0", include_potential=True)["runs"][0]
        return [r["partialFingerprints"][FINGERPRINT_KEY] for r in run["results"]]

    before = fingerprints(sample_result())
    assert len(set(before)) == len(before)
    moved = sample_result()
    moved.sources["app/login.py"] = "# a new first line\n" + LOGIN
    for group in moved.groups:
        if group.path == "app/login.py":
            _shift(group, 1)
    assert fingerprints(moved) == before


def _shift(group: FindingGroup, by: int) -> None:
    group.findings = [
        replace(f, start_line=f.start_line + by, end_line=f.end_line + by) for f in group.findings
    ]


def test_sarif_reports_failed_calls_on_the_invocation() -> None:
    (invocation,) = to_sarif(sample_result(), tool_version="0.1.0")["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False
    messages = [n["message"]["text"] for n in invocation["toolExecutionNotifications"]]
    assert messages[:2] == [
        "logic on app/login.py:1-5: error: RateLimited: 429 rate limit exceeded",
        "logic on app/views.py:1-4: timeout: Timeout: no answer in 30 s",
    ]
    assert "vendor/jquery.js not reviewed: vendored" in messages[2:]


def test_artifact_uris_are_relative_with_forward_slashes(tmp_path: Path) -> None:
    assert artifact_location("app\\db\\query.py") == {"uri": "app/db/query.py", "uriBaseId": "%SRCROOT%"}
    assert artifact_location("./src/my file.py")["uri"] == "src/my%20file.py"
    inside = tmp_path / "pkg" / "mod.py"
    assert artifact_location(str(inside), tmp_path) == {"uri": "pkg/mod.py", "uriBaseId": "%SRCROOT%"}
    outside = artifact_location("/elsewhere/x.py", tmp_path)
    assert outside == {"uri": "file:///elsewhere/x.py"}


def test_regions_start_at_line_one_even_for_bad_lines() -> None:
    result = sample_result()
    result.groups[0].findings = [replace(f, start_line=0, end_line=0) for f in result.groups[0].findings]
    region = to_sarif(result, tool_version="0.1.0")["runs"][0]["results"][0]["locations"][0][
        "physicalLocation"
    ]["region"]
    assert (region["startLine"], region["endLine"]) == (1, 1)
