"""The caller's frame: a snapshot at block entry, the saved names at exit, and the write-back.

nnsight 0.8 rebinds a block's saved variables in the caller's frame when the block ends; so do we.
Only names bound or rebound during the block, names holding saved objects, and containers that
existed before the block and now hold the block's proxies are looked at: a notebook holding large
values pays for none of them.
"""

from __future__ import annotations

import ctypes
import sys
from types import FrameType
from typing import Any, Callable

import mlx.core as mx

from . import context
from .proxy import Proxy
from .runner import NEVER_REACHED
from .tree import contains

_SMALL = 64  # pre-existing containers up to this size are always searched for proxies


_FAST_LOCALS = sys.version_info < (3, 13)  # before 3.13, f_locals of a function is a copy written back explicitly


_CONTAINERS = (list, dict)  # exactly these: what a block may put its proxies into


def is_container(value: Any) -> bool:
    return type(value) in _CONTAINERS


def _shared(value: Any) -> bool:
    """A value Python shares between unrelated names (``None``, small ints, interned strings): saving
    it (``attn.output[1].save()`` under sdpa is ``None``) says nothing of names that held it before."""
    return value is None or type(value) in (bool, int, float, str, bytes)


class FrameSnapshot:
    """The caller's variables at block entry (by identity), and how big its containers were."""

    def __init__(self, frame: FrameType | None) -> None:
        self.frame = frame
        self.values: dict[str, Any] = dict(frame.f_locals) if frame is not None else {}
        self.sizes = {id(v): len(v) for v in self.values.values() if type(v) in _CONTAINERS}

    @property
    def info(self) -> dict:
        """Where the block is: the user's file and line (what exit listeners receive)."""
        frame = self.frame
        return {"file": frame.f_code.co_filename if frame else None, "line": frame.f_lineno if frame else None}

    def collect(self, owns: Callable[[Any], bool], saved: dict[int, Any], hand_all: bool = False
                ) -> tuple[list[tuple[str, Any]], list, dict]:
        """What the block left in the frame: ``(pushes, containers, locals)``.

        ``pushes`` are ``(name, value)`` for saved objects (and, with ``hand_all``, for every value
        holding one of the block's proxies: a session's inner trace hands all of them on);
        ``containers`` are pre-existing lists/dicts the block put its proxies into; ``locals`` is the
        one read of the frame's variables (for a function frame each read copies them)."""
        frame = self.frame
        if frame is None:
            return [], [], {}
        locals_ = frame.f_locals
        before, sizes = self.values, self.sizes
        pushes, containers, unchecked = [], [], []
        for name, value in list(locals_.items()):
            if id(value) in saved and not (_shared(value) and before.get(name, _MISSING) is value):
                pushes.append((name, value))
            elif before.get(name, _MISSING) is not value:  # bound or rebound in the block
                if hand_all and owns(value):
                    pushes.append((name, value))
            elif is_container(value):
                if len(value) <= _SMALL or sizes.get(id(value)) != len(value):
                    if owns(value):
                        containers.append(value)
                else:
                    unchecked.append(value)
        if unchecked and _unaccounted(saved, pushes, containers):
            containers += [v for v in unchecked if owns(v)]
        return pushes, containers, locals_

    def changed(self, locals_: dict, keep: tuple = ()) -> list[str]:
        """The names the block bound or rebound in ``locals_``, but those bound to ``keep``."""
        before = self.values
        kept = {id(k) for k in keep}
        return [n for n, v in locals_.items() if before.get(n, _MISSING) is not v and id(v) not in kept]

    def push(self, locals_: dict, updates: dict[str, Any], keep: tuple = ()) -> None:
        """Write ``updates`` (the saved values) into the frame. Every other name the block bound
        or rebound reverts to its value before the block (or disappears if it had none), but those
        bound to ``keep`` (what ``with ... as`` bound): as nnsight's outermost trace pushes only
        saved values, a plain value made in the block (``n = model.config.num_attention_heads``,
        a loop variable) is not there after it on either backend."""
        frame = self.frame
        if frame is None:
            return
        before = self.values
        deletes = []
        for name in self.changed(locals_, keep):
            if name in updates:
                continue
            if name in before:
                updates[name] = before[name]
            else:
                deletes.append(name)
        write_frame(frame, updates, deletes, locals_)

    def revert(self, keep: tuple = ()) -> None:
        """Undo the block's bindings but those to ``keep`` (what ``with ... as`` bound): each name it
        bound or rebound goes back to its value before the block, or away. A block that fails leaves
        the caller as it was (nnsight pushes nothing back from a failed block; mutations of objects
        that existed before stay)."""
        frame = self.frame
        if frame is None:
            return
        before, locals_ = self.values, frame.f_locals
        changed = self.changed(locals_, keep)
        write_frame(frame, {n: before[n] for n in changed if n in before}, [n for n in changed if n not in before])


def hand_back(snapshot: FrameSnapshot, saved: dict[int, Any], owns: Callable[[Any], bool],
              compute: Callable[[list], tuple[Callable[[Any], Any], list]], session: Any = None,
              evaluate: bool = True, keep: tuple = ()) -> dict[str, Any] | None:
    """Push a finished block's saved values to the caller's frame; the names bound (``None`` in a
    session, whose ``adopt`` takes every value the block holds, lazily, instead).

    ``compute(outputs)`` runs the graph for the proxies inside ``outputs``: a function replacing
    them by their values, and the values (not yet evaluated; ``evaluate``: evaluate them here, not
    for a scan's shapes). Other names the block bound go back to their values before the block, but
    those bound to ``keep`` (``FrameSnapshot.push``); exit listeners hear of the names bound."""
    pushes, containers, locals_ = snapshot.collect(owns, saved, hand_all=session is not None)
    resolve, values = compute([v for _, v in pushes] + containers)
    # in a session, values stay lazy until the session ends
    pending = [v for v in values if v is not NEVER_REACHED] if session is None and evaluate else []
    transform = context.settings.value_transform
    if pending and transform is not None:  # the transform (compat: to torch) reads the values
        mx.eval(pending)
        pending = []
    # in a session, names keep their values until the session hands them out (adopt); lists and
    # dicts the script made before the trace are transformed in place either way
    updates = resolved_updates(pushes, containers, resolve, transform, transform_names=session is None)
    if session is not None:
        session.adopt(snapshot.frame, updates, {n for n, v in pushes if id(v) in saved})
        return None
    snapshot.push(locals_, dict(updates), keep)  # reverted names are not pushed values
    if pending:
        # Evaluated last, once the names are bound to the (lazy) arrays: the forward's computation
        # evicts the caches, so the bookkeeping above runs before it, not after. If it fails, the
        # block's exit reverts the names as for any failure.
        mx.eval(pending)
    context.notify_exit(snapshot.info, updates)
    return updates


def resolved_updates(pushes: list[tuple[str, Any]], containers: list, resolve: Callable[[Any], Any],
                     transform: Callable[[Any], Any] | None = None, transform_names: bool = True) -> dict[str, Any]:
    """The names to bind after a block: each pushed value with its proxies replaced by values
    (``resolve``); lists and dicts, pushed or pre-existing, are resolved in place. A value from a
    step the run never made is left out. ``transform`` (compat: to torch) applies to every bound
    value and, in place, to the pre-existing containers."""
    for container in containers:
        _resolve_in_place(container, resolve)
        if transform is not None:  # lists/dicts the script made before the block hold the same
            transform(container)  # values as pushed names (in place)
    updates = {}
    for name, value in pushes:
        # a proxy is never a container here (and asking one its class runs its ``__class__`` property)
        if type(value) is not Proxy and isinstance(value, (list, dict)):
            _resolve_in_place(value, resolve)
            updates[name] = value
        else:
            value = resolve(value)
            if not _never_reached(value):
                updates[name] = value
    if transform is not None and transform_names:
        updates = {k: transform(v) for k, v in updates.items()}
    return updates


def _never_reached(value: Any) -> bool:
    if value is NEVER_REACHED:
        return True
    return isinstance(value, (tuple, list, dict)) and contains(value, lambda v: v is NEVER_REACHED)


def _resolve_in_place(container: Any, resolve: Callable[[Any], Any]) -> None:
    """Resolve proxies in a list/dict; values from steps the run never made are dropped."""
    if isinstance(container, list):
        container[:] = [r for r in (resolve(v) for v in container) if not _never_reached(r)]
    elif isinstance(container, dict):
        for k in list(container):
            value = resolve(container[k])
            if _never_reached(value):
                del container[k]
            else:
                container[k] = value


class _Missing:
    pass


_MISSING = _Missing()


def _unaccounted(saved: dict[int, Any], pushes: list, containers: list) -> bool:
    """Whether some saved object is neither pushed by name nor inside a container found so far."""
    found = {id(v) for _, v in pushes}
    for container in containers:
        found.update(id(v) for v in (container.values() if isinstance(container, dict) else container))
    return any(key not in found for key in saved)


def holds(value: Any, is_ours: Callable[[Any], bool]) -> bool:
    """Whether ``value`` is, or holds within two levels of containers, one of ours.

    Shallow on purpose: it runs over the caller's variables at each block's exit."""
    return contains(value, is_ours, 2)


# CPython's PyFrame_LocalsToFast(frame, clear), typed once: the frame is passed as an object
_locals_to_fast = ctypes.PYFUNCTYPE(None, ctypes.py_object, ctypes.c_int)(("PyFrame_LocalsToFast", ctypes.pythonapi))


def write_frame(frame: FrameType, updates: dict[str, Any], deletes: list[str], locals_: dict | None = None) -> None:
    """Bind ``updates`` and unbind ``deletes`` in ``frame`` (function frames included). ``locals_``:
    the frame's ``f_locals`` when just read (and nothing ran in the frame since)."""
    if locals_ is None:
        locals_ = frame.f_locals  # a function frame's cached dict (refreshed by this read); else the globals
    if frame.f_code.co_flags & 0x1 and _FAST_LOCALS:  # CO_OPTIMIZED: a function frame with fast locals
        locals_.update(updates)
        for name in deletes:
            locals_.pop(name, None)
        _locals_to_fast(frame, 1)
        return
    # module level (and notebooks): the globals dict; 3.13+: a write-through proxy
    for name, value in updates.items():
        locals_[name] = value
    for name in deletes:
        try:
            del locals_[name]
        except (KeyError, TypeError, ValueError):
            pass
