"""Run a Markdown page's ```python blocks in order, in one namespace, and check what their comments claim.

    python tests/doc_blocks.py PAGE.md

A block is skipped when the line before its fence is ``<!-- not run: REASON -->``. An expression
statement whose trailing comment starts with a Python literal (``x.shape   # (5, 8, 21, 21)``, or
``# 7.77, 0.88``, ``# 0.86 0.89 0.91``, ``# ['<s>', 'Once', ...]``) must evaluate to it: numbers to the
decimals shown, a trailing ``...`` matching any rest; a ``print(...)`` whose comment is a string
checks that the string's ``...``-separated fragments appear in what it printed. Exit 0 when every
block ran and every claim held; the claims checked are printed, one line each.
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import re
import sys
import tokenize
from pathlib import Path

SKIP = re.compile(r"<!--\s*not run:\s*\S.*-->")
NUMBERS = re.compile(r"^\s*(-?\d+(?:\.\d+)?)((?:\s+-?\d+(?:\.\d+)?)+)(?=[\s:;,)]|$)")


def blocks(page: Path) -> list[tuple[int, str]]:
    """(first line number, source) of every ```python block not marked ``<!-- not run: ... -->``."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            if not SKIP.search(previous):
                found.append((start + 1, "\n".join(lines[start:end])))
            i = end
        i += 1
    return found


class Shown(float):
    """A number as a comment writes it: compared to the decimals it shows ("1.00" to 0.005)."""

    def __new__(cls, text: str):
        number = super().__new__(cls, text)
        number.decimals = len(text.split(".")[1]) if "." in text and "e" not in text.lower() else 0
        return number


def _shown(node: ast.expr, source: str):
    if isinstance(node, ast.Constant) and isinstance(node.value, float):
        return Shown(ast.get_source_segment(source, node))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, float):
        return Shown("-" + ast.get_source_segment(source, node.operand))
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_shown(item, source) for item in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    return ast.literal_eval(node)


def claim(comment: str):
    """The literal a comment starts with (floats as ``Shown``), or None."""
    text = comment.lstrip("#").strip()
    numbers = NUMBERS.match(text)
    if numbers:
        return [Shown(x) for x in numbers.group(0).split()]
    for end in range(len(text), 0, -1):
        source = text[:end].strip()
        try:
            value = ast.literal_eval(source)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (int, float, str, tuple, list)) and not isinstance(value, bool):
            return _shown(ast.parse(source, mode="eval").body, source)
        return None
    return None


def matches(value, expected) -> bool:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(expected, tuple) and len(expected) == 1 and not isinstance(value, (list, tuple)):
        expected = expected[0]
    if isinstance(expected, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return False
        if expected and expected[-1] is Ellipsis:
            head = list(expected[:-1])
            return len(value) >= len(head) and all(matches(v, e) for v, e in zip(value, head))
        return len(value) == len(expected) and all(matches(v, e) for v, e in zip(value, expected))
    if isinstance(expected, float) or (isinstance(expected, int) and isinstance(value, float)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return math.isfinite(value) and abs(value - expected) <= 0.5 * 10.0 ** -getattr(expected, "decimals", 0) + 1e-9
    return value == expected


def _comments(source: str) -> dict[int, str]:
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string
    return found


def run(page: Path) -> int:
    namespace: dict = {"__name__": "__main__"}
    failures = 0
    for first_line, source in blocks(page):
        tree = ast.parse(source, filename=f"{page}:{first_line}")
        comments = _comments(source)
        for statement in tree.body:
            code = compile(ast.Module([statement], []), f"{page.name} (line {first_line + statement.lineno - 1})", "exec")
            expected = claim(comments.get(statement.end_lineno, "")) if isinstance(statement, ast.Expr) else None
            if expected is None:
                exec(code, namespace)
                continue
            where = f"{page.name}:{first_line + statement.lineno - 1}"
            call = statement.value
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print":
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec(code, namespace)
                sys.stdout.write(printed.getvalue())
                held = isinstance(expected, str) and all(part.strip() in printed.getvalue()
                                                         for part in expected.split("...") if part.strip())
                shown = printed.getvalue().strip()
            else:
                value = eval(compile(ast.Expression(call), code.co_filename, "eval"), namespace)
                held = matches(value, expected)
                shown = value.tolist() if hasattr(value, "tolist") else value
            print(f"claim {'holds' if held else 'FAILS'}: {where}: {ast.unparse(call)} -> {shown!r} (comment: {expected!r})")
            failures += not held
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]).resolve()))
