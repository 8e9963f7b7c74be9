"""transformers' sampling, for mlxsight's ``do_sample`` generation under compat.

nnsight generates with transformers' ``generate``: each step's last-position logits (float32) go
through the sampling warpers its generation config asks for (temperature, top-k, top-p, in that
order), then ``softmax`` and ``torch.multinomial(probs, num_samples=1)`` on torch's global random
stream. This sampler does the same with the same classes and tensor shapes, so a script that seeds
torch samples the same tokens on both backends (up to float-rounding differences in the logits).
"""

from __future__ import annotations

from typing import Any, Callable


def torch_sampler(temperature: float | None, top_k: int | None, top_p: float | None) -> Callable[[Any], Any]:
    """A function from logits ``[rows, vocab]`` (``mx.array``) to one token id per row (``mx.array``,
    uint32 as MLX's samplers return), drawn as transformers' ``_sample`` draws them."""
    import mlx.core as mx
    import numpy as np
    import torch
    from transformers.generation.logits_process import (
        LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    # transformers' _get_logits_processor, the warpers one sampled beam uses (min_tokens_to_keep=1)
    warpers = LogitsProcessorList()
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))

    def sample(logits: Any) -> Any:
        scores = torch.from_numpy(np.array(logits.astype(mx.float32)))
        scores = warpers(None, scores)  # these warpers do not read the ids
        probs = torch.nn.functional.softmax(scores, dim=-1)
        tokens = torch.multinomial(probs, num_samples=1).squeeze(1)
        return mx.array(tokens.numpy().astype(np.uint32))

    return sample
