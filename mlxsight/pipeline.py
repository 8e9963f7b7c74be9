"""``model.pipe(...)``: transformers' text-generation pipeline, run on mlxsight's generation.

nnsight's ``pipe`` runs the task's pipeline and returns what it postprocesses to; for text generation
that is one list of records per prompt, ``{"generated_text": prompt + completion}`` (a chat gets the
conversation back with the reply appended as an assistant message). The pipeline's own generation
defaults apply where neither the call nor the checkpoint's generation config sets a value
(256 new tokens, sampling at temperature 0.7, the tokenizer's pad id). The block is traced like
``generate``'s: every step's forward, with the beams or returned sequences as rows.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from .generation import RESULT, GenerationTracer
from .generation_config import resolve
from .structure import Opaque, Structure

# transformers' TextGenerationPipeline._default_generation_config, and which of it applies only when sampling
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
_SAMPLING = {"temperature", "top_k", "top_p"}
# the pipeline's own (non-generate) parameters mlxsight honours
_POSTPROCESS = {"return_full_text", "return_tensors", "clean_up_tokenization_spaces",
                "skip_special_tokens", "continue_final_message"}
_PREPROCESS = {"add_special_tokens"}


def _is_chat(value: Any) -> bool:
    """A conversation: a non-empty list of ``{"role": ..., "content": ...}`` messages."""
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, dict) and "role" in m
                                                                     for m in value)


class Prompt:
    """One pipeline input: text or a conversation, and how its record is written."""

    def __init__(self, value: Any, continue_final: bool | None) -> None:
        self.value = value
        self.chat = _is_chat(value)
        last_is_assistant = self.chat and value[-1].get("role") == "assistant"
        self.continue_final = last_is_assistant if continue_final is None else continue_final

    def encode(self, tokenizer: Any, add_special_tokens: bool | None) -> list[int]:
        if self.chat:  # as the pipeline's preprocess: a chat ending in the assistant's turn is continued
            if getattr(tokenizer, "chat_template", None) is None:
                raise ValueError("chat-message input needs a tokenizer with a chat template")
            ids = tokenizer.apply_chat_template(list(self.value), add_generation_prompt=not self.continue_final,
                                                continue_final_message=self.continue_final, tokenize=True,
                                                return_dict=False)
            return [int(i) for i in ids]
        extra = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return [int(i) for i in tokenizer(self.value, **extra)["input_ids"]]

    def record(self, text: str, full: bool) -> Any:
        if not full:
            return text
        if not self.chat:
            return self.value + text
        messages = list(self.value)
        if self.continue_final:
            last = messages[-1]
            return messages[:-1] + [{"role": last["role"], "content": last["content"] + text}]
        return messages + [{"role": "assistant", "content": text}]


class PipeTracer(GenerationTracer):
    """``with model.pipe(prompt, max_new_tokens=N) as tracer:``; ``tracer.result`` is the records."""

    def __init__(self, model: Any, inputs: tuple, kwargs: dict) -> None:
        kwargs = dict(kwargs)
        kwargs.pop("batch_size", None)  # the prompts run as one padded batch either way
        post = {k: kwargs.pop(k) for k in list(kwargs) if k in _POSTPROCESS}
        pre = {k: kwargs.pop(k) for k in list(kwargs) if k in _PREPROCESS}
        self._tokenizer = model.tokenizer
        self._continue_final = post.pop("continue_final_message", None)
        self._add_special_tokens = pre.get("add_special_tokens")
        self._full = post.get("return_full_text", True)
        self._tensors = bool(post.get("return_tensors"))
        self._decode = {"skip_special_tokens": post.get("skip_special_tokens", True)}
        if post.get("clean_up_tokenization_spaces") is not None:
            self._decode["clean_up_tokenization_spaces"] = post["clean_up_tokenization_spaces"]
        self._prompts: list[Prompt] = []
        self._scalar = False  # one prompt, not in a list: the records are not nested
        self._records_structure: tuple | None = None
        settings = pipeline_settings(model, kwargs)
        max_new_tokens = settings.pop("max_new_tokens")
        rows = self._rows(inputs, scalar_ok=True) if inputs else ()
        super().__init__(model, rows, {}, max_new_tokens=max_new_tokens, **settings)

    def _rows(self, inputs: tuple, scalar_ok: bool = False) -> tuple:
        """The token-id rows of one invoke's prompts (remembered, in batch order, for the records)."""
        if len(inputs) != 1:
            raise TypeError("pipe() takes one input per invoke: a prompt, a chat, or a list of either")
        value = inputs[0]
        single = isinstance(value, str) or _is_chat(value)
        prompts = [value] if single else list(value)
        if not prompts or not all(isinstance(p, str) or _is_chat(p) for p in prompts):
            raise TypeError("pipe() takes text prompts or chat conversations (a list of role/content messages)")
        self._scalar = scalar_ok and single
        added = [Prompt(p, self._continue_final) for p in prompts]
        self._prompts.extend(added)
        return ([p.encode(self._tokenizer, self._add_special_tokens) for p in added],)

    def invoke(self, *inputs: Any, **kwargs: Any) -> Any:
        if not inputs and not kwargs:
            return super().invoke()
        if kwargs:
            raise TypeError(f"pipe() invokes take prompts only, not keywords {sorted(kwargs)}")
        self._scalar = False
        return super().invoke(*self._rows(inputs))

    def structure_for(self, batch: Any) -> Structure:
        structure = super().structure_for(batch)
        if self._records_structure is None or self._records_structure[0] is not structure:
            # the records are Python objects: a read sees an opaque list until the run
            records = Structure(dict(structure.order), {**structure.skeletons, RESULT: Opaque("list")})
            self._records_structure = (structure, records)
        return self._records_structure[1]

    def returned(self, ids: mx.array, prompt_width: int) -> Any:
        """The pipeline's records: per prompt, its ``num_return_sequences`` rows decoded."""
        per_prompt = ids.shape[0] // max(len(self._prompts), 1)
        rows = ids.tolist()
        out = []
        for i, prompt in enumerate(self._prompts):
            records = []
            for row in rows[i * per_prompt:(i + 1) * per_prompt]:
                if self._tensors:
                    records.append({"generated_token_ids": row})
                    continue
                text = self._tokenizer.decode(row[prompt_width:], **self._decode)
                records.append({"generated_text": prompt.record(text, self._full)})
            out.append(records)
        return out[0] if self._scalar and len(out) == 1 else out

    def run(self) -> Any:
        """The pipeline's output, untraced (``model.pipe(...)`` outside a ``with``)."""
        if not self.batcher.datas:
            self.batcher.add(self._inputs, self._kwargs)
        return self.decode(self.batcher.batch())


def pipeline_settings(model: Any, kwargs: dict) -> dict:
    """generate()'s settings for a pipe call: the call's, the checkpoint's, then the pipeline's
    defaults for what neither sets (sampling ones only when sampling), as transformers merges them."""
    settings = resolve(kwargs, kwargs.pop("generation_config", None), model.generation_config)
    added = {k: v for k, v in PIPELINE_DEFAULTS.items()
             if k not in settings and not (k == "max_new_tokens" and "max_length" in settings)}
    pad = getattr(model.tokenizer, "pad_token_id", None)
    if pad is not None and "pad_token_id" not in settings:
        added["pad_token_id"] = pad
    if not {**settings, **added}.get("do_sample"):
        added = {k: v for k, v in added.items() if k not in _SAMPLING}
    settings.update(added)
    settings.setdefault("max_new_tokens", 20)
    return settings
