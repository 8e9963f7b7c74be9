"""Envoys: the model's module tree as seen from a trace.

``model.model.layers[3].output`` walks envoys (one per module, cached, so identity holds) and ends
at a proxy served by the open tracer. Outside a trace an envoy is a plain view of the module:
attributes, parameters and methods fall through to it. A list of modules (MLX's ModuleList) has an
envoy too, as in nnsight: indexing, slicing, iteration and ``len`` reach its entries.

``rename=`` aliases and ``envoys=`` keys are matched by the rules at the end of this module
(``path_ends_with``, ``spellings``), which are nnsight's.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Iterator

import mlx.nn as nn

from . import context
from .auxiliary import foreign_kind
from .context import torch_semantics
from .errors import TraceError, where_now
from .proxy import Proxy, find_recorder
from .tree import contains

if TYPE_CHECKING:
    from .model import NNsight
    from .tracer import Tracer


class _Served:
    """``.output`` / ``.input`` / ``.inputs`` of anything with ``_read(kind)`` and ``_write(kind, v)``."""

    def __init__(self, kind: str, doc: str) -> None:
        self.kind, self.__doc__ = kind, doc

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else obj._read(self.kind)

    def __set__(self, obj: Any, value: Any) -> None:
        obj._write(self.kind, value)


OUTPUT = "The module's output in this trace (the object the forward continues with)."
INPUTS = "``(args, kwargs)`` the module is called with."
INPUT = "The first argument the module is called with (positional, else the first keyword)."


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _is_module_list(value: Any) -> bool:
    """A list of modules (an MLX ``ModuleList``): a plain list or tuple whose entries are modules."""
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, nn.Module) for v in value)


def _has_proxy(value: Any) -> bool:
    return contains(value, lambda v: isinstance(v, Proxy))


class Envoy:
    """A module of the traced model (or a list of modules), addressed by its path."""

    def __init__(self, module: nn.Module | list, path: str, root: "NNsight | None") -> None:
        object.__setattr__(self, "_mlx", module)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_root", root if root is not None else self)
        object.__setattr__(self, "_envoys", {})

    # -- navigation --------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """nnsight-style path: ``model.model.layers.0``."""
        return _join("model", self._path)

    @property
    def parent(self) -> "Envoy | None":
        """The envoy this one hangs under (``None`` for the root), as nnsight's ``.parent``."""
        if not self._path:
            return None
        head, _, _ = self._path.rpartition(".")
        return self._root.get(head) if head else self._root

    @property
    def mlx_module(self) -> nn.Module | list:
        """The MLX module (or list of modules) this envoy stands for: what mlxsight reads and calls."""
        return self._mlx

    @property
    def _module(self) -> Any:
        """The wrapped module as nnsight scripts see it: the MLX module, or the view the root model
        presents of it (``NNsight.module_view``: under compat, a ``torch.nn.Module``); a foreign
        module attached to the model (``auxiliary``) is itself."""
        return self._mlx if self._foreign else self._root.module_view(self._mlx)

    @property
    def _foreign(self) -> bool:
        """Whether this envoy stands for a foreign module attached to the model (a torch SAE)."""
        return foreign_kind(self._mlx) is not None

    @property
    def root(self) -> "NNsight":
        """The model this envoy belongs to, as nnsight's ``.root``."""
        return self._root

    @property
    def _children(self) -> list["Envoy"]:
        """The envoys directly under this one (nnsight's ``Envoy._children``)."""
        return [self._child(name) for name in self._child_names()]

    @property
    def _is_list(self) -> bool:
        return isinstance(self._mlx, (list, tuple))

    def _child(self, name: str) -> "Envoy | None":
        if name in self._envoys:
            return self._envoys[name]
        module = self._mlx
        if self._is_list:  # a list's entries are named by their index, as torch's ModuleList names them
            value = module[int(name)] if name.isdigit() and int(name) < len(module) else None
        else:
            value = _children(module).get(name)
        if value is None:
            return None
        path = _join(self._path, name)
        child = envoy_class(self._root, value, path)(value, path, self._root)
        self._envoys[name] = child
        return child

    def _child_names(self) -> list[str]:
        module = self._mlx
        if self._is_list:
            return [str(i) for i in range(len(module))]
        return list(_children(module))

    @property
    def _aliases(self) -> dict[str, str]:
        """``rename=`` aliases bound on this envoy: alias -> the path it names from here (nnsight's
        ``_aliases``: ``{"self_attn": "attn"}`` on a block, ``{"o_proj": "c_proj"}`` on its attention)."""
        self._alias_envoys()
        return dict(self.__dict__.get("_alias_paths", {}))

    def _alias_envoys(self) -> dict[str, "Envoy"]:
        """``rename=`` aliases bound on this envoy: alias -> the very same envoy as the original."""
        root = self._root
        if not getattr(root, "_rename", None):
            return {}
        if not root.__dict__.get("_aliases_bound"):
            # An alias can be bound from an ancestor (dotted aliases), so bind them all at once.
            object.__setattr__(root, "_aliases_bound", True)
            envoys = root.modules()
            # a ModuleList is an envoy in nnsight too: keys like "1" bind on it
            envoys += [c for e in envoys for c in map(e._child, e._child_names()) if c._is_list]
            for envoy in envoys:
                for key, aliases in root._rename.items():
                    for alias in [aliases] if isinstance(aliases, str) else aliases:
                        _bind_alias(envoy, key, alias)  # a list gives one path several aliases
        return self.__dict__.get("_alias_table", {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        child = self._child(name)
        if child is not None:
            return child
        aliases = self._alias_envoys()
        if name in aliases:
            return aliases[name]
        if self._is_list and name.lstrip("-").isdigit():  # ``getattr(layers, "-1")``: an entry by index
            try:
                return self[int(name)]
            except IndexError as e:
                raise AttributeError(str(e)) from None
        try:
            attr = getattr(self._mlx, name)
        except AttributeError:
            options = self._child_names() + [k for k in dir(self._mlx) if not k.startswith("_")]
            close = difflib.get_close_matches(name, options, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise AttributeError(f"{self.path} ({type(self._mlx).__name__}) has no module or "
                                 f"attribute {name!r}{hint}") from None
        if callable(attr) and not isinstance(attr, (nn.Module, type)) and getattr(attr, "__self__", None) is self._mlx:
            return _BoundModuleMethod(self, name, attr)
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("output", "input", "inputs") or isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)  # the _Served descriptors, a custom envoy's properties
            return
        if isinstance(value, nn.Module) or (foreign_kind(value) is not None and not name.startswith("_")):
            # attached: a module of the tree (as nnsight registers it), with an envoy of its own
            setattr(self._mlx, name, value)
            self._envoys.pop(name, None)
            self._root._forget_modules()
            return
        setattr(self._mlx, name, value)

    def get(self, path: str) -> Any:
        """Resolve a dotted path relative to this envoy (``"model.layers.0.mlp.output"``)."""
        target: Any = self
        for part in path.split("."):
            target = target[int(part)] if target._is_list and part.lstrip("-").isdigit() else getattr(target, part)
        return target

    def modules(self) -> list["Envoy"]:
        """Every module's envoy under this one, this one last (lists of modules are not modules)."""
        out: list[Envoy] = []
        for name in self._child_names():
            child = self._child(name)
            for envoy in (child if child._is_list else [child]):
                out.extend(envoy.modules())
        if not self._is_list:
            out.append(self)
        return out

    def named_modules(self) -> list[tuple[str, "Envoy"]]:
        return [(e.path, e) for e in self.modules()]

    def __iter__(self) -> Iterator["Envoy"]:
        """A list's entries; a module's child modules (a list child's entries in its place)."""
        for name in self._child_names():
            child = self._child(name)
            yield from (child if child._is_list and not self._is_list else [child])

    def __getitem__(self, index: Any) -> Any:
        """An entry by index (``layers[-1]``), a list of entries by slice, a child by name."""
        if isinstance(index, slice):
            return [self._child(n) for n in self._child_names()][index]
        if isinstance(index, str) and not index.lstrip("-").isdigit():
            return getattr(self, index)
        if not self._is_list:
            return getattr(self, str(index))
        index, n = int(index), len(self._mlx)
        if not -n <= index < n:
            raise IndexError(f"{self.path} has {n} modules; index {index} is out of range")
        return self._child(str(index % n))

    def __len__(self) -> int:
        """A list's number of entries (a module has no length, as in torch)."""
        if not self._is_list:
            raise TypeError(f"object of type '{type(self._mlx).__name__}' has no len()")
        return len(self._mlx)

    def __bool__(self) -> bool:
        return bool(self._mlx) if self._is_list else True

    def __repr__(self) -> str:
        return "\n".join(self._repr_lines())

    def _repr_html_(self) -> str:
        from .notebook import envoy_html

        return envoy_html(self)

    def _repr_lines(self) -> list[str]:
        """The module tree as torch prints it, runs of identical layers collapsed as nnsight does."""
        if self._is_list:
            return _list_repr(self)
        head = f"{type(self._mlx).__name__}("
        extra = self._mlx._extra_repr() if hasattr(self._mlx, "_extra_repr") else ""
        aliases = {id(v): k for k, v in self._alias_envoys().items()}
        body: list[str] = []
        for name in self._child_names():
            child = self._child(name)
            label = f"{aliases[id(child)]}/{name}" if id(child) in aliases else name
            body += _indent(f"({label}): ", child._repr_lines())
        if not body:
            return [f"{head}{extra})"]
        return [head + (extra if extra else "")] + body + [")"]

    # -- values inside a trace ---------------------------------------------------------------
    def _tracer(self) -> "Tracer":
        tracer = self._root._open_tracer()
        if tracer is None:
            return None
        return tracer

    def _read(self, kind: str) -> Any:
        tracer = self._tracer()
        if tracer is None:
            raise ValueError(f"Cannot access `{self.path}.{kind}` outside of interleaving")
        return tracer.recorder.read(self._path, kind)

    def _write(self, kind: str, value: Any) -> None:
        tracer = self._tracer()
        if tracer is None:
            raise ValueError(f"Cannot access `{self.path}.{kind}` outside of interleaving")
        tracer.recorder.write(self._path, kind, value)

    output = _Served("output", OUTPUT)
    inputs = _Served("inputs", INPUTS)
    input = _Served("input", INPUT)

    def next(self, steps: int = 1) -> "Envoy":
        """This module at a later call (generation step): ``layer.next().output`` reads the next one."""
        return _StepEnvoy(self, steps)

    @property
    def source(self) -> "SourceEnvoy":
        """The operations of this module's forward (``.source.self_gate_proj_0.output``)."""
        return SourceEnvoy(self)

    def skip(self, replacement: Any) -> None:
        """Do not run this module in the trace: its output is ``replacement``."""
        tracer = self._tracer()
        if tracer is None:
            raise ValueError(f"Cannot skip `{self.path}` outside of interleaving")
        tracer.recorder.skip(self._path, replacement)

    def __call__(self, *args: Any, hook: bool = False, **kwargs: Any) -> Any:
        """Call the module; on proxies inside a trace this is recorded and consumes no hook point.
        ``hook=True`` (nnsight's) observes the call: the ``.input``/``.output`` of this module and
        of every module under it are served for it (a module attached to the model: an SAE)."""
        tracer = self._tracer()
        if _has_proxy((args, kwargs)):
            if tracer is None:
                _refuse_foreign_call(self.path, (args, kwargs))
            return tracer.recorder.call_module(self._path, None, args, kwargs, hook=hook,
                                               foreign=self._mlx if self._foreign else None)
        if self._foreign:
            return self._mlx(*args, **kwargs)  # a torch module outside a trace: torch's own call
        if torch_semantics():
            # an nnsight script calls a module on torch tensors outside a trace: same in, same out
            from .torch_ops import to_mlx

            out = self._mlx(*to_mlx(args), **to_mlx(kwargs))
            transform = context.settings.value_transform
            return transform(out) if transform is not None else out
        return self._mlx(*args, **kwargs)


def _children(module: Any) -> dict[str, Any]:
    """A module's child modules (and lists of modules) by name: an MLX module's entries and the
    foreign modules attached to it as attributes; a foreign module's children as its kind says."""
    kind = foreign_kind(module)
    if kind is not None:
        return kind.children(module)
    if not isinstance(module, dict):
        return {}
    children = {k: v for k, v in module.items() if isinstance(v, nn.Module) or _is_module_list(v)}
    children.update((k, v) for k, v in vars(module).items() if not k.startswith("_") and foreign_kind(v) is not None)
    return children


def _refuse_foreign_call(name: str, value: Any) -> None:
    """A module called on proxies while its own model has no open trace: the proxies belong to
    another model's trace (or to a finished one), and MLX would fail on them with a raw error."""
    find_recorder(value).check_open()  # a finished trace: ExpiredProxyError
    raise TraceError(f"{name} is called on a value of a trace of another model: a module runs on values of its own "
                     f"model's trace only. Save the value and call {name} on the saved array after the trace",
                     where_now())
def envoy_class(root: Any, module: nn.Module | list, path: str) -> type:
    """The Envoy class for ``module`` at ``path``, by nnsight's rule: the first ``envoys=`` entry of
    the root whose class key names the module's class (by name too, so transformers' class names
    select the HF-view modules); else the first string key that ends a spelling of the path (the
    native spelling first, then those the ``rename=`` aliases give; ``*`` matches one component);
    else ``Envoy``."""
    entries = getattr(root, "_envoy_classes", ())
    if not entries:
        return Envoy
    for key, cls in entries:
        if isinstance(key, type) and module_is(module, key):
            return cls
    for spelled in spellings(getattr(root, "_rename", None), _join("model", path), module):
        for key, cls in entries:
            if isinstance(key, str) and path_ends_with(spelled, key):
                return cls
    return Envoy


def spellings(rename: dict | None, path: str, module: Any = None) -> list[str]:
    """Every spelling of the dotted ``path`` under the ``rename`` aliases, the native one first.

    nnsight's rule: a path is spelled as any spelling of its parent plus its last component, or,
    where a ``rename`` key names it from an ancestor, as any spelling of the envoy the alias binds on
    plus the alias's last component (a dotted alias binds further down, on the envoy its prefix
    names). So spellings compose through ancestors: under ``{"transformer.h": "layers", "attn":
    "self_attn"}``, ``model.transformer.h.0.attn`` is also ``model.layers.0.self_attn``. A class key
    names ``module`` itself by type, so its alias spells that module and not what is under it."""
    parts = path.split(".")
    if len(parts) == 1:
        return [path]
    found = [f"{head}.{parts[-1]}" for head in spellings(rename, ".".join(parts[:-1]))]
    for key, aliases in (rename or {}).items():
        if isinstance(key, type):
            if module is None or not module_is(module, key):
                continue
            length = 1
        else:
            length = len(key.strip(".").split("."))  # a key is relative to an ancestor: shorter than the path
            if length >= len(parts) or not path_ends_with(path, key):
                continue
        for alias in [aliases] if isinstance(aliases, str) else aliases:
            *prefix, name = alias.split(".")
            if len(prefix) < length:
                host = ".".join(parts[:len(parts) - length + len(prefix)])
                found += [f"{head}.{name}" for head in spellings(rename, host)]
    return found


def module_is(module: nn.Module, cls: type) -> bool:
    """Whether ``module`` is a ``cls`` as a script means it: an instance, or, for a transformers class
    (``GPT2MLP``), the HF-view module standing for it (``MLP``: the family prefix dropped)."""
    if isinstance(module, (list, tuple)):  # MLX holds a ModuleList as a plain list of modules
        return cls.__name__ == "ModuleList"
    if isinstance(module, cls):
        return True
    name, own = cls.__name__, type(module).__name__
    return name == own or (cls.__module__.startswith("transformers.models.") and name.endswith(own))


def path_ends_with(path: str, key: str) -> bool:
    """Whether dotted ``path`` ends with dotted ``key`` component-wise; a ``*`` component matches any
    one component (``"layers.*"`` ends ``model.layers.0``, not ``model.layers``): nnsight's rule."""
    parts, wanted = path.split("."), key.strip(".").split(".")
    if len(wanted) > len(parts):
        return False
    return all(w == "*" or w == p for w, p in zip(wanted, parts[len(parts) - len(wanted):]))


def _indent(prefix: str, lines: list[str]) -> list[str]:
    return ["  " + prefix + lines[0]] + ["  " + line for line in lines[1:]]


def _list_repr(envoy: Envoy) -> list[str]:
    """``ModuleList(`` with runs of identically printed entries as ``(0-3): 4 x Block(``."""
    lines = ["ModuleList("]
    items = [e._repr_lines() for e in envoy]
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[i]:
            j += 1
        lines += _indent(f"({i}-{j}): {j - i + 1} x " if j > i else f"({i}): ", items[i])
        i = j + 1
    return lines + [")"]


def _resolve(envoy: Envoy, parts: list[str]) -> list[tuple[str, Envoy]]:
    """``(path, envoy)`` for each envoy reached from ``envoy`` by path components, ``path`` spelled
    as walked from it (``*`` matches any one child, an alias bound earlier its envoy)."""
    found = [("", envoy)]
    for part in parts:
        nxt = []
        for path, e in found:
            if part == "*":
                nxt.extend((_join(path, n), e._child(n)) for n in e._child_names())
            else:
                # a component may be spelled by an alias bound earlier: spellings compose
                child = e._child(part) or e.__dict__.get("_alias_table", {}).get(part)
                if child is not None:
                    nxt.append((_join(path, part), child))
        found = nxt
    return found


def _bind_alias(envoy: Envoy, key: Any, alias: str) -> None:
    """Bind ``alias`` for ``key`` where it resolves from ``envoy`` (nnsight's ``rename=`` rules)."""
    if isinstance(key, type):
        if envoy._is_list:
            return  # a class key names a module's child by type; a list's entries are bound by index
        children = [(n, envoy._child(n)) for n in envoy._child_names()]
        targets = [(n, c) for n, c in children if not c._is_list and module_is(c._mlx, key)]
    else:
        targets = _resolve(envoy, key.lstrip(".").split("."))  # a leading dot changes nothing
    if not targets:
        return
    relative, target = targets[0]
    *prefix, name = alias.split(".")
    if prefix:
        # A dotted alias binds on the envoy its prefix names, which must be an ancestor of the key's
        # module as the key spells it or natively (nnsight's rule): anything else has no host.
        spelled = ".".join(prefix) + "."
        native = target._path[len(envoy._path) + 1:] if envoy._path else target._path
        if "*" in spelled or not (native.startswith(spelled) or relative.startswith(spelled)):
            raise ValueError(
                f"`rename` alias {alias!r} for {key!r} names no ancestor of it on `{envoy.path}`: a "
                f"dotted alias binds on the envoy its prefix names, so the prefix spells the start "
                f"of the key's path, without `*`")
        relative = (relative if relative.startswith(spelled) else native)[len(spelled):]
    holders = [h for _, h in _resolve(envoy, prefix)] if prefix else [envoy]
    for holder in holders:
        if holder._is_list and holder is not envoy:
            continue
        taken = name.lstrip("-").isdigit() if holder._is_list else holder._child(name) is not None
        if taken or name in ("output", "input", "inputs", "source", "path"):
            raise ValueError(f"rename alias {alias!r} would shadow {holder.path}.{name}")
        if "_alias_table" not in holder.__dict__:
            object.__setattr__(holder, "_alias_table", {})
            object.__setattr__(holder, "_alias_paths", {})
        holder._alias_table[name] = target
        holder._alias_paths[name] = relative


class _BoundModuleMethod:
    """A module method reached through an envoy; recorded when called on proxies."""

    def __init__(self, envoy: Envoy, name: str, fn: Any) -> None:
        self.envoy, self.name, self.fn = envoy, name, fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracer = self.envoy._tracer()
        if _has_proxy((args, kwargs)):
            if tracer is None:
                _refuse_foreign_call(f"{self.envoy.path}.{self.name}", (args, kwargs))
            envoy = self.envoy
            return tracer.recorder.call_module(envoy._path, self.name, args, kwargs,
                                               foreign=envoy._mlx if envoy._foreign else None)
        return self.fn(*args, **kwargs)


class SourceEnvoy:
    """A module's forward (or, drilled into, a function an operation calls) as operations; ``print()``
    shows the source with operation names."""

    def __init__(self, envoy: Envoy, instrumented: Any = None, prefix: str | None = None) -> None:
        from .hooks import original_class
        from .source import instrument

        self._envoy = envoy
        self._prefix = envoy._path if prefix is None else prefix  # the hook-point path its operations extend
        self._instrumented = instrumented if instrumented is not None else instrument(original_class(envoy._mlx))

    @property
    def operations(self) -> list[str]:
        return list(self._instrumented.ops)

    def __getattr__(self, name: str) -> "OperationEnvoy":
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._instrumented.ops:
            from .source import SourceNotAvailable

            raise SourceNotAvailable(f"'{_shown(self._envoy, self._prefix)}.source' has no operation {name!r}; "
                                     f"available: {', '.join(self._instrumented.ops)}")
        return OperationEnvoy(self._envoy, name, self._instrumented.lines.get(name), self._prefix)

    def __dir__(self) -> list[str]:
        return self.operations

    def __repr__(self) -> str:
        from .source import listing

        return listing(self._instrumented)


def _shown(envoy: Envoy, path: str) -> str:
    """A hook-point path as the user writes it (``model.transformer.h.0.attn.source.op``)."""
    return envoy.path + path[len(envoy._path):]


class OperationEnvoy:
    """One operation inside a module's forward: ``.output``, ``.input``, ``.inputs``, ``.skip``, and
    ``.source`` (inside a trace) for the operations of the function it calls."""

    def __init__(self, envoy: Envoy, name: str, line: int | None, prefix: str | None = None) -> None:
        from .source import SEP

        self._envoy, self._name, self._line = envoy, name, line
        self._path = f"{envoy._path if prefix is None else prefix}{SEP}{name}"

    @property
    def path(self) -> str:
        return _shown(self._envoy, self._path)

    def _tracer(self) -> "Tracer":
        from .source import drilled

        tracer = self._envoy._tracer()
        if tracer is None:
            raise ValueError(f"Cannot access `{self.path}` outside of interleaving")
        for path in drilled(self._path):
            tracer.recorder.use_source(path)
        return tracer

    def _read(self, kind: str) -> Any:
        return self._tracer().recorder.read(self._path, kind)

    def _write(self, kind: str, value: Any) -> None:
        self._tracer().recorder.write(self._path, kind, value)

    output = _Served("output", OUTPUT)
    inputs = _Served("inputs", INPUTS)
    input = _Served("input", INPUT)

    @property
    def source(self) -> SourceEnvoy:
        """The operations of the function this operation calls (nnsight's recursive ``.source``).
        The function is the one the forward calls here, so this exists only inside a trace."""
        from .source import SourceNotAvailable, instrument_callee

        tracer = self._envoy._tracer()
        if tracer is None:
            raise SourceNotAvailable("recursive `.source` is only available inside a trace")
        instrumented = instrument_callee(tracer.recorder.drill(self._path), self._name)
        return SourceEnvoy(self._envoy, instrumented, self._path)

    def skip(self, replacement: Any) -> None:
        self._tracer().recorder.skip(self._path, replacement)

    def __repr__(self) -> str:
        return f"<operation {self.path} (line {self._line})>"


class _StepEnvoy:
    """An envoy whose reads bind ``offset`` calls after the tracer's current step."""

    def __init__(self, envoy: Envoy, offset: int) -> None:
        self._envoy, self._offset = envoy, offset

    def next(self, steps: int = 1) -> "_StepEnvoy":
        return _StepEnvoy(self._envoy, self._offset + steps)

    def _at_step(self, access: Any) -> Any:
        tracer = self._envoy._tracer()
        if tracer is None:
            raise ValueError(f"Cannot access `{self._envoy.path}` outside of interleaving")
        recorder = tracer.recorder
        previous = recorder.step
        recorder.step = previous + self._offset
        try:
            return access()
        finally:
            recorder.step = previous

    def _read(self, kind: str) -> Any:
        return self._at_step(lambda: self._envoy._read(kind))

    def _write(self, kind: str, value: Any) -> None:
        self._at_step(lambda: self._envoy._write(kind, value))

    output = _Served("output", OUTPUT)
    inputs = _Served("inputs", INPUTS)
    input = _Served("input", INPUT)
