"""tools.logit_lens: what each layer would predict, decoded with the final norm and unembedding.

    python examples/tools_logit_lens.py [CHECKPOINT]

Works the same with an nnsight LanguageModel of the same checkpoint in place of the mlxsight one.
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
import numpy as np
from mlxsight import assets, tools

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."

lens = tools.logit_lens(model, prompt, targets="next", include_embeddings=True)
print(f"{lens.probs.shape[0]} rows x {lens.probs.shape[1]} positions x {lens.probs.shape[2]} tokens")
at = lens.tokens.index("to") if "to" in lens.tokens else len(lens.tokens) - 2
print(f"mean NLL of the next token, and the top guesses at the token {lens.tokens[at]!r} (position {at}):")
for row, label in enumerate(lens.labels):
    name = "embeddings" if label == "embeddings" else f"layer {label}"
    guess = ", ".join(f"{t!r} {p:.2f}" for t, p in zip(lens.top_tokens[row][at][:3], lens.top_probs[row, at, :3]))
    print(f"after {name:<10}: NLL {np.nanmean(lens.target_nll[row]):5.2f}   {guess}")
