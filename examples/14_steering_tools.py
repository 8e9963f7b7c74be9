"""Contrastive steering in three calls: a vector from happy/sad sentence pairs, a scale chosen by
a divergence budget, and generations at several scales (one batched generation).

    python examples/14_steering_tools.py [CHECKPOINT]
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
from mlxsight import assets, tools

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
happy = ["She was very happy and smiled.", "They laughed and played all day.", "He was so happy and excited.",
         "The sun was shining and everyone was happy."]
sad = ["She was very sad and cried.", "They cried and were sad all day.", "He was so sad and scared.",
       "The rain was falling and everyone was sad."]
layer = 3 if len(sys.argv) < 2 else 2 * model.config.num_hidden_layers // 3

vector = tools.steering_vector(model, happy, sad, layer=layer)
print(vector, f"norm {vector.norm:.2f}")

search = tools.scale_search(model, "Once upon a time, there was a little girl named Lily. She felt", vector,
                            tools.kl_div(), target=0.1, high=8.0)
print(f"scale for a next-token KL of 0.1 nats: {search.scale:.2f} ({len(search.evaluations)} forwards)")

result = tools.generate_steered(model, "Once upon a time", vector, scales=[0.0, round(search.scale, 2), 8.0],
                                max_new_tokens=40)
for scale, text in zip(result.scales, result.texts):
    print(f"scale {scale}: {text!r}")
