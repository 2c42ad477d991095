"""Cutting files into units: the pieces of code each reviewer reads in one call.

Python is cut along its own structure with ``ast``: each top-level function and class is a
unit (a class too big for one call is split into its methods), and the module-level
statements between them form a "module" unit when they do more than import. Anything else
(other languages, and Python that does not parse, such as the Python 2 still common in
real code) is cut into windows of lines that overlap, so a bug straddling a boundary is
seen whole in at least one of them. A unit too big for the model is itself cut into
windows.

"Too big" comes from the model: its context, minus the tokens its answer may take,
minus the prompt around the code, at about 3.5 characters a token. Every line is shown to
the model with its line number in the margin (see ``numbered``), and the margins count.

Line numbers are always file line numbers, 1-based, whatever the cut.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from quorum.apps.review.inputs import SourceFile
from quorum.apps.review.model import Unit
from quorum.errors import ConfigError

CHARS_PER_TOKEN = 3.5
SAFETY = 0.9  # tokenizers differ, and code spends more tokens per character than prose
DEFAULT_MAX_CHARS = 24_000  # even with a huge context, a reviewer reads better in smaller pieces
MIN_UNIT_CHARS = 400
MAX_LINE_CHARS = 400  # a longer line (minified code, data) is shown clipped
MARGIN = "{:>5} | "
MARGIN_CHARS = len(MARGIN.format(0))
OVERLAP_LINES = 5

LineSpan = tuple[int, int]
_NEWLINE = re.compile(r"\r\n|\r|\n")
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def split_lines(text: str) -> list[str]:
    """Lines as Python's parser and git count them (``\\n``, ``\\r\\n``, ``\\r``), unlike
    ``str.splitlines``, which also breaks at form feeds and Unicode separators."""
    lines = _NEWLINE.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def code_budget(
    max_context: int | None, *, answer_tokens: int, overhead_tokens: int, ceiling: int = DEFAULT_MAX_CHARS
) -> int:
    """How many characters of numbered code one call may show: what is left of the
    model's context after the answer and the prompt around the code. ``None`` (no known
    context) gives ``ceiling``. Raises ``ConfigError`` when not even a few lines fit."""
    if max_context is None:
        return ceiling
    room = max_context - answer_tokens - overhead_tokens
    chars = int(room * SAFETY * CHARS_PER_TOKEN)
    if chars < MIN_UNIT_CHARS:
        raise ConfigError(
            f"the model's context of {max_context} tokens leaves no room for code: the answer may "
            f"take {answer_tokens} tokens and the instructions {overhead_tokens}. Use a model with "
            f"a larger context, e.g. --model local with n_ctx=4096, or fewer findings per answer"
        )
    return min(ceiling, chars)


def cut(source: SourceFile, max_chars: int, *, changed: Sequence[LineSpan] | None = None) -> list[Unit]:
    """The units of ``source``, each at most ``max_chars`` as shown (``numbered``); with
    ``changed`` (diff ranges), only the units that overlap a changed range."""
    lines = split_lines(source.text)
    units = None
    if source.language == "python":
        units = _python_units(source, lines, max_chars)
    if units is None:
        units = _windows(source, lines, 1, len(lines), max_chars, _file_name(source.path))
    if changed is not None:
        units = [u for u in units if overlaps(u.start_line, u.end_line, changed)]
    return units


def numbered(unit: Unit) -> str:
    """The unit's code as the model sees it: each line behind its file line number, long
    lines clipped, so reviewers cite file lines and see where each line sits."""
    return "\n".join(
        MARGIN.format(number) + _clip(line)
        for number, line in enumerate(split_lines(unit.code), start=unit.start_line)
    )


def shown_chars(lines: Sequence[str]) -> int:
    """Characters ``numbered`` spends on ``lines``."""
    return sum(_line_cost(line) for line in lines)


def overlaps(start: int, end: int, spans: Sequence[LineSpan]) -> bool:
    return any(start <= span_end and span_start <= end for span_start, span_end in spans)


def windows(lines: Sequence[str], max_chars: int, overlap: int = OVERLAP_LINES) -> Iterator[LineSpan]:
    """0-based, end-exclusive spans of ``lines`` that each fit ``max_chars`` (a single
    line always fits: it is clipped when shown) and overlap their neighbour by up to
    ``overlap`` lines, never by more than a quarter of a window."""
    start = 0
    while start < len(lines):
        end, size = start, 0
        while end < len(lines) and (end == start or size + _line_cost(lines[end]) <= max_chars):
            size += _line_cost(lines[end])
            end += 1
        yield start, end
        if end >= len(lines):
            return
        start = max(start + 1, end - min(overlap, (end - start) // 4))


# -- Python ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """A span of the file on its way to becoming one or more units."""

    name: str
    kind: str
    start: int  # 1-based, inclusive
    end: int


def _python_units(source: SourceFile, lines: list[str], max_chars: int) -> list[Unit] | None:
    try:
        tree = ast.parse(source.text)
    except (SyntaxError, ValueError):  # ValueError: NUL bytes
        return None
    pieces = _pieces(tree.body, "", lines, max_chars, module=True)
    units: list[Unit] = []
    for piece in sorted(pieces, key=lambda p: p.start):
        units.extend(_materialize(source, lines, piece, max_chars))
    return units


def _pieces(
    body: Sequence[ast.stmt], prefix: str, lines: list[str], max_chars: int, *, module: bool
) -> list[_Piece]:
    """Definitions as pieces (big classes opened up), and runs of other statements."""
    pieces: list[_Piece] = []
    run: list[ast.stmt] = []
    for node in body:
        if isinstance(node, _DEFINITIONS):
            pieces.extend(_leftover(run, prefix, module))
            run = []
            pieces.extend(_definition(node, prefix, lines, max_chars))
        else:
            run.append(node)
    pieces.extend(_leftover(run, prefix, module))
    return pieces


def _definition(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, prefix: str, lines: list[str], max_chars: int
) -> list[_Piece]:
    start, end = _span(node)
    name = prefix + node.name
    if isinstance(node, ast.ClassDef) and shown_chars(lines[start - 1 : end]) > max_chars:
        # Opened up: its methods, and its other statements (class attributes) in runs.
        return _pieces(node.body, name + ".", lines, max_chars, module=False)
    kind = "class" if isinstance(node, ast.ClassDef) else "function"
    return [_Piece(name, kind, start, end)]


def _leftover(run: list[ast.stmt], prefix: str, module: bool) -> list[_Piece]:
    """A run of non-definition statements, as one piece when it does something; the
    imports and docstrings at its ends are left out."""
    while run and _trivial(run[0]):
        run = run[1:]
    while run and _trivial(run[-1]):
        run = run[:-1]
    if not run:
        return []
    name = "<module>" if module else prefix.rstrip(".")
    return [_Piece(name, "module" if module else "class", _span(run[0])[0], _span(run[-1])[1])]


def _trivial(stmt: ast.stmt) -> bool:
    """Imports, docstrings, ``pass`` and a ``__main__`` guard that only calls: statements
    no reviewer needs a call of its own for."""
    if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Pass)):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return True
    if isinstance(stmt, ast.If) and "__main__" in ast.unparse(stmt.test):
        return all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) for s in stmt.body)
    return False


def _span(node: ast.stmt) -> LineSpan:
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno, *(d.lineno for d in decorators)])
    return start, node.end_lineno or node.lineno


def _materialize(source: SourceFile, lines: list[str], piece: _Piece, max_chars: int) -> list[Unit]:
    if shown_chars(lines[piece.start - 1 : piece.end]) <= max_chars:
        return [_unit(source, lines, piece.name, piece.kind, piece.start, piece.end)]
    return _windows(source, lines, piece.start, piece.end, max_chars, piece.name)


# -- windows -----------------------------------------------------------------------------


def _windows(
    source: SourceFile, lines: list[str], first: int, last: int, max_chars: int, name: str
) -> list[Unit]:
    """Overlapping window units over file lines ``first``..``last``."""
    span = lines[first - 1 : last]
    return [
        _unit(source, lines, f"{name}:{first + a}-{first + b - 1}", "window", first + a, first + b - 1)
        for a, b in windows(span, max_chars)
    ]


def _unit(source: SourceFile, lines: list[str], name: str, kind: str, start: int, end: int) -> Unit:
    code = "\n".join(lines[start - 1 : end])
    return Unit(source.path, name, kind, start, end, code, source.language)


def _line_cost(line: str) -> int:
    return MARGIN_CHARS + min(len(line), MAX_LINE_CHARS) + 1


def _clip(line: str) -> str:
    if len(line) <= MAX_LINE_CHARS:
        return line
    return f"{line[: MAX_LINE_CHARS - 24]} [... {len(line) - MAX_LINE_CHARS + 24} chars cut]"


def _file_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]
