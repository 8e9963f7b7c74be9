"""Run nnsight 0.8.1's or nnterp 1.3.0's own tests, unchanged, on both backends; write the table.

From the repository root::

    PYTHONPATH=$PWD:$PWD/tests python -m conformance.run --suite nnsight --out /tmp/conf-nnsight
    PYTHONPATH=$PWD:$PWD/tests python -m conformance.run --suite nnterp --out /tmp/conf-nnterp

Each backend runs in its own pytest process (``-p conformance.plugin``) against the same offline
Hugging Face cache. ``--out`` gets ``results.json`` (per test: outcome and message per backend) and
``table.md`` (passes on nnsight / passes on mlxsight / the reason for each gap).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("nnsight", "mlx")

# nnsight's language-model tests: the ones built on a real TransformersModel / LanguageModel.
NNSIGHT_FILES = ("tests/test_language.py", "tests/test_chat.py")
# nnterp's models, limited to families both backends load (the rest is in docs/compatibility.md).
NNTERP_MODELS = ("gpt2", "Maykeye/TinyLLama-v0", "yujiepan/llama-2-tiny-random")


def suite_args(suite: str) -> tuple[Path, list[str], dict[str, str]]:
    """(working directory, pytest arguments, extra environment) for ``suite``."""
    from .sources import nnsight_tests, nnterp_package

    if suite == "nnsight":
        return nnsight_tests(), list(NNSIGHT_FILES), {}
    if suite == "nnterp":
        root = nnterp_package()
        # nnterp caches which models loaded, per nnsight version, across runs: start each run afresh.
        data = root / "nnterp" / "data"
        for stale in data.glob("test_loading_status.json*"):
            stale.unlink()
        # Its model list also reads a hub collection (yujiepan's tiny models), cached for a day in
        # data/toy_models_cache.json: offline, the collection is the part of it this cache holds.
        from datetime import datetime

        from .checkpoints import LLAMAS

        # Seed its status file with no verdicts for this transformers and both nnsight versions, so it
        # checks each model it is asked for (on the backend under test) instead of re-checking its
        # whole hub list, most of which is not in this offline cache.
        from importlib.metadata import version

        nnsight = version("nnsight")
        (data / "test_loading_status.json").write_text(json.dumps(
            {version("transformers"): {nnsight: {}, f"{nnsight}+mlxsight": {}}}))
        toys = sorted(m for m in LLAMAS if m.startswith("yujiepan/"))
        (data / "toy_models_cache.json").write_text(json.dumps({"timestamp": datetime.now().isoformat(),
                                                                "models": toys}))
        return root, ["nnterp/tests", "--model-names", *NNTERP_MODELS], {"MLXSIGHT_CONFORMANCE_NNTERP": "1"}
    raise ValueError(f"unknown suite {suite!r}")


def run_backend(suite: str, backend: str, out: Path, select: list[str], keyword: str | None,
                timeout: float) -> dict[str, dict]:
    """Run the suite on one backend; ``{test id: {"outcome", "message"}}``."""
    import mlxsight  # noqa: F401  mlx before transformers

    from .checkpoints import hf_home

    cwd, args, extra = suite_args(suite)
    if select:  # the chosen ids replace the suite's files; options (--model-names ...) stay last
        args = select + [a for a in args if not a.startswith(("tests/", "nnterp/tests"))]
    junit = out / f"{backend}.xml"
    env = dict(os.environ, HF_HOME=str(hf_home()), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", MLXSIGHT_CONFORMANCE_BACKEND=backend, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", "-p", "conformance.plugin", "-p", "no:cacheprovider", "-p", "no:anyio", "-q",
           "-o", "addopts=", "--junitxml", str(junit), "-rN", "--tb=line", *args]
    if keyword:
        cmd += ["-k", keyword]
    with open(out / f"{backend}.log", "w") as log:
        try:
            subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            log.write(f"\nconformance: timed out after {timeout}s\n")
    return parse_junit(junit) if junit.exists() else {}


def run_backends(suite: str, out: Path, select: list[str], keyword: str | None, timeout: float) -> dict[str, dict]:
    """``run_backend`` on every backend, at once where the suite allows (one process each);
    ``{backend: results}``."""
    from concurrent.futures import ThreadPoolExecutor

    # nnterp's tests write a status file (and its lock) inside the package folder both runs share
    with ThreadPoolExecutor(len(BACKENDS) if suite != "nnterp" else 1) as pool:
        found = pool.map(lambda b: run_backend(suite, b, out, select, keyword, timeout), BACKENDS)
        return dict(zip(BACKENDS, found))


def junit_name(nodeid: str) -> str:
    """The name a pytest node id has in the results (``tests/test_x.py::A::b`` -> ``tests.test_x.A::b``)."""
    path, _, rest = nodeid.partition("::")
    parts = [path.removesuffix(".py").replace("/", ".")] + rest.split("::")
    return ".".join(parts[:-1]) + "::" + parts[-1]


def parse_junit(path: Path) -> dict[str, dict]:
    results = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or node.text or "").strip()
                break
        results[name] = {"outcome": outcome, "message": first_line(message)}
    return results


def first_line(message: str, limit: int = 160) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[:limit - 1] + "…"


def table(results: dict[str, dict[str, dict]]) -> tuple[str, dict]:
    """The per-test markdown table and the counts."""
    names = sorted({n for per in results.values() for n in per})
    rows, counts = [], {b: 0 for b in BACKENDS}
    counts.update(both=0, nnsight_only=0, mlx_only=0)
    for name in names:
        got = {b: results.get(b, {}).get(name, {"outcome": "missing", "message": "not run"}) for b in BACKENDS}
        ok = {b: got[b]["outcome"] == "passed" for b in BACKENDS}
        for b in BACKENDS:
            counts[b] += ok[b]
        counts["both"] += ok["nnsight"] and ok["mlx"]
        counts["nnsight_only"] += ok["nnsight"] and not ok["mlx"]
        counts["mlx_only"] += ok["mlx"] and not ok["nnsight"]
        if ok["nnsight"] and not ok["mlx"]:
            reason = got["mlx"]["message"]
        elif not ok["nnsight"]:
            reason = f"nnsight: {got['nnsight']['outcome']}: {got['nnsight']['message']}"
        else:
            reason = ""
        mark = {True: "pass", False: None}
        rows.append(f"| `{name}` | {mark[ok['nnsight']] or got['nnsight']['outcome']} | "
                    f"{mark[ok['mlx']] or got['mlx']['outcome']} | {reason.replace('|', '/')} |")
    head = ("| test | nnsight | mlxsight | reason for a gap |\n|---|---|---|---|\n")
    summary = (f"{len(names)} tests; pass on nnsight {counts['nnsight']}, on mlxsight {counts['mlx']}; "
               f"of nnsight's passes, {counts['both']} pass on mlxsight "
               f"({100 * counts['both'] / max(counts['nnsight'], 1):.1f}%)\n\n")
    return summary + head + "\n".join(rows) + "\n", counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("nnsight", "nnterp"), required=True)
    p.add_argument("--backends", default="nnsight,mlx")
    p.add_argument("--out", required=True, help="folder for results.json, table.md and the logs")
    p.add_argument("-k", dest="keyword", help="pytest -k expression")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per backend")
    p.add_argument("select", nargs="*", help="test files or ids (relative to the suite root)")
    ns = p.parse_args(argv)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for backend in ns.backends.split(","):
        start = time.time()
        fresh = run_backend(ns.suite, backend, out, ns.select, ns.keyword, ns.timeout)
        results.setdefault(backend, {}).update(fresh)
        print(f"{backend}: {sum(r['outcome'] == 'passed' for r in fresh.values())}/{len(fresh)} passed "
              f"in {time.time() - start:.0f}s", flush=True)
    results_path.write_text(json.dumps(results, indent=1, sort_keys=True))
    text, counts = table(results)
    (out / "table.md").write_text(text)
    print(text.splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
