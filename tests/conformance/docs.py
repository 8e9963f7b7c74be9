"""Run the code of nnsight 0.8.1's published documentation, unchanged, on both backends.

nnsight's sdist ships its documentation (``docs/usage``, ``docs/patterns``, ``docs/errors``, ...:
markdown pages with ``python`` code blocks) and the NNsight walkthrough notebook. Each page runs as
a reader runs it in a notebook: its blocks in order, in one namespace, each block from a file of its
own (nnsight reads a trace's source back from its file), a failing block recorded and the next one
run. Every trace's saved values are captured at its exit (``compat``'s capture) and compared block
by block between the backends. Nothing is edited: model ids resolve through the offline cache
(``conformance.checkpoints``), whose ``openai-community/gpt2`` has random weights, so a block that
asserts what a *trained* GPT-2 says fails on nnsight too and is not counted. Both sides seed
``torch``, ``numpy`` and ``random`` with 0 before a page, so blocks drawing random tensors draw the
same ones.

    PYTHONPATH=$PWD:$PWD/tests python -m conformance.docs --out /tmp/conf-docs [PAGE_GLOB ...]

``--root DIR`` runs the notebooks and markdown pages under another folder instead (nnsight.net's
tutorial notebooks, say, from a checkout of its website; not on PyPI, so not part of CI).

writes ``results.json`` and ``table.md`` (per block: runs on nnsight / runs on mlxsight with equal
saved values / the reason for a gap).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from .run import REPO, first_line

SECTIONS = ("usage", "patterns", "errors", "concepts", "models", "remote", "developing", "reference")
WALKTHROUGH = "NNsight_Walkthrough.ipynb"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[A-Za-z0-9_+-]*)[ \t]*$")


def markdown_blocks(text: str) -> list[str]:
    """The ``python`` fenced blocks of a markdown page, dedented by their fence's indentation."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, body = m["indent"], m["lang"].lower(), []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        if lang in ("python", "py"):
            blocks.append("\n".join(body) + "\n")
    return blocks


def python_of_cell(source: str) -> str:
    """A code cell as Python: an IPython line magic or shell escape (``%pip``, ``!ls``, which install
    or download, and nothing can here) becomes ``pass`` at its indentation, so the ``if is_colab:``
    block around it stays a block; a cell magic's cell (``%%bash``) is not Python and is left out,
    except ``%%capture``/``%%time``, whose body is."""
    lines = source.splitlines()
    if lines and lines[0].startswith("%%"):
        if lines[0].split()[0] not in ("%%capture", "%%time", "%%timeit"):
            return ""
        lines = lines[1:]
    out = []
    for ln in lines:
        body = ln.lstrip()
        out.append(ln[:len(ln) - len(body)] + "pass" if body.startswith(("%", "!")) else ln)
    return "\n".join(out) + "\n"


def notebook_blocks(path: Path) -> list[str]:
    """A notebook's code cells as Python (``python_of_cell``); cells with no statement are left out."""
    cells = json.loads(path.read_text())["cells"]
    out = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = python_of_cell("".join(cell["source"]))
        if any(ln.strip() and ln.strip() != "pass" for ln in source.splitlines()):
            out.append(source)
    return out


def pages(root: Path) -> dict[str, list[str]]:
    """``{page: [block source, ...]}`` over the documentation and the walkthrough."""
    found = {}
    for section in SECTIONS:
        for page in sorted((root / "docs" / section).glob("*.md")):
            blocks = markdown_blocks(page.read_text())
            if blocks:
                found[page.relative_to(root).as_posix()] = blocks
    if (root / WALKTHROUGH).exists():
        found[WALKTHROUGH] = notebook_blocks(root / WALKTHROUGH)
    return found


def folder_pages(root: Path) -> dict[str, list[str]]:
    """``{page: [block source, ...]}`` over every notebook and markdown page under ``root``."""
    found = {}
    for page in sorted(root.rglob("*")):
        if page.suffix == ".ipynb" and page.stat().st_size:
            blocks = notebook_blocks(page)
        elif page.suffix == ".md":
            blocks = markdown_blocks(page.read_text())
        else:
            continue
        if blocks:
            found[page.relative_to(root).as_posix()] = blocks
    return found


def write_page(blocks: list[str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, source in enumerate(blocks):
        path = folder / f"block{i:02d}.py"
        path.write_text(source)
        files.append(path)
    return files


def run_side(backend: str, folder: Path, timeout: float) -> dict:
    """Run one page's blocks on ``backend`` in a fresh process; the side's record."""
    from .checkpoints import hf_home

    out = folder / f"{backend}.json"
    env = dict(os.environ, HF_HOME=str(hf_home()), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "conformance.docs_side", "--backend", backend, "--folder", str(folder),
           "--out", str(out)]
    work = folder / f"cwd-{backend}"
    work.mkdir(exist_ok=True)
    with open(folder / f"{backend}.log", "w") as log:
        try:
            subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            log.write(f"\nconformance.docs: timed out after {timeout}s\n")
    if out.exists():
        return json.loads(out.read_text())
    return {"blocks": [], "error": f"no record ({(folder / f'{backend}.log').read_text()[-300:]})"}


def run_sides(folder: Path, timeout: float) -> dict[str, dict]:
    """Both sides of a page at once (each is mostly its own imports, one core each)."""
    from concurrent.futures import ThreadPoolExecutor

    backends = ("nnsight", "mlx")
    with ThreadPoolExecutor(len(backends)) as pool:
        return dict(zip(backends, pool.map(lambda b: run_side(b, folder, timeout), backends)))


def judge(folder: Path, n_blocks: int, sides: dict[str, dict]) -> list[dict]:
    """Per block: each side's outcome, and whether mlxsight's saved values equal nnsight's."""
    from compat import capture
    from compat.compare import compare

    records = {}
    for backend in ("mlx", "nnsight"):
        pkl = folder / f"{backend}.pkl"
        records[backend] = capture.load(str(pkl)) if pkl.exists() else {"traces": []}
    rows = []
    for i in range(n_blocks):
        name = f"block{i:02d}.py"
        got = {b: (sides[b]["blocks"][i] if i < len(sides[b].get("blocks", [])) else
                   {"status": "not run", "error": sides[b].get("error", "")}) for b in ("mlx", "nnsight")}
        # Blocks that save nothing (edits, sessions' inner traces) carry nothing to compare, and
        # nnsight files an edit's exit under the block before it: only traces with values align.
        sub = {b: {"traces": [dict(t, ordinal=k) for k, t in enumerate(
            t for t in records[b]["traces"] if os.path.basename(t["file"] or "") == name and t["values"])]}
            for b in records}
        values = compare(sub["mlx"], sub["nnsight"])
        bad = [r for r in values if r.failed]
        worst = max((r.abs_diff for r in values if r.abs_diff is not None and not r.failed), default=0.0)
        ok_n, ok_m = got["nnsight"]["status"] == "ok", got["mlx"]["status"] == "ok"
        passed = ok_n and ok_m and not bad
        same_error = (not ok_n and not ok_m and got["nnsight"]["status"] == "error"
                      and got["mlx"].get("type") == got["nnsight"].get("type"))
        if passed or not ok_n:
            reason = "" if passed else f"nnsight: {got['nnsight']['error']}"
        elif not ok_m:
            reason = got["mlx"]["error"]
        else:
            reason = f"{len(bad)} of {len(values)} saved values differ: {bad[0].name} {bad[0].verdict}"
        rows.append({"block": i, "nnsight": got["nnsight"]["status"], "mlx": got["mlx"]["status"],
                     "values": len(values), "max_abs_diff": worst, "passed": passed,
                     "same_error": same_error, "reason": first_line(reason, 200)})
    return rows


def table(results: dict[str, list[dict]]) -> tuple[str, dict]:
    counts = {"blocks": 0, "nnsight": 0, "both": 0, "errors_on_nnsight": 0, "same_error": 0, "values": 0,
              "max_abs_diff": 0.0}
    lines = []
    for page, rows in results.items():
        for r in rows:
            counts["blocks"] += 1
            counts["nnsight"] += r["nnsight"] == "ok"
            counts["both"] += r["passed"]
            counts["errors_on_nnsight"] += r["nnsight"] == "error"
            counts["same_error"] += r["same_error"]
            if r["passed"]:
                counts["values"] += r["values"]
                counts["max_abs_diff"] = max(counts["max_abs_diff"], r["max_abs_diff"])
            if r["nnsight"] == "ok":
                mark = "pass" if r["passed"] else "FAIL"
                lines.append(f"| `{page}` #{r['block']} | ok | {mark} | {r['values']} | "
                             f"{r['reason'].replace('|', '/')} |")
    share = 100 * counts["both"] / max(counts["nnsight"], 1)
    summary = (f"{counts['blocks']} blocks on {len(results)} pages; {counts['nnsight']} run on nnsight; "
               f"{counts['both']} of those run on mlxsight with equal saved values ({share:.1f}%; "
               f"{counts['values']} values, largest difference {counts['max_abs_diff']:.2g}); of "
               f"{counts['errors_on_nnsight']} blocks that raise on nnsight, {counts['same_error']} raise the "
               f"same exception class on mlxsight\n\n")
    head = "| page, block | nnsight | mlxsight | values | reason for a gap |\n|---|---|---|---|---|\n"
    return summary + head + "\n".join(lines) + "\n", counts


def main(argv: list[str] | None = None) -> int:
    import mlxsight  # noqa: F401  mlx before transformers

    from .sources import nnsight_tests

    p = argparse.ArgumentParser(prog="python -m conformance.docs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for results.json, table.md and each page's files")
    p.add_argument("--timeout", type=float, default=600, help="seconds per page and backend")
    p.add_argument("--root", help="run the notebooks and markdown pages under this folder instead of nnsight's docs")
    p.add_argument("select", nargs="*", help="page globs (e.g. 'docs/patterns/*')")
    ns = p.parse_args(argv)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    found = folder_pages(Path(ns.root)) if ns.root else pages(nnsight_tests())
    if ns.select:
        found = {k: v for k, v in found.items() if any(fnmatch.fnmatch(k, g) for g in ns.select)}
    if not found:
        raise SystemExit("conformance.docs: no page matched")
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for page, blocks in found.items():
        start = time.time()
        folder = out / "pages" / page.replace("/", "__").removesuffix(".md").removesuffix(".ipynb")
        write_page(blocks, folder)
        sides = run_sides(folder, ns.timeout)
        results[page] = judge(folder, len(blocks), sides)
        passed = sum(r["passed"] for r in results[page])
        ran = sum(r["nnsight"] == "ok" for r in results[page])
        print(f"{page}: {passed}/{ran} of nnsight's running blocks ({len(blocks)} blocks) "
              f"in {time.time() - start:.0f}s", flush=True)
        # written after every page: a run cut short still reports the pages it finished
        results_path.write_text(json.dumps(results, indent=1))
        text, _ = table(results)
        (out / "table.md").write_text(text)
    print(text.splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
