"""Runtime state, in one place: what is open on this thread, and the process-wide settings.

Open tracers and sessions are per thread: a trace opened in one thread is invisible to every other
thread, so threads tracing different models never meet. Settings (torch semantics, the value
transform, the sampler, exit listeners) are per process, because the compat runner sets them once for a script
whose traces may run on any thread. Each model has one lock: two threads tracing the *same* model
take turns (a trace holds the lock from entry to exit), since a run hooks that model's modules.

This module imports nothing from mlxsight: every other module may import it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

ExitListener = Callable[[dict, dict], None]
# (temperature, top_k, top_p) -> a function from last-position logits ``[rows, vocab]`` to one
# sampled token id per row ``[rows]`` (both ``mx.array``s)
SamplerFactory = Callable[[float, "int | None", float], Callable[[Any], Any]]


class _OpenOnThread(threading.local):
    def __init__(self) -> None:
        self.tracers: list[Any] = []
        self.sessions: list[Any] = []


_open = _OpenOnThread()


@dataclass
class Settings:
    """Process-wide behaviour that the compat runner (or a user) switches on."""

    torch_semantics: bool = False  # proxy methods read with torch's meaning (``.max(1)``, ``.view``)
    value_transform: Callable[[Any], Any] | None = None  # applied to each saved value at push
    relaxed_order: bool = False  # allow reading modules out of forward order within one invoke
    module_view: Callable[[Any, Any], Any] | None = None  # (model, module) -> what envoy._module shows
    sampler: SamplerFactory | None = None  # sampling for do_sample generation; None: MLX's random stream
    exit_listeners: list[ExitListener] = field(default_factory=list)


settings = Settings()


# -- open tracers and sessions (this thread) ----------------------------------------------------
def current_tracer() -> Any:
    """The innermost trace open on this thread, or None."""
    tracers = _open.tracers
    return tracers[-1] if tracers else None


def current_session() -> Any:
    """The session open on this thread, or None."""
    sessions = _open.sessions
    return sessions[-1] if sessions else None


def open_tracers() -> list[Any]:
    """A copy of this thread's open tracers, outermost first."""
    return list(_open.tracers)


def push_tracer(tracer: Any) -> None:
    _open.tracers.append(tracer)


def pop_tracer(tracer: Any) -> None:
    """Forget ``tracer`` wherever it is on this thread's stack (a no-op when it is not there)."""
    stack = _open.tracers
    if stack and stack[-1] is tracer:  # the usual case: the innermost trace closes
        stack.pop()
    else:
        _forget(stack, tracer)


def push_session(session: Any) -> None:
    _open.sessions.append(session)


def pop_session(session: Any) -> None:
    _forget(_open.sessions, session)


def discard_abandoned(caller: Any) -> list[tuple[Any, str, int]]:
    """Close this thread's open traces and sessions whose block was left without its ``__exit__``;
    return them as ``(block, file, line)``, outermost first.

    Python skips a ``with`` block's ``__exit__`` when the exception ending the block comes from a
    trace function at the statement's exit (a debugger quitting: ``breakpoint()`` then ``q``), so
    such a block stays open. It is known abandoned when its frame has finished (no longer on this
    thread's stack), or when its own ``with`` statement is entered again from that frame. Each
    holder provides ``block_frame``, ``block_line`` and ``abandon()`` (which releases it);
    ``caller`` is the user's frame entering a new block."""
    if not (_open.tracers or _open.sessions):  # the usual case: nothing open, nothing to walk
        return []
    live, f = set(), caller
    while f is not None:
        live.add(id(f))
        f = f.f_back
    gone = []
    for block in _open.tracers + _open.sessions:
        frame = getattr(block, "block_frame", None)
        if frame is None:
            continue
        if id(frame) not in live or (frame is caller and block.block_line == caller.f_lineno):
            gone.append((block, frame.f_code.co_filename, block.block_line))
    for block, _, _ in gone:
        block.abandon()
    return gone


def _forget(stack: list[Any], item: Any) -> None:
    """Remove the innermost occurrence of ``item`` (by identity) from ``stack``, if any."""
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is item:
            del stack[i]
            return


# -- outputs a forward collects from its layers (transformers' ``output_attentions``) -------------
_captured: ContextVar[dict[str, list] | None] = ContextVar("mlxsight_captured", default=None)


@contextmanager
def capturing(*keys: str) -> Iterator[dict[str, list]]:
    """Collect, for the forward run inside, what layers report under ``keys`` (``capture``), as
    transformers' ``capture_outputs`` does; nested forwards collect their own."""
    collected: dict[str, list] = {key: [] for key in keys}
    token = _captured.set(collected)
    try:
        yield collected
    finally:
        _captured.reset(token)


def capture(key: str, value: Any) -> None:
    """Report ``value`` under ``key`` to the forward collecting it (``None`` values are not
    collected: sdpa attention has no weights, and transformers then collects nothing)."""
    collected = _captured.get()
    if collected is not None and key in collected and value is not None:
        collected[key].append(value)


# -- saving ---------------------------------------------------------------------------------------
def save(obj: Any) -> Any:
    """Mark ``obj`` (a proxy, or any object such as a list filled during the trace) as saved."""
    owner = getattr(type(obj), "_mlxsight_owner", None)  # proxies name the trace they belong to
    tracer = owner(obj) if owner is not None else current_tracer()
    if tracer is None and current_session() is not None:  # a session body is a trace's body too
        current_session()._saved[id(obj)] = obj
        return obj
    if tracer is None:
        raise ValueError("save() was called outside a trace. Call it inside `with model.trace(...)`.")
    tracer.save(obj)
    return obj


# -- settings -------------------------------------------------------------------------------------
def set_torch_semantics(enabled: bool) -> None:
    """Read proxy methods with torch's meaning (``.max(1)`` gives values and indices, ``.view``
    reshapes): what nnsight scripts expect. The compat runner turns it on."""
    settings.torch_semantics = bool(enabled)


def torch_semantics() -> bool:
    return settings.torch_semantics


def set_relaxed_order(enabled: bool) -> None:
    """Opt in to reading modules out of forward order within one invoke (nnsight raises
    ``OutOfOrderError``; a script relying on this runs here and fails on nnsight/NDIF)."""
    settings.relaxed_order = bool(enabled)


def set_value_transform(fn: Callable[[Any], Any] | None) -> None:
    """Apply ``fn`` to every saved value as it is pushed to the caller (compat: mx.array -> torch)."""
    settings.value_transform = fn


def set_module_view(fn: Callable[[Any, Any], Any] | None) -> None:
    """Show nnsight scripts ``fn(model, module)`` as an envoy's ``_module`` (compat: a
    ``torch.nn.Module`` view of the MLX module); mlxsight itself reads ``Envoy.mlx_module``."""
    settings.module_view = fn


def set_sampler(fn: SamplerFactory | None) -> None:
    """Sample ``do_sample`` generation steps with ``fn(temperature, top_k, top_p)``, a function from a
    step's last-position logits to one token id per row; ``None`` restores MLX's sampler (mlx-lm's,
    on MLX's random stream). compat installs transformers' sampling on torch's global random stream,
    so a seeded nnsight script samples the same tokens here."""
    settings.sampler = fn


def sampler() -> SamplerFactory | None:
    return settings.sampler


def add_exit_listener(fn: ExitListener) -> None:
    """Call ``fn(info, values)`` after each outermost traced block (trace, generate, edit, session)
    pushes its saved names. ``info`` holds the user's ``file`` and ``line``."""
    settings.exit_listeners.append(fn)


def remove_exit_listener(fn: ExitListener) -> None:
    """Stop calling ``fn``; a no-op if it was not added."""
    if fn in settings.exit_listeners:
        settings.exit_listeners.remove(fn)


def notify_exit(info: dict, values: dict) -> None:
    for listener in list(settings.exit_listeners):
        listener(info, dict(values))


# -- one lock per model ---------------------------------------------------------------------------
_locks_guard = threading.Lock()


def model_lock(holder: Any) -> threading.Lock:
    """The lock shared by every trace of the model behind ``holder`` (held from entry to exit).

    Kept on the holder's ``__dict__`` (an envoy), so shallow copies made for edits share it."""
    lock = holder.__dict__.get("_trace_lock")
    if lock is None:
        with _locks_guard:
            lock = holder.__dict__.get("_trace_lock")
            if lock is None:
                lock = threading.Lock()
                object.__setattr__(holder, "_trace_lock", lock)
    return lock
