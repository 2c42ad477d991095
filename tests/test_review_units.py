"""Cutting code into units: Python by its structure, the rest by windows, sized by the model."""

from __future__ import annotations

import itertools
import textwrap

import pytest

from quorum.apps.review.inputs import SourceFile
from quorum.apps.review.model import Unit
from quorum.apps.review.reviewers import Plan, chapter_reviewers
from quorum.apps.review.units import code_budget, cut, numbered, shown_chars, split_lines, windows
from quorum.errors import ConfigError
from quorum.llm.provider import Capabilities

MODULE = textwrap.dedent(
    '''\
    """A module."""
    import os

    SECRET = os.environ.get("SECRET", "hunter2")


    @app.route("/login")
    def login(user, password):
        query = f"SELECT * FROM users WHERE name='{user}'"
        return db.execute(query)


    class Store:
        """Keeps things."""

        def get(self, key):
            return self.data[key]


    DEBUG = True

    if __name__ == "__main__":
        main()
    '''
)


def python(text: str, path: str = "app.py") -> SourceFile:
    return SourceFile(path, text, "python")


def spans(units: list[Unit]) -> list[tuple[str, str, int, int]]:
    return [(u.name, u.kind, u.start_line, u.end_line) for u in units]


def test_python_is_cut_along_its_definitions_with_file_line_numbers() -> None:
    units = cut(python(MODULE), 10_000)
    assert spans(units) == [
        ("<module>", "module", 4, 4),  # imports and docstrings at the ends are left out
        ("login", "function", 7, 10),  # the decorator belongs to the function
        ("Store", "class", 13, 17),
        ("<module>", "module", 20, 20),  # the __main__ guard that only calls is left out
    ]
    lines = MODULE.splitlines()
    for unit in units:
        assert unit.code.splitlines() == lines[unit.start_line - 1 : unit.end_line]


def test_a_module_of_imports_only_has_no_module_unit() -> None:
    units = cut(python('"""Doc."""\nimport os\nfrom x import y\n\n\ndef f():\n    return 1\n'), 10_000)
    assert spans(units) == [("f", "function", 6, 7)]


def test_a_big_class_is_split_into_its_methods() -> None:
    methods = "".join(f"    def m{i}(self):\n        return {i} * {'x' * 60!r}\n\n" for i in range(6))
    source = python(f"class Big:\n    LIMIT = 3\n\n{methods}")
    units = cut(source, 600)
    assert [u.name for u in units] == ["Big", *(f"Big.m{i}" for i in range(6))]
    assert units[0].start_line == units[0].end_line == 2  # the class attribute
    assert units[1].start_line == 4
    assert all(shown_chars(split_lines(u.code)) <= 600 for u in units)


def test_python_2_falls_back_to_windows() -> None:
    source = python("".join(f"print 'line {i}'\n" for i in range(1, 101)))
    units = cut(source, 1000)
    assert len(units) > 1
    assert {u.kind for u in units} == {"window"}
    assert units[0].start_line == 1
    assert units[-1].end_line == 100


def test_windows_overlap_and_cover_everything() -> None:
    lines = [f"x{i} = {i}" for i in range(200)]
    spans_ = list(windows(lines, 500))
    assert spans_[0][0] == 0
    assert spans_[-1][1] == 200
    for (_, end), (start, _) in itertools.pairwise(spans_):
        assert 0 < end - start <= 5  # overlapping, but by a few lines only
    assert all(shown_chars(lines[a:b]) <= 500 for a, b in spans_)


def test_a_function_too_big_for_one_call_becomes_windows() -> None:
    body = "".join(f"    step_{i} = compute({i})\n" for i in range(80))
    units = cut(python(f"x = 1\n\ndef huge():\n{body}"), 800)
    windows_ = [u for u in units if u.kind == "window"]
    assert len(windows_) > 2
    assert windows_[0].name.startswith("huge:3-")
    assert windows_[-1].end_line == 83


def test_a_single_overlong_line_is_clipped_when_shown() -> None:
    unit = cut(SourceFile("min.js", "var a=" + "1," * 5000 + "2;\n", "javascript"), 800)[0]
    shown = numbered(unit)
    assert len(shown) < 500
    assert "chars cut]" in shown


def test_numbered_code_carries_file_line_numbers() -> None:
    unit = Unit("a.py", "f", "function", 41, 42, "def f():\n    return 1")
    assert numbered(unit) == "   41 | def f():\n   42 |     return 1"


def test_other_languages_are_windowed() -> None:
    text = "".join(f"console.log({i});\n" for i in range(300))
    units = cut(SourceFile("app.js", text, "javascript"), 2000)
    assert len(units) > 2
    assert units[0].name == "app.js:1-" + str(units[0].end_line)


def test_diff_keeps_only_units_that_overlap_changed_lines() -> None:
    units = cut(python(MODULE), 10_000, changed=[(8, 8), (30, 31)])
    assert [u.name for u in units] == ["login"]
    assert cut(python(MODULE), 10_000, changed=[]) == []


def test_the_unit_size_comes_from_the_model_context() -> None:
    reviewers = chapter_reviewers()
    small = Plan.for_model(Capabilities(max_context=2048))
    big = Plan.for_model(Capabilities(max_context=200_000))
    small_chars = code_budget(
        2048, answer_tokens=small.answer_tokens, overhead_tokens=small.overhead_tokens(reviewers)
    )
    big_chars = code_budget(
        200_000, answer_tokens=big.answer_tokens, overhead_tokens=big.overhead_tokens(reviewers)
    )
    assert 400 <= small_chars < 3000
    assert big_chars == 24_000  # the ceiling: a reviewer reads better in smaller pieces
    # What fits: 2048 tokens = answer + instructions + code at 3.5 chars a token, with margin.
    used = small.answer_tokens + small.overhead_tokens(reviewers) + small_chars / 3.5
    assert used <= 2048
    assert code_budget(None, answer_tokens=10**6, overhead_tokens=10**6) == 24_000


def test_a_context_too_small_for_any_code_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="leaves no room for code"):
        code_budget(1024, answer_tokens=700, overhead_tokens=300)


def test_lines_are_counted_as_python_and_git_count_them() -> None:
    assert split_lines("a\r\nb\x0cc\nd\n") == ["a", "b\x0cc", "d"]
