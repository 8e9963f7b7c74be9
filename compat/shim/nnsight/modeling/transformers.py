"""``nnsight.modeling.transformers.TransformersModel`` (and the deprecated ``LanguageModel``) on
mlxsight: a text-generation model loaded from the same checkpoint, presented as nnsight presents
its transformers model (transformers' own config object, torch device/dtype, ``task``)."""

from __future__ import annotations

import os
import warnings
from typing import Any

import mlxsight

from .._surface import missing

TASKS = ("text-generation",)
# Keywords mlxsight's LanguageModel takes itself (the rest of nnsight's are load options).
_OWN_KWARGS = {"tokenizer", "view", "dtype", "torch_dtype", "tokenizer_kwargs", "rename", "envoys"}


class TransformersModel(mlxsight.LanguageModel):
    """nnsight's ``TransformersModel(repo, task="text-generation", ...)`` on an mlx-lm model."""

    def __init__(self, model: Any, *args: Any, task: str | None = None, config: Any = None,
                 **kwargs: Any) -> None:
        if task not in (None, *TASKS):
            raise NotImplementedError(
                f"TransformersModel(task={task!r}): mlxsight serves text-generation models only; run "
                "this script on nnsight (`python -m compat run --backend nnsight SCRIPT`)")
        if config is not None and not isinstance(config, dict):
            raise NotImplementedError(
                "TransformersModel(config=...) builds the model from a caller's config on nnsight; mlxsight "
                "loads the checkpoint's own architecture")
        if args:
            raise TypeError(f"TransformersModel takes one positional argument, got {1 + len(args)}")
        # nnsight hands load keywords it does not know to transformers' from_pretrained, which keeps
        # the ones that are no loading option as config attributes: do the same with the config.
        from mlxsight.model import _IGNORED_LOAD_KWARGS

        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k not in _OWN_KWARGS | _IGNORED_LOAD_KWARGS}
        super().__init__(model, **kwargs)
        object.__setattr__(self, "task", task or "text-generation")
        object.__setattr__(self, "config", _hf_config(model, self.config))
        for key, value in overrides.items():
            setattr(self.config, key, value)
        if isinstance(model, (str, os.PathLike)) and getattr(self._module, "config", None) is None:
            # nnsight's wrapped module is transformers' model, which carries the config too; the
            # module was loaded here, so giving it the attribute changes nothing the caller owns.
            object.__setattr__(self._module, "config", self.config)

    @property
    def dispatched(self) -> bool:
        """Weights are loaded at construction: an mlxsight model is always dispatched."""
        return True

    def dispatch(self) -> None:
        """Nothing to load later (nnsight loads lazily unless ``dispatch=True``)."""

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


def _hf_config(model: Any, fallback: Any) -> Any:
    """transformers' own config object for the checkpoint (what nnsight scripts inspect)."""
    from pathlib import Path

    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model, (str, Path)):
        from mlxsight.loading import resolve

        return AutoConfig.from_pretrained(resolve(model))
    values = dict(vars(fallback)) if not isinstance(fallback, dict) else dict(fallback)
    kind = values.pop("model_type", None)
    if kind is not None:
        try:
            return AutoConfig.for_model(kind, **values)
        except (KeyError, ValueError, TypeError):
            pass
    return PretrainedConfig(**values)


__getattr__ = missing(__name__)
