"""Run unmodified nnsight scripts on mlxsight or nnsight, and cross-check what they save.

  run --backend mlx|nnsight SCRIPT [ARGS...]     run as `python SCRIPT ARGS` would
  crosscheck SCRIPT [ARGS...] [--rtol R --atol A --json OUT]
                                                 both backends, one process each; exit 0 only
                                                 when every saved value matches
  compare TEST.pkl REF.pkl                       compare two `run --capture` files
  check-remote [--all] SCRIPT [ARGS...]          build the NDIF request per trace; sends nothing
"""

from __future__ import annotations

import argparse
import sys

from .compare import ATOL, RTOL

# Options of ours that may also follow SCRIPT (as the usage shows); everything else after SCRIPT,
# and everything after a literal "--", belongs to the script.
TRAILING = {"--rtol": float, "--atol": float, "--json": str, "--backends": str, "--timeout": float}


def split_trailing(rest: list[str]) -> tuple[dict, list[str]]:
    opts, args, i = {}, [], 0
    while i < len(rest):
        token = rest[i]
        if token == "--":
            args += rest[i + 1:]
            break
        name, _, inline = token.partition("=")
        if name in TRAILING:
            value = inline if inline else (rest[i + 1] if i + 1 < len(rest) else None)
            if value is None:
                raise SystemExit(f"compat: {name} needs a value")
            opts[name[2:]] = TRAILING[name](value)
            i += 1 if inline else 2
            continue
        args.append(token)
        i += 1
    return opts, args


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m compat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an unmodified nnsight script on one backend")
    run.add_argument("--backend", choices=("mlx", "nnsight"), required=True)
    run.add_argument("--capture", metavar="FILE", help="write every saved value to FILE (pickle)")
    run.add_argument("script")
    run.add_argument("args", nargs=argparse.REMAINDER)

    cc = sub.add_parser("crosscheck", help="run a script on mlx and on nnsight and compare saved values")
    cc.add_argument("--rtol", type=float, default=RTOL)
    cc.add_argument("--atol", type=float, default=ATOL)
    cc.add_argument("--json", metavar="OUT", help="also write the table as JSON")
    cc.add_argument("--backends", default="mlx,nnsight", help=argparse.SUPPRESS)  # e.g. nnsight,nnsight
    cc.add_argument("--timeout", type=float, default=None, help="seconds allowed per side")
    cc.add_argument("script")
    cc.add_argument("args", nargs=argparse.REMAINDER)

    cmp = sub.add_parser("compare", help="compare two capture files (test first, reference second)")
    cmp.add_argument("test")
    cmp.add_argument("reference")
    cmp.add_argument("--rtol", type=float, default=RTOL)
    cmp.add_argument("--atol", type=float, default=ATOL)
    cmp.add_argument("--json", metavar="OUT")

    cr = sub.add_parser("check-remote", help="build nnsight's NDIF request for each trace offline")
    cr.add_argument("--all", action="store_true", help="check every trace, not only remote=True ones")
    cr.add_argument("script")
    cr.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    if ns.command == "run":
        from .runner import run

        return run(ns.backend, ns.script, ns.args, ns.capture)
    if ns.command == "crosscheck":
        from .crosscheck import crosscheck

        opts, args = split_trailing(ns.args)
        for key, value in opts.items():
            setattr(ns, key, value)
        backends = tuple(ns.backends.split(","))
        if len(backends) != 2 or not set(backends) <= {"mlx", "nnsight"}:
            raise SystemExit("compat: --backends takes two of mlx,nnsight")
        return crosscheck(ns.script, args, backends, ns.rtol, ns.atol, ns.json, ns.timeout)
    if ns.command == "compare":
        from .capture import load
        from .crosscheck import report

        test, ref = load(ns.test), load(ns.reference)
        oks = [r["status"] == "ok" for r in (test, ref)]
        return report(test, ref, (test["backend"], ref["backend"]) if test["backend"] != ref["backend"]
                      else ("test", "reference"), oks, ns.rtol, ns.atol, ns.json)
    if ns.command == "check-remote":
        from .remote import check_remote

        return check_remote(ns.script, ns.args, ns.all)
    raise AssertionError(ns.command)


if __name__ == "__main__":
    sys.exit(main())
