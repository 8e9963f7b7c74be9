"""``python -m mlxsight serve [MODEL] [--host 127.0.0.1] [--port N] [--sae PATH]``: the local web app.

Explorers for the logit lens, activation patching, attention patterns and head scores, contrastive
steering, SAE features (with ``--sae``) and a base-model playground, on one model (default: the
bundled stories260K). Needs the ``ui`` extra (Starlette and uvicorn). Binds to loopback unless told.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

MISSING = ("`python -m mlxsight serve` needs the web app's packages, which are not installed.\n"
           "Install them with:  pip install 'mlxsight[ui]'   (Starlette and uvicorn;  'mlxsight[all]' adds every "
           "optional part)")


def create_app(model: Any, **kw: Any) -> Any:
    """The Starlette app serving the explorers for ``model``, a checkpoint path or a function that loads
    an mlxsight ``LanguageModel`` (see ``mlxsight.app.server.create_app``)."""
    from .server import create_app as create

    return create(model, **kw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlxsight serve", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None,
                        help="checkpoint path or repo id (default: the bundled stories260K)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--sae", default=None, help="an SAE for the features explorer")
    args = parser.parse_args(argv)
    if any(importlib.util.find_spec(m) is None for m in ("starlette", "uvicorn")):
        print(MISSING, file=sys.stderr)
        return 1
    import uvicorn

    from mlxsight import assets

    name = args.model or str(assets.path("stories260k"))
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    if not loopback:
        print(f"warning: serving on {args.host}: anyone who can reach it can run the model", file=sys.stderr)
    print(f"mlxsight explorers for {name}: http://{args.host}:{args.port}/", flush=True)
    app = create_app(name, sae=args.sae, model_name=name,
                     **({} if loopback else {"allowed_hosts": ["*"]}))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
