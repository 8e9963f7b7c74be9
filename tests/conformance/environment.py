"""What real nnsight needs to run in this offline environment (applied on the nnsight side only).

* With transformers 5.23 a task's pipeline class is registered as a dotted string, so nnsight 0.8.1's
  ``TransformersModel._loaded_preprocessors`` finds no ``_load_tokenizer`` flag on it and a model
  that is not dispatched at construction gets no tokenizer ("Impossible to guess which tokenizer to
  use"). The fix resolves the string first, as transformers' own ``pipeline()`` does.
* ``TransformersModel(repo)`` without ``task=`` asks the hub for the repo's ``pipeline_tag``, which
  offline raises ("You cannot infer task automatically within `pipeline` when using offline mode").
  Offline, the tag of a repo this cache built is the one the hub gives it: every checkpoint in
  ``conformance.checkpoints`` is a causal language model, tagged ``text-generation``.
"""

from __future__ import annotations


def adapt_nnsight() -> None:
    _resolve_pipeline_impl()
    _offline_task()


def _resolve_pipeline_impl() -> None:
    from nnsight.modeling.transformers import TransformersModel
    from transformers import pipelines

    flags = {"tokenizer": "_load_tokenizer", "image_processor": "_load_image_processor",
             "feature_extractor": "_load_feature_extractor", "processor": "_load_processor"}
    original = TransformersModel._loaded_preprocessors

    def _loaded_preprocessors(self):
        try:
            _, targeted, _ = pipelines.check_task(self.task)
            impl = targeted["impl"]
            if isinstance(impl, str):
                impl = pipelines._resolve_impl(impl)
        except Exception:  # noqa: BLE001 - nnsight's own fallback
            return original(self)
        return {attr for attr, flag in flags.items() if getattr(impl, flag, False)}

    TransformersModel._loaded_preprocessors = _loaded_preprocessors


def _offline_task() -> None:
    from transformers import pipelines

    from .checkpoints import GPT2_IDS, LLAMAS, NEOX

    built = {*GPT2_IDS, *LLAMAS, *NEOX}
    original = pipelines.get_task

    def get_task(model, token=None, **kwargs):
        if isinstance(model, str) and model in built:
            return "text-generation"
        return original(model, token, **kwargs)

    pipelines.get_task = get_task
