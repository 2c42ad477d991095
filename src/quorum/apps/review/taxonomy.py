"""The fixed taxonomy reviewers answer in, and what it means in CWE terms.

Reviewers pick a ``Category`` from an enum (a small model follows an enum under a grammar
far better than it recalls CWE numbers); quorum maps it to a CWE id. ``other`` carries a
free CWE for the rest. Grouping compares CWE *families*: CWE-89 and CWE-564 are both SQL
injection, and two reviewers naming them should confirm each other.
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    SQL_INJECTION = "sql_injection"
    COMMAND_INJECTION = "command_injection"
    CODE_INJECTION = "code_injection"
    TEMPLATE_INJECTION = "template_injection"
    XSS = "xss"
    PATH_TRAVERSAL = "path_traversal"
    SSRF = "ssrf"
    XXE = "xxe"
    OPEN_REDIRECT = "open_redirect"
    DESERIALIZATION = "insecure_deserialization"
    HARDCODED_SECRET = "hardcoded_secret"
    WEAK_CRYPTO = "weak_crypto"
    INSECURE_RANDOM = "insecure_random"
    BROKEN_AUTH = "broken_authentication"
    SESSION = "session_management"
    ACCESS_CONTROL = "access_control"
    CSRF = "csrf"
    DATA_EXPOSURE = "sensitive_data_exposure"
    SENSITIVE_LOGGING = "sensitive_logging"
    DEBUG_BACKDOOR = "debug_backdoor"
    INPUT_VALIDATION = "input_validation"
    DOS = "denial_of_service"
    PROMPT_INJECTION = "prompt_injection"
    OTHER = "other"


CWE_OF: dict[Category, int | None] = {
    Category.SQL_INJECTION: 89,
    Category.COMMAND_INJECTION: 78,
    Category.CODE_INJECTION: 94,
    Category.TEMPLATE_INJECTION: 1336,
    Category.XSS: 79,
    Category.PATH_TRAVERSAL: 22,
    Category.SSRF: 918,
    Category.XXE: 611,
    Category.OPEN_REDIRECT: 601,
    Category.DESERIALIZATION: 502,
    Category.HARDCODED_SECRET: 798,
    Category.WEAK_CRYPTO: 327,
    Category.INSECURE_RANDOM: 330,
    Category.BROKEN_AUTH: 287,
    Category.SESSION: 384,
    Category.ACCESS_CONTROL: 284,
    Category.CSRF: 352,
    Category.DATA_EXPOSURE: 200,
    Category.SENSITIVE_LOGGING: 532,
    Category.DEBUG_BACKDOOR: 489,
    Category.INPUT_VALIDATION: 20,
    Category.DOS: 400,
    Category.PROMPT_INJECTION: 1427,  # improper neutralization of input used for LLM prompting
    Category.OTHER: None,
}

# CWE families: ids that name the same kind of weakness.
FAMILIES: dict[str, frozenset[int]] = {
    "sqli": frozenset({89, 564, 566, 943}),
    "cmdi": frozenset({77, 78, 88}),
    "code-injection": frozenset({74, 94, 95, 96, 470, 913, 917, 1336}),
    "xss": frozenset({79, 80, 83, 87, 116}),
    "path": frozenset({22, 23, 36, 59, 73, 99, 434, 706}),
    "deserialization": frozenset({502}),
    "xxe": frozenset({91, 611, 776, 827}),
    "ssrf": frozenset({918}),
    "redirect": frozenset({601}),
    "ldap-xpath": frozenset({90, 643}),
    "crypto": frozenset(
        {295, 297, 310, 319, 322, 323, 326, 327, 328, 329, 330, 331, 335, 337, 338, 759, 760, 916, 1240}
    ),
    "secrets": frozenset({256, 259, 312, 321, 522, 798}),
    "cookie": frozenset({315, 614, 1004, 1275}),
    "auth": frozenset({284, 285, 287, 289, 290, 306, 307, 345, 346, 347, 352, 384, 521, 639, 862, 863}),
    "exposure": frozenset({200, 209, 215, 489, 497, 532, 548}),
    "permissions": frozenset({276, 377, 378, 379, 732}),
    "dos": frozenset({400, 409, 730, 770, 1333}),
    "log-injection": frozenset({93, 113, 117}),
    "validation": frozenset({20}),
    "llm-prompt": frozenset({1427}),
}
_FAMILY_OF = {cwe: name for name, ids in FAMILIES.items() for cwe in ids}

SEVERITIES = ("info", "low", "medium", "high", "critical")
RISKS = ("none", *SEVERITIES[1:])


def cwe_for(category: Category, stated: int | None = None) -> int | None:
    """The category's CWE; for ``other``, the CWE the reviewer stated."""
    return CWE_OF.get(category) or stated


def family_of(cwe: int | None, category: Category | None = None) -> str:
    """The family of a CWE; unknown CWEs form a family of their own."""
    if cwe is not None and cwe in _FAMILY_OF:
        return _FAMILY_OF[cwe]
    if cwe is not None:
        return f"cwe-{cwe}"
    return f"category-{category.value if category else 'other'}"


def severity_rank(severity: str) -> int:
    value = severity.strip().lower()
    return SEVERITIES.index(value) if value in SEVERITIES else SEVERITIES.index("medium")


def parse_cwe(text: object) -> int | None:
    """``89``, ``"CWE-89"``, ``"cwe 89"`` → 89; anything else → None."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text if text > 0 else None
    digits = "".join(ch for ch in str(text or "") if ch.isdigit())
    return int(digits) if digits and int(digits) > 0 else None


def category_for_cwe(cwe: int | None) -> Category:
    """The category a CWE belongs to: the one naming that CWE, else the first one of its
    family (CWE-95 is code injection, CWE-259 a hard-coded secret), else ``other``."""
    if cwe is None:
        return Category.OTHER
    for category, own in CWE_OF.items():
        if own == cwe:
            return category
    family = family_of(cwe)
    for category, own in CWE_OF.items():
        if own is not None and family_of(own) == family:
            return category
    return Category.OTHER


def risk_rank(risk: str) -> int:
    """Order of overall risks: none < low < medium < high < critical; anything else -1."""
    value = risk.strip().lower()
    return RISKS.index(value) if value in RISKS else -1
