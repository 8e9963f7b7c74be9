"""The README's and the docs' code blocks run as written and say what they print (tests/doc_blocks.py)."""

from pathlib import Path

import pytest

import doc_blocks

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(p for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")] if "```python" in p.read_text())


def test_pages_with_blocks_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/getting-started.md", "docs/tools/patching.md", "docs/tools/steering.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_blocks_run_and_claims_hold(page, monkeypatch, capsys, tmp_path):
    """A page's blocks in order in one namespace, in this process (as a notebook runs them)."""
    if not doc_blocks.blocks(page):
        pytest.skip("every block is marked <!-- not run: ... -->")
    monkeypatch.chdir(tmp_path)  # blocks write files (lens.html, a saved lens) where they run
    status = doc_blocks.run(page)
    out = capsys.readouterr().out
    assert status == 0 and "FAILS" not in out, out[-3000:]


def test_claims_are_parsed_and_compared():
    assert doc_blocks.claim("# (5, 8, 21, 21)") == (5, 8, 21, 21)
    assert doc_blocks.claim("# 0.997: Pearson r") == 0.997
    assert doc_blocks.claim("# 0.86 0.89 0.91 (activation patching: 1.00)") == [0.86, 0.89, 0.91]
    assert doc_blocks.claim("# ['play', 'e']: the last layer's guesses") == ["play", "e"]
    assert doc_blocks.claim("# norm 1.38") is None and doc_blocks.claim("# [layers]: the name") is None
    assert doc_blocks.claim("# 1.00 0.98: the name") == [1.0, 0.98]
    shown = doc_blocks.claim
    assert doc_blocks.matches(0.9974, shown("# 0.997")) and not doc_blocks.matches(0.9986, shown("# 0.997"))
    assert doc_blocks.matches(0.998, shown("# 1.00")) and not doc_blocks.matches(0.994, shown("# 1.00"))
    assert doc_blocks.matches(-0.5049, shown("# [-0.50]")[0]) and not doc_blocks.matches(-0.49, shown("# -0.50 1"))
    assert doc_blocks.matches((7.771, 0.8812), shown("# (7.77, 0.88)")) and doc_blocks.matches(1.78, shown("# 1.78,"))
    assert doc_blocks.matches(["<s>", "Once", "upon", "a"], ["<s>", "Once", ...])
    assert not doc_blocks.matches(["<s>", "Twice"], ["<s>", "Once", ...])
    assert doc_blocks.matches([[3, 6, 0.8912]], shown("# [(3, 6, 0.89)]")) and not doc_blocks.matches([3], [3, 4])
