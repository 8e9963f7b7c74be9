"""``check-remote``: build nnsight's NDIF request for each trace offline and report on it.

nnsight's own ``remote="local"`` backend (``intervention/backends/local.py``) serializes a trace
exactly as ``RemoteBackend._serialize`` does (``RequestModel.serialize``: the block's source plus
the globals/locals it reads, cloudpickled, the model and modules as persistent ids), then
deserializes it with non-installed modules hidden, as on the server, and runs it here. This
subclass records what would have been shipped before doing that; nothing is sent anywhere.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field


_SEEDED: set[str] = set()  # repo ids we put in nnsight's Hub-id cache


@dataclass
class TraceRequest:
    file: str
    line: int
    model_key: str = ""
    payload_bytes: int = 0
    compressed_bytes: int | None = None
    names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def install(requests: list[TraceRequest], every_trace: bool) -> None:
    """Route ``remote=True`` traces (or all traces) through the dry-run backend."""
    from nnsight.intervention.backends.local import LocalSimulationBackend
    from nnsight.modeling.mixins import remotable

    class DryRunBackend(LocalSimulationBackend):
        def __call__(self, tracer):
            frame = tracer.info.frame
            request = TraceRequest(frame.f_code.co_filename, frame.f_lineno)
            requests.append(request)
            try:
                describe(request, self.model, tracer)
                return super().__call__(tracer)  # deserialize with local modules hidden, then run
            except Exception as error:  # report it, then run the trace locally so the script goes on
                request.error = f"{type(error).__name__}: {error}"
                request.error += "\n" + "".join(traceback.format_exception(error)[-6:])
                return tracer.execute(tracer.info.code)

    def _remote_backend(self, remote, blocking, job_id, verbose):
        return DryRunBackend(self)

    remotable.Remotable._remote_backend = _remote_backend
    if every_trace:
        original_trace = remotable.Remotable.trace

        def trace(self, *args, remote=False, **kwargs):
            return original_trace(self, *args, remote=remote or True, **kwargs)

        remotable.Remotable.trace = trace


def describe(request: TraceRequest, model, tracer) -> None:
    """Fill ``request`` with what RemoteBackend would send for ``tracer``."""
    from nnsight.intervention.serialization import reduce_block
    from nnsight.ndif import pull_env
    from nnsight.schema.config import CONFIG
    from nnsight.schema.request import RequestModel

    _offline_repo_id(request, model)
    request.model_key = model.to_model_key()
    pull_env()
    frame = tracer.info.frame
    _, glbls, lcls = reduce_block(tracer.node, frame.f_globals, dict(frame.f_locals))
    request.names = sorted(set(glbls or {}) | set(lcls or {}))
    request.payload_bytes = len(RequestModel.serialize(tracer, compress=False))
    if CONFIG.API.COMPRESS:
        try:
            request.compressed_bytes = len(RequestModel.serialize(tracer, compress=True))
        except ImportError:
            pass


def _offline_repo_id(request: TraceRequest, model) -> None:
    """nnsight canonicalizes the repo id with a Hub query; seed its cache instead (no network)."""
    from nnsight.modeling import huggingface

    repo = getattr(model, "repo_id", None)
    if not isinstance(repo, str) or (repo in huggingface._ID_CACHE and repo not in _SEEDED):
        return
    huggingface._ID_CACHE[repo] = repo
    _SEEDED.add(repo)
    request.notes.append("repo id used as written: nnsight would canonicalize it through the Hub")
    if os.path.isdir(repo):
        request.notes.append("the model is a local checkpoint directory: NDIF runs Hub models only, "
                             "so the server would refuse this model key (the payload itself is fine)")


def format_report(requests: list[TraceRequest]) -> str:
    if not requests:
        return "check-remote: the script ran no remote trace (use --all to check every trace)"
    lines = []
    for i, r in enumerate(requests):
        verdict = "serializable" if r.error is None else "NOT serializable"
        size = f"{r.payload_bytes:,} bytes" + (f" ({r.compressed_bytes:,} compressed)" if r.compressed_bytes else "")
        lines.append(f"trace #{i} {r.file}:{r.line}: {verdict}")
        lines.append(f"    model_key: {r.model_key or '?'}")
        if r.error is None:
            lines.append(f"    payload: {size}")
        lines.append(f"    names shipped: {', '.join(r.names) if r.names else '(none)'}")
        lines += [f"    note: {note}" for note in r.notes]
        if r.error:
            lines += [f"    {line}" for line in r.error.rstrip().splitlines()]
    ok = sum(r.error is None for r in requests)
    lines.append(f"{ok}/{len(requests)} traces serializable for NDIF (nothing was sent)")
    return "\n".join(lines)


def check_remote(script: str, args: list[str], every_trace: bool = False) -> int:
    from .runner import prepare, run_script

    prepare("nnsight")
    requests: list[TraceRequest] = []
    install(requests, every_trace)
    status = 0
    try:
        run_script(script, args)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception:
        traceback.print_exc()
        status = 1
    print(format_report(requests))
    return 1 if status or any(r.error for r in requests) else 0
