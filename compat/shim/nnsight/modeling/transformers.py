"""``nnsight.modeling.transformers.TransformersModel`` (and the deprecated ``LanguageModel``) on
mlxsight: a text-generation model loaded from the same checkpoint, presented as nnsight presents
its transformers model (transformers' own config object, torch device/dtype, ``task``)."""

from __future__ import annotations

import warnings
from typing import Any

import mlxsight
import torch  # after mlx (mlxsight imports it): the other order aborts

from .._surface import missing

TASKS = ("text-generation",)
# Keywords mlxsight's LanguageModel takes itself (the rest of nnsight's are load options).
_OWN_KWARGS = {"tokenizer", "view", "dtype", "torch_dtype", "tokenizer_kwargs", "rename", "envoys",
               "ignore_mismatched_sizes"}


class TransformersModel(mlxsight.LanguageModel):
    """nnsight's ``TransformersModel(repo, task="text-generation", ...)`` on an mlx-lm model.

    As in nnsight it is built lazily unless ``dispatch=True`` (the weights are read by
    ``dispatch()`` or the first trace; ``scan`` never reads them); ``config=`` (a transformers
    config object or dict) is the config the model is built from, as transformers'
    ``from_pretrained(config=...)`` builds it; ``model._module`` is a ``torch.nn.Module`` view of
    the MLX module (``torch_module.py``)."""

    def __init__(self, model: Any, *args: Any, task: str | None = None, config: Any = None,
                 **kwargs: Any) -> None:
        if task not in (None, *TASKS):
            raise NotImplementedError(
                f"TransformersModel(task={task!r}): mlxsight serves text-generation models only; run "
                "this script on nnsight (`python -m compat run --backend nnsight SCRIPT`)")
        if args:
            raise TypeError(f"TransformersModel takes one positional argument, got {1 + len(args)}")
        # nnsight hands load keywords it does not know to transformers' from_pretrained, which keeps
        # the ones that are no loading option as config attributes: do the same with the config.
        from mlxsight.model import _IGNORED_LOAD_KWARGS

        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k not in _OWN_KWARGS | _IGNORED_LOAD_KWARGS}
        own_config = _copied_config(config)
        if own_config is not None:
            config = own_config.to_dict() if hasattr(own_config, "to_dict") else dict(own_config)
        super().__init__(model, config=config, **kwargs)
        object.__setattr__(self, "task", task or "text-generation")
        if own_config is None:
            hf = _hf_config(model, self.config)
        else:  # transformers' object is kept as the caller built it (copied); a dict becomes one
            hf = own_config if hasattr(own_config, "to_dict") else _hf_config(None, own_config)
        object.__setattr__(self, "config", hf)
        for key, value in overrides.items():
            setattr(self.config, key, value)
        if kwargs.get("dtype", kwargs.get("torch_dtype")) is not None:
            import torch

            resolved = getattr(self._driver.config, "dtype", None)  # "auto" resolved: the weights' dtype
            if resolved is not None:
                self.config.dtype = getattr(torch, resolved)
        self._share_attn_config()

    # -- attention implementation (nnsight's TransformersModel API) -----------------------------
    def _share_attn_config(self) -> None:
        """The HF view (always built here) carries transformers' config, whose ``_attn_implementation``
        is what the view runs, as transformers resolves it at load."""
        implementation = super().attn_implementation
        if self.view == "hf":
            object.__setattr__(self._driver.module, "config", self.config)
        self.config._attn_implementation = implementation

    @property
    def attn_implementation(self) -> str | None:
        """The attention implementation the model runs with (``"sdpa"`` or ``"eager"``), read off
        the wrapped module's config as nnsight reads it."""
        return getattr(getattr(self._module, "config", None), "_attn_implementation", None)

    def _remoteable_get_env(self) -> dict:
        """What a remote request carries: the resolved attention implementation, always (the
        server's model is shared, and the last request may have moved it off the default)."""
        return {"attn_implementation": self.attn_implementation}

    def _remoteable_set_env(self, env: dict | None) -> None:
        """Apply a request's environment as nnsight's server does: no implementation named (an
        older client) or the current one changes nothing; another goes through the module's
        ``set_attn_implementation`` and is checked, since a switch that does not take would run
        without the attention weights the request asked for."""
        requested = (env or {}).get("attn_implementation")
        if requested is None or requested == self.attn_implementation:
            return
        self._module.set_attn_implementation(requested)
        if self.attn_implementation != requested:
            raise ValueError(
                f"{type(self._module).__name__} cannot switch its attention implementation to "
                f"{requested!r}: it does not follow transformers' attention interface, so it keeps "
                f"{self.attn_implementation!r}.")

    @property
    def device(self) -> Any:
        import torch

        return torch.device("cpu")

    @property
    def dtype(self) -> Any:
        import torch

        from mlx.utils import tree_flatten

        params = tree_flatten(self.mlx_model.parameters())
        name = str(params[0][1].dtype).removeprefix("mlx.core.") if params else "float32"
        return getattr(torch, name)

    def _batch_size(self, *inputs: Any, **kwargs: Any) -> int:
        """nnsight's batch rows of one invoke's input: a prompt or a chat conversation is one row, a
        list of prompts or of conversations one per entry, token ids one per row; none for no input."""
        data = {k: kwargs[k] for k in ("input_ids", "attention_mask") if kwargs.get(k) is not None}
        if not inputs and not data:
            return 0
        driver = self._driver
        return driver.rows(driver.encode(inputs, data))


class LanguageModel(TransformersModel):
    """nnsight's deprecated alias of ``TransformersModel(task="text-generation")``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from .. import NNsightDeprecationWarning

        warnings.warn("LanguageModel is deprecated; use TransformersModel(repo, task='text-generation') instead.",
                      NNsightDeprecationWarning, stacklevel=2)
        kwargs.setdefault("task", "text-generation")
        super().__init__(*args, **kwargs)


def _copied_config(config: Any) -> Any:
    """The caller's ``config=`` copied (the model is built from the copy, never on the caller's
    object), or None."""
    import copy

    return None if config is None else copy.deepcopy(config)


def _hf_config(model: Any, fallback: Any) -> Any:
    """transformers' own config object for the checkpoint (what nnsight scripts inspect)."""
    from pathlib import Path

    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model, (str, Path)):
        from mlxsight.loading import resolve

        return AutoConfig.from_pretrained(resolve(model))
    values = dict(vars(fallback)) if not isinstance(fallback, dict) else dict(fallback)
    values.pop("_attn_implementation", None)  # the model's own, set on the config afterwards
    kind = values.pop("model_type", None)
    if kind is not None:
        try:
            return AutoConfig.for_model(kind, **values)
        except (KeyError, ValueError, TypeError):
            pass
    return PretrainedConfig(**values)


class WrapperModule(torch.nn.Module):
    """nnsight's identity module: a value passed through it is served at its ``.output``. Attached to
    a traced model (inside a torch module such as an SAE) it runs as any attached torch module does
    (``mlxsight.auxiliary``): observed when its owner is called with ``hook=True``."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if len(args) == 1 else args


__getattr__ = missing(__name__)
