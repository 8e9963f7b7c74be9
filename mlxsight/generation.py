"""Generation with interventions: a KV-cached step loop run as one traced computation.

Each step is one forward of the model, so a module's n-th call is step n: plain reads bind to
step 0 and ``for step in tracer.iter[...]`` binds them to other steps, as in nnsight. The loop
follows transformers' greedy semantics where scripts can see them: every row stops at EOS and is
padded afterwards, the loop ends when all rows have, and ``tracer.result`` holds the prompt (with
its padding) followed by the new tokens.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import mlx.core as mx

from .driver import StepFunction
from .graph import HookPoint
from .runner import Runner
from .structure import ArraySpec, Structure, record_structure
from .tracer import Tracer

RESULT = HookPoint("", "result", 0)
STREAMER = "generator.streamer"  # nnsight's streamer module: the prompt ids, then each step's new tokens


def streamed(call: int) -> HookPoint:
    """The streamer's ``call``-th put: 0 is the prompt, ``k`` the tokens of step ``k``."""
    return HookPoint(STREAMER, "output", call)


class GenerationTracer(Tracer):
    """``with model.generate(prompt, max_new_tokens=N) as tracer:``"""

    stop_early = False  # every step runs: later steps, streaming and the result need them
    single_call = False  # the root is called once per step

    def __init__(self, model: Any, inputs: tuple, kwargs: dict, *, max_new_tokens: int = 20,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                 streamer: Any = None, eos_token_id: Any = None, num_return_sequences: int = 1,
                 **unused: Any) -> None:
        unknown = set(unused) - {"pad_token_id", "use_cache", "num_beams", "output_scores",
                                 "return_dict_in_generate", "min_new_tokens"}
        if unknown:
            raise TypeError(f"unsupported generate() keyword(s): {sorted(unknown)}")
        if unused.get("num_beams", 1) != 1:
            raise NotImplementedError("beam search is not supported; use greedy or sampling")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            # transformers' own check and message (its GenerationConfig.validate): nothing is generated.
            raise ValueError(f"`max_new_tokens` must be greater than 0, but is {max_new_tokens}.")
        if isinstance(num_return_sequences, bool) or not isinstance(num_return_sequences, int) \
                or num_return_sequences < 1:
            raise ValueError(f"`num_return_sequences` must be a positive integer, but is {num_return_sequences}")
        if num_return_sequences > 1 and not do_sample:
            # transformers' own refusal: greedy decoding would return n identical rows
            raise ValueError("Greedy methods without beam search do not support `num_return_sequences` different "
                             f"than 1 (got {num_return_sequences}).")
        # transformers repeats each prompt row n times before the loop: the model (and every
        # module value, invoke rows and the result) sees n rows per prompt, consecutively
        self.rows_per_input = num_return_sequences
        super().__init__(model, inputs, kwargs)
        self.max_new_tokens = max_new_tokens
        self.streamer = streamer
        eos = eos_token_id if eos_token_id is not None else self.driver.eos_ids()
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self.sampler = _sampler(do_sample, temperature, top_p, top_k)

    @property
    def result(self) -> Any:
        """The generated token ids: ``[rows, prompt (padded) + new tokens]``."""
        return self.recorder.read("", "result")

    def step_count(self) -> int:
        return self.max_new_tokens

    def structure_for(self, batch: Any) -> Structure:
        return self.driver.generation_structure(batch, self.max_new_tokens, self.recorder.instrumented)

    def forward(self, runner: Runner, batch: Any) -> Callable[[], Any]:
        return lambda: self.decode(batch, runner)

    def decode(self, batch: Any, runner: Runner | None = None) -> mx.array:
        """Generate from ``batch``; the token ids, prompt first (fired as ``result`` when traced)."""
        driver = self.driver
        ids = batch.input_ids
        driver.check_length(ids.shape[1], self.max_new_tokens)
        step_fn, cache = driver.decoder(batch)
        self._stream(ids, 0, runner)
        new_tokens = []
        for token in generate_step(step_fn, cache, ids, self.sampler, self.max_new_tokens, self.eos_ids,
                                   driver.pad_id):
            new_tokens.append(token)
            self._stream(token, len(new_tokens), runner)
        if self.streamer is not None and hasattr(self.streamer, "end"):
            self.streamer.end()
        result = mx.concatenate([ids, mx.stack(new_tokens, axis=1)], axis=1)
        if runner is not None and RESULT in runner.schedule.at:
            return runner.fire_point(RESULT, result)
        return result

    def _stream(self, ids: mx.array, call: int, runner: Runner | None) -> None:
        """Hand ``ids`` to the caller's streamer and to ``model.generator.streamer``'s reads; the
        tokens are already in the sequence, so an edit of them changes nothing that follows."""
        if runner is not None and streamed(call) in runner.schedule.at:
            runner.fire_point(streamed(call), ids)
        if self.streamer is None:
            return
        if hasattr(self.streamer, "put"):
            self.streamer.put(ids)
        elif call > 0:
            self.streamer(ids)


def generate_step(step_fn: StepFunction, cache: Any, ids: mx.array, sampler: Callable[[mx.array], mx.array],
                  max_new_tokens: int, eos_ids: list[int], pad_id: int) -> Iterator[mx.array]:
    """Yield each step's new token per row (``[rows]``), greedy or sampled, as transformers does:
    a row that produced an end-of-sequence token is padded afterwards; the loop ends when every
    row has ended or after ``max_new_tokens`` steps (mlx-lm's ``generate_step`` shape)."""
    rows = ids.shape[0]
    finished = mx.zeros((rows,), dtype=mx.bool_)
    eos = mx.array(eos_ids)[None] if eos_ids else None
    logits = step_fn(ids, cache)
    for step in range(max_new_tokens):
        token = sampler(_last(logits))
        token = mx.where(finished, pad_id, token)
        if eos is not None:
            finished = finished | mx.any(token[:, None] == eos, axis=1)
        mx.eval(token, finished)
        yield token
        if bool(finished.all()) or step == max_new_tokens - 1:
            return
        logits = step_fn(token[:, None], cache)


def _last(logits: Any) -> mx.array:
    logits = getattr(logits, "logits", logits)
    return logits[:, -1, :]


def _sampler(do_sample: bool, temperature: float, top_p: float, top_k: int) -> Callable[[mx.array], mx.array]:
    if not do_sample or temperature == 0:
        return lambda logits: mx.argmax(logits, axis=-1)
    from mlx_lm.sample_utils import make_sampler

    sample = make_sampler(temp=temperature, top_p=top_p if top_p < 1.0 else 0.0, top_k=top_k)
    return lambda logits: sample(logits - mx.logsumexp(logits, axis=-1, keepdims=True))


def generation_structure(named: dict, batch: Any, decoder: Callable, steps: int,
                         instrumented: frozenset = frozenset()) -> Structure:
    """Hook points of ``steps`` generation steps, from a lazy prefill and one lazy decode step.

    Every decode step calls the same modules with the same shapes (one new position), so steps
    2..n repeat step 1's structure."""
    ids = batch.input_ids

    def two_steps():
        step_fn, cache = decoder(batch)
        step_fn(ids, cache)
        if steps > 1:
            step_fn(mx.zeros((ids.shape[0], 1), dtype=ids.dtype), cache)

    recorded = record_structure(named, two_steps, instrumented)
    structure = Structure()
    first = [p for p in sorted(recorded.order, key=recorded.order.__getitem__) if p.call == 0]
    later = [p for p in sorted(recorded.order, key=recorded.order.__getitem__) if p.call == 1]
    streams = [ArraySpec(tuple(ids.shape), ids.dtype)] + [ArraySpec((ids.shape[0],), ids.dtype)] * steps
    for step in range(steps):
        # the streamer gets the prompt before the first forward, a step's tokens before the next
        structure.order[streamed(step)] = len(structure.order)
        structure.skeletons[streamed(step)] = streams[step]
        for point in first if step == 0 else later:
            at = HookPoint(point.path, point.kind, step)
            structure.order[at] = len(structure.order)
            structure.skeletons[at] = recorded.skeletons[point]
    structure.order[streamed(steps)] = len(structure.order)
    structure.skeletons[streamed(steps)] = streams[steps]
    structure.order[RESULT] = len(structure.order)
    structure.skeletons[RESULT] = ArraySpec((ids.shape[0], ids.shape[1] + steps), ids.dtype)
    return structure
