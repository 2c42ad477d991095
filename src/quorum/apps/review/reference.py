"""What quorum itself says about each category, for models whose prose is not worth showing.

A 135M-parameter model can pick a category from an enum and point at lines under a
grammar, but its descriptions read "low-grade injection into SQLite, causing" and its
fixes "low". When the provider says so (``Capabilities.writes_prose`` false), the
reports show, for each finding, this reference text for its category (what it is, why it
matters, how to fix it, the CWE entry), marked as such; the model contributes its
category, lines, severity and vote, and its findings are labelled advisory.

``known_cwe`` checks a CWE id against the list shipped in ``cwe.json`` (the weaknesses
quorum's taxonomy and families use, and the CWE Top 25), so an ``other`` finding
carries "CWE-5" only if CWE-5 is an id quorum knows, never a number a model made up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from importlib.resources import files

from quorum.apps.review.model import Finding
from quorum.apps.review.taxonomy import CWE_OF, Category

ADVISORY_NOTE = (
    "Advisory: this model cannot write reliable security prose, so its findings show "
    "quorum's reference text for their category (marked 'reference'), not the model's "
    "words. The model chose only the category, the lines, the severity and its vote. "
    "Treat its findings as pointers for a human review."
)
REFERENCE_MARK = "reference"


@dataclass(frozen=True)
class Reference:
    """The reference text of one category."""

    what: str
    why: str
    fix: str

    def description(self) -> str:
        return f"{self.what} {self.why}"


_TEXT: dict[Category, Reference] = {
    Category.SQL_INJECTION: Reference(
        "Input reaches an SQL statement as part of its text.",
        "An attacker can read, change or delete data, or bypass a login.",
        "Pass values as query parameters (placeholders), never by string formatting.",
    ),
    Category.COMMAND_INJECTION: Reference(
        "Input reaches an operating-system command line.",
        "An attacker can run any command with the program's rights.",
        "Call the program with an argument list and no shell; validate arguments against an allow-list.",
    ),
    Category.CODE_INJECTION: Reference(
        "Input is evaluated as code (eval, exec, dynamic imports).",
        "An attacker can run arbitrary code inside the process.",
        "Do not evaluate input; parse it as data (e.g. ast.literal_eval, json) or map it to fixed choices.",
    ),
    Category.TEMPLATE_INJECTION: Reference(
        "Input becomes part of a template's source rather than its data.",
        "Template engines can reach code execution from template syntax.",
        "Render fixed templates and pass input only as context variables.",
    ),
    Category.XSS: Reference(
        "Input is written into a web page without escaping for its context.",
        "A script injected into the page runs in other users' browsers with their session.",
        "Escape output for its context (autoescaping templates); avoid building HTML by hand.",
    ),
    Category.PATH_TRAVERSAL: Reference(
        "Input is used to build a file path.",
        "'../' or an absolute path reaches files outside the intended directory.",
        "Resolve the path and check it stays under the base directory; prefer generated file names.",
    ),
    Category.SSRF: Reference(
        "Input chooses the address the server sends a request to.",
        "An attacker can reach internal services and cloud metadata through the server.",
        "Allow-list destinations; block private and link-local addresses after resolving the name.",
    ),
    Category.XXE: Reference(
        "An XML parser resolves external entities in untrusted documents.",
        "Entities can read local files, reach internal hosts or exhaust memory.",
        "Disable DTDs and external entities (e.g. use defusedxml).",
    ),
    Category.OPEN_REDIRECT: Reference(
        "Input chooses where a response redirects the browser.",
        "Phishing links can borrow the site's name to send users elsewhere.",
        "Redirect only to relative paths or an allow-list of hosts.",
    ),
    Category.DESERIALIZATION: Reference(
        "Untrusted data is deserialized by a format that can build arbitrary objects (pickle, yaml.load).",
        "Loading such data can run code.",
        "Use a data-only format (json, yaml.safe_load) for anything that crosses a trust boundary.",
    ),
    Category.HARDCODED_SECRET: Reference(
        "A password, key or token is written in the source code.",
        "Anyone with the code, its history or the built artefact has the secret.",
        "Load secrets from the environment or a secret store, and rotate the exposed one.",
    ),
    Category.WEAK_CRYPTO: Reference(
        "A broken or weak cryptographic algorithm or setting is used (MD5, SHA-1, DES, ECB, no TLS check).",
        "The protection it is meant to give can be defeated.",
        "Use current algorithms (SHA-256+, AES-GCM, a password hash such as bcrypt or argon2) "
        "and verify certificates.",
    ),
    Category.INSECURE_RANDOM: Reference(
        "A predictable random generator makes security values (tokens, passwords, keys).",
        "An attacker who sees some outputs can predict others.",
        "Use the secrets module (or os.urandom) for anything security-relevant.",
    ),
    Category.BROKEN_AUTH: Reference(
        "Authentication can be bypassed or is weaker than it looks.",
        "An attacker can act as another user.",
        "Use a vetted authentication library; compare secrets in constant time; rate-limit attempts.",
    ),
    Category.SESSION: Reference(
        "Session identifiers are created, kept or ended unsafely.",
        "A stolen or fixed session gives an attacker the user's access.",
        "Regenerate the session on login, expire it, and set Secure, HttpOnly and SameSite on its cookie.",
    ),
    Category.ACCESS_CONTROL: Reference(
        "An action or resource is not checked against the caller's rights.",
        "Users can reach data or functions meant for others.",
        "Check authorisation on the server for every request, denying by default.",
    ),
    Category.CSRF: Reference(
        "A state-changing request is accepted without proof that the user meant it.",
        "Another site can make the user's browser perform the action.",
        "Require an anti-CSRF token (or SameSite cookies) on state-changing requests.",
    ),
    Category.DATA_EXPOSURE: Reference(
        "Sensitive data is shown or sent to someone who should not have it.",
        "Personal data, credentials or internals leak.",
        "Return only the fields needed; keep errors and debug output away from users.",
    ),
    Category.SENSITIVE_LOGGING: Reference(
        "Sensitive data (passwords, tokens, personal data) is written to logs.",
        "Logs are widely readable and long-lived.",
        "Log identifiers, not secrets; redact sensitive fields before logging.",
    ),
    Category.DEBUG_BACKDOOR: Reference(
        "Debug code, a test account or a hidden switch is left in.",
        "It gives an attacker a way around normal controls.",
        "Remove it, or gate it behind configuration that production never enables.",
    ),
    Category.INPUT_VALIDATION: Reference(
        "Input is used without checking it has the expected form.",
        "Unexpected values reach code that assumed they could not.",
        "Validate type, length, range and format where input enters, rejecting what does not fit.",
    ),
    Category.DOS: Reference(
        "Input controls how much memory, time or other resource is used.",
        "An attacker can exhaust the resource and stop the service.",
        "Bound sizes, counts and time; avoid regular expressions with catastrophic backtracking.",
    ),
    Category.PROMPT_INJECTION: Reference(
        "Text in the input is addressed to an AI model and tries to steer it.",
        "An automated reviewer or assistant may follow it instead of its instructions.",
        "Remove the text and review the code by hand: someone wanted its problems to go unreported.",
    ),
    Category.OTHER: Reference(
        "A weakness outside quorum's fixed categories.",
        "The reviewer could not name it more precisely.",
        "Read the flagged lines; a model with better prose will describe it.",
    ),
}


def reference(category: Category) -> Reference:
    """The reference text of ``category``."""
    return _TEXT[category]


def cwe_uri(cwe: int) -> str:
    return f"https://cwe.mitre.org/data/definitions/{cwe}.html"


@cache
def cwe_names() -> dict[int, str]:
    """The CWE ids quorum knows, with their names (``cwe.json``, shipped as package data)."""
    raw = json.loads(files("quorum.apps.review").joinpath("cwe.json").read_text(encoding="utf-8"))
    return {int(cwe): str(name) for cwe, name in raw["weaknesses"].items()}


def known_cwe(cwe: int | None) -> int | None:
    """``cwe`` when it is in quorum's CWE list, else ``None``."""
    return cwe if cwe is not None and cwe in cwe_names() else None


def with_reference(finding: Finding) -> Finding:
    """``finding`` with the reference text of its category in place of the model's prose,
    marked as such (and its CWE entry linked)."""
    text = reference(finding.category)
    cwe = finding.cwe if finding.cwe is not None else CWE_OF.get(finding.category)
    link = f" See {cwe_uri(cwe)}" if cwe is not None else ""
    return replace(
        finding,
        description=f"[{REFERENCE_MARK}] {text.description()}",
        recommendation=f"[{REFERENCE_MARK}] {text.fix}{link}",
    )
