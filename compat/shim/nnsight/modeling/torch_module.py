"""``model._module`` under compat: a ``torch.nn.Module`` view of the wrapped MLX module.

nnsight's wrapped module is transformers' torch model; scripts and libraries (nnterp) read its
parameters, walk its submodules, register forward hooks on it and call ``.generate``. The view
presents the MLX module that way, reading everything from the MLX module when asked:

- ``parameters()`` / ``named_parameters()`` / ``state_dict()``: torch tensors with the MLX shapes and
  dtypes, on ``meta`` until the model is dispatched (nothing is read), real CPU copies after;
- ``named_modules()`` / ``children()`` / attribute access: views of the submodules (one per module,
  so identity holds); a list of modules is a ``torch.nn.ModuleList`` view;
- ``register_forward_hook`` / ``register_forward_pre_hook``: they fire when the MLX module really
  runs (a trace, a generation; never while mlxsight only builds a forward to learn shapes), on torch
  tensors; a value
  a hook returns replaces the input or output, as in torch. While a view has hooks its MLX module's
  class is swapped for a subclass that calls them (the name, ``isinstance`` and parameters are
  unchanged) and the model runs its whole forward in every trace; removing the last handle
  restores the class.
- the root view also has ``config`` (the model's transformers config object), ``generation_config``,
  ``device``, ``dtype``, ``generate(input_ids=..., attention_mask=..., **kw)`` and
  ``set_attn_implementation(name)``.

Views belong to the model that made them (``view_of``), so they go when it goes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator

import mlx.core as mx
import mlx.nn as nn
import torch
from mlx.utils import tree_flatten

from mlxsight.hooks import active
from mlxsight.torch_ops import array_to_torch, to_mlx
from mlxsight.tree import map_tree

_CLASSES: dict[tuple[type, str], type] = {}
_HOOKED: dict[type, type] = {}
_HOOKED_VIEWS: dict[int, "TorchModule"] = {}  # id(MLX module) -> its view, while the view has hooks


def view_of(model: Any, module: Any) -> "TorchModule":
    """The torch view of ``module`` (an MLX module, or a list of them) in ``model`` (the
    ``context.set_module_view`` function compat installs)."""
    views = model.__dict__.get("_torch_views")
    if views is None:
        views = {}
        object.__setattr__(model, "_torch_views", views)
    view = views.get(id(module))
    if view is None or view.mlx_module is not module:
        if isinstance(module, list):
            view = TorchModuleList(model, module)
        else:
            root = module is getattr(model, "mlx_module", None) and hasattr(model, "tokenizer")
            view = _class_for(RootModule if root else TorchModule, type(module).__name__)(model, module)
        views[id(module)] = view
    return view


def _class_for(base: type, name: str) -> type:
    """A view class named as the MLX module's class (``type(model._module).__name__`` reads like the
    module's), one per name, so that patching a method on ``type(view)`` patches that kind only."""
    cls = _CLASSES.get((base, name))
    if cls is None:
        cls = _CLASSES[(base, name)] = type(name, (base,), {"__module__": __name__, "__qualname__": name})
    return cls


def _torch_dtype(dtype: mx.Dtype) -> torch.dtype:
    name = str(dtype).removeprefix("mlx.core.")
    return torch.bool if name == "bool_" else getattr(torch, name)


def _torch(value: Any) -> Any:
    """MLX arrays inside ``value`` -> torch tensors (new containers; everything else as it is)."""

    return map_tree(value, lambda v: array_to_torch(v) if isinstance(v, mx.array) else v)


class TorchModule(torch.nn.Module):
    """A ``torch.nn.Module`` view of one MLX module of ``model`` (see the module docstring)."""

    def __init__(self, model: Any, module: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_owner", model)
        object.__setattr__(self, "mlx_module", module)  # the module viewed (NNsight(view) wraps it)
        self.training = False  # MLX models are traced in eval mode

    # -- submodules ----------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, torch.nn.Module]]:
        for name, value in self.mlx_module.items():
            if isinstance(value, nn.Module) or (isinstance(value, list) and value
                                                and all(isinstance(v, nn.Module) for v in value)):
                yield name, view_of(self._owner, value)

    def children(self) -> Iterator[torch.nn.Module]:
        for _, child in self.named_children():
            yield child

    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, torch.nn.Module]]:
        memo = set() if memo is None else memo
        if remove_duplicate and self in memo:
            return
        memo.add(self)
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator[torch.nn.Module]:
        for _, module in self.named_modules():
            yield module

    # -- parameters ----------------------------------------------------------------------------
    def _own_arrays(self) -> list[tuple[str, mx.array]]:
        own = []
        for name, value in self.mlx_module.items():
            if isinstance(value, mx.array):
                own.append((name, value))
            elif isinstance(value, (dict, list)) and not isinstance(value, nn.Module):
                own += [(f"{name}.{k}", v) for k, v in tree_flatten(value) if isinstance(v, mx.array)]
        for name in ("weight", "bias"):  # a tied parameter (the HF view's lm_head) is a property
            if name not in self.mlx_module and isinstance(getattr(type(self.mlx_module), name, None), property):
                value = getattr(self.mlx_module, name)
                if isinstance(value, mx.array):
                    own.append((name, value))
        return own

    def _tensor(self, array: mx.array) -> torch.nn.Parameter:
        if not self._owner.dispatched:  # shapes and dtypes only: nothing is read
            tensor = torch.empty(tuple(array.shape), dtype=_torch_dtype(array.dtype), device="meta")
        else:
            tensor = _torch(array)
        return torch.nn.Parameter(tensor, requires_grad=False)

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, torch.nn.Parameter]]:
        seen: set[int] = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for path, view in modules:
            for name, array in view._own_arrays():
                if remove_duplicate and id(array) in seen:
                    continue
                seen.add(id(array))
                yield (f"{path}.{name}" if path else name), view._tensor(array)

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        out = OrderedDict() if destination is None else destination
        for name, param in self.named_parameters(prefix=prefix.rstrip("."), remove_duplicate=False):
            out[name] = param if keep_vars else param.detach()
        return out

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self._owner.dispatched else torch.device("meta")

    @property
    def dtype(self) -> torch.dtype:
        for _, array in tree_flatten(self.mlx_module.parameters()):
            if mx.issubdtype(array.dtype, mx.floating):
                return _torch_dtype(array.dtype)
        return torch.float32

    # -- attributes ----------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_owner", "mlx_module"):
            raise AttributeError(name)
        module = self.__dict__["mlx_module"]
        value = module.get(name) if name in module else None
        if isinstance(value, (nn.Module, list)) and name in dict(self.named_children()):
            return view_of(self._owner, value)
        if isinstance(value, mx.array):
            return self._tensor(value)
        try:
            return super().__getattr__(name)  # torch's own state (hook dicts)
        except AttributeError:
            pass
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'") from None
        return self._tensor(value) if isinstance(value, mx.array) else value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {k for k in self.mlx_module if isinstance(k, str)})

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        head = type(self).__name__
        return f"{head}(\n  " + "\n  ".join(lines) + "\n)" if lines else f"{head}()"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the MLX module on torch tensors; torch tensors out (hooks fire inside the MLX call)."""
        return _torch(self.mlx_module(*to_mlx(args), **to_mlx(kwargs)))

    forward = __call__

    # -- hooks ---------------------------------------------------------------------------------
    def register_forward_hook(self, hook: Any, *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False) -> "HookHandle":
        handle = super().register_forward_hook(hook, prepend=prepend, with_kwargs=with_kwargs,
                                               always_call=always_call)
        return HookHandle(self, handle)

    def register_forward_pre_hook(self, hook: Any, *, prepend: bool = False,
                                  with_kwargs: bool = False) -> "HookHandle":
        handle = super().register_forward_pre_hook(hook, prepend=prepend, with_kwargs=with_kwargs)
        return HookHandle(self, handle)

    def _sync_hooks(self) -> None:
        """Swap the MLX module's class while this view has hooks; restore it when none is left."""
        module, hooked = self.mlx_module, bool(self._forward_hooks or self._forward_pre_hooks)
        cls = type(module)
        if hooked and id(module) not in _HOOKED_VIEWS:
            _HOOKED_VIEWS[id(module)] = self
            object.__setattr__(module, "__class__", _hooked_class(cls))
        elif not hooked and _HOOKED_VIEWS.get(id(module)) is self:
            del _HOOKED_VIEWS[id(module)]
            object.__setattr__(module, "__class__", cls.__dict__.get("_torch_hooks_original", cls))
        views = self._owner.__dict__.get("_torch_views", {}).values()
        object.__setattr__(self._owner, "whole_forward", any(_HOOKED_VIEWS.get(id(v.mlx_module)) is v
                                                              for v in views if not isinstance(v, TorchModuleList)))

    def _run_hooked(self, call: Any, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        targs, tkwargs = _torch(args), _torch(dict(kwargs))
        changed = False
        for key, hook in list(self._forward_pre_hooks.items()):
            if key in self._forward_pre_hooks_with_kwargs:
                result = hook(self, targs, tkwargs)
                if result is not None:
                    targs, tkwargs = result
                    changed = True
            else:
                result = hook(self, targs)
                if result is not None:
                    targs, changed = (result if isinstance(result, tuple) else (result,)), True
        if changed:
            args, kwargs = to_mlx(targs), to_mlx(tkwargs)
        out = call(module, *args, **kwargs)
        if not self._forward_hooks:
            return out
        tout, replaced = _torch(out), False
        for key, hook in list(self._forward_hooks.items()):
            if key in self._forward_hooks_with_kwargs:
                result = hook(self, targs, tkwargs, tout)
            else:
                result = hook(self, targs, tout)
            if result is not None:
                tout, replaced = result, True
        return to_mlx(tout) if replaced else out


def _hooked_class(cls: type) -> type:
    """``cls`` with a ``__call__`` that fires the torch hooks of the module's view."""
    sub = _HOOKED.get(cls)
    if sub is None:
        original = cls.__call__

        def __call__(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            view = _HOOKED_VIEWS.get(id(self))
            if view is None or getattr(active(), "shapes_only", False):  # learning shapes: no real run
                return original(self, *args, **kwargs)
            return view._run_hooked(original, self, args, kwargs)

        sub = _HOOKED[cls] = type(cls.__name__, (cls,), {
            "__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "_torch_hooks_original": cls})
    return sub


class HookHandle:
    """torch's ``RemovableHandle`` for a view's hook: ``remove()`` (or leaving ``with``) takes the
    hook off and, with the last one, restores the MLX module."""

    def __init__(self, view: TorchModule, handle: Any) -> None:
        self.view, self.handle, self.id = view, handle, handle.id
        view._sync_hooks()

    def remove(self) -> None:
        self.handle.remove()
        self.view._sync_hooks()

    def __enter__(self) -> "HookHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class TorchModuleList(torch.nn.ModuleList):
    """A list of MLX modules as a ``torch.nn.ModuleList`` of views."""

    def __init__(self, model: Any, modules: list) -> None:
        super().__init__()
        object.__setattr__(self, "_owner", model)
        object.__setattr__(self, "mlx_module", modules)
        self.training = False

    def _views(self) -> list[TorchModule]:
        return [view_of(self._owner, m) for m in self.mlx_module]

    def __len__(self) -> int:
        return len(self.mlx_module)

    def __iter__(self) -> Iterator[TorchModule]:
        return iter(self._views())

    def __getitem__(self, index: Any) -> Any:
        views = self._views()
        return views[index] if isinstance(index, int) else torch.nn.ModuleList(views[index])

    def named_children(self) -> Iterator[tuple[str, torch.nn.Module]]:
        for i, view in enumerate(self._views()):
            yield str(i), view

    def children(self) -> Iterator[torch.nn.Module]:
        return iter(self._views())

    named_modules = TorchModule.named_modules
    modules = TorchModule.modules
    named_parameters = TorchModule.named_parameters
    parameters = TorchModule.parameters
    state_dict = TorchModule.state_dict
    _own_arrays = lambda self: []  # noqa: E731 - a list holds no parameters of its own

    def __repr__(self) -> str:
        views = self._views()
        return f"ModuleList(\n  ({0}-{len(views) - 1}): {len(views)} x {type(views[0]).__name__}\n)" if views \
            else "ModuleList()"


class RootModule(TorchModule):
    """The view of a language model's whole module: transformers' model surface too."""

    @property
    def config(self) -> Any:
        """The model's transformers config object (the one ``model.config`` is)."""
        return self._owner.config

    @property
    def generation_config(self) -> Any:
        """The model's generation config (the one ``model.generation_config`` is)."""
        config = getattr(self._owner, "generation_config", None)
        if config is None:
            raise AttributeError("this model has no generation_config")
        return config

    def can_generate(self) -> bool:
        return True

    def generate(self, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> torch.Tensor:
        """transformers' ``generate``: prompt ids in, prompt + new ids out (torch), run by mlxsight."""
        if input_ids is None:
            raise ValueError("generate() needs input_ids")
        forward = {"input_ids": input_ids}
        if attention_mask is not None:
            forward["attention_mask"] = attention_mask
        kwargs.pop("streamer", None)
        ids = self._owner.generate(**forward, **kwargs)
        return ids if isinstance(ids, torch.Tensor) else _torch(ids)

    def set_attn_implementation(self, name: str) -> Any:
        """Forwarded to the MLX model's method of that name (what it supports is its business)."""
        method = getattr(self.mlx_module, "set_attn_implementation", None)
        if method is None:
            raise NotImplementedError(f"{type(self).__name__} has no set_attn_implementation on mlxsight")
        return method(name)
