"""Run a script on two backends, each in its own process, and compare what they saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict

from . import capture
from .compare import ATOL, RTOL, compare, format_table, summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAIL = 25  # traceback lines shown for a side that failed


def start_side(backend: str, script: str, args: list[str], capture_path: str) -> subprocess.Popen:
    """Start ``python -m compat run --backend B --capture FILE SCRIPT ARGS`` in a fresh process:
    nnsight and mlx cannot share one (import order), and neither side can leak into the other."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [sys.executable, "-m", "compat", "run", "--backend", backend, "--capture", capture_path, script, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish_side(proc: subprocess.Popen, timeout: float | None) -> subprocess.CompletedProcess:
    """Wait for a side started by ``start_side``; a side past ``timeout`` seconds is killed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, -9, "", f"{err or ''}\ncompat: killed after {timeout:g} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def side_report(label: str, proc: subprocess.CompletedProcess, record: dict | None) -> tuple[bool, str]:
    """Whether the side ran cleanly, and what to print about it."""
    ok = proc.returncode == 0 and record is not None and record["status"] == "ok"
    text = f"[{label}] exit {proc.returncode}, {len(record['traces']) if record else 0} traces captured"
    if not ok:
        tail = (record or {}).get("error") or proc.stderr or "(no output)"
        text += "\n" + "\n".join(f"    {line}" for line in tail.rstrip().splitlines()[-TAIL:])
    elif proc.stderr.strip():
        text += f"\n    stderr: {proc.stderr.strip().splitlines()[-1]}"
    return ok, text


def crosscheck(script: str, args: list[str], backends: tuple[str, str] = ("mlx", "nnsight"),
               rtol: float = RTOL, atol: float = ATOL, json_out: str | None = None,
               timeout: float | None = None) -> int:
    """Exit status 0 only when both sides ran and every saved value matches."""
    test, ref = backends
    labels = (test, ref) if test != ref else (f"{test}#1", f"{ref}#2")
    records, oks = [], []
    with tempfile.TemporaryDirectory(prefix="compat-") as tmp:
        paths = [os.path.join(tmp, f"{label}.pkl") for label in labels]
        # Both sides at once: each is mostly its own imports and model load, one core each.
        procs = [start_side(backend, script, args, path) for backend, path in zip(backends, paths)]
        try:
            done = [finish_side(proc, timeout) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for label, path, proc in zip(labels, paths, done):
            record = capture.load(path) if os.path.exists(path) else None
            ok, text = side_report(label, proc, record)
            print(text)
            records.append(record)
            oks.append(ok)
    return report(records[0], records[1], labels, oks, rtol, atol, json_out)


def report(test: dict | None, ref: dict | None, labels: tuple[str, str], oks: list[bool],
           rtol: float, atol: float, json_out: str | None) -> int:
    rows = compare(test or {"traces": []}, ref or {"traces": []}, rtol, atol, *labels)
    print(format_table(rows) if rows else "(no values were saved on either side)")
    print(summary(rows) + f"  [rtol={rtol:g}, atol={atol:g}; reference: {labels[1]}]")
    failed = any(r.failed for r in rows) or not all(oks)
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"backends": list(labels), "ran_ok": oks, "rtol": rtol, "atol": atol,
                       "passed": not failed, "rows": [asdict(r) for r in rows]}, f, indent=1)
    if not all(oks):
        print("FAIL: " + ", ".join(l for l, ok in zip(labels, oks) if not ok) + " did not run cleanly")
    print("PASS" if not failed else "FAIL")
    return 0 if not failed else 1
