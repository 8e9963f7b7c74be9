"""Generation with interventions: a KV-cached step loop run as one traced computation.

Each step is one forward of the model, so a module's n-th call is step n: plain reads bind to
step 0 and ``for step in tracer.iter[...]`` binds them to other steps, as in nnsight. The loops
follow transformers 5 where scripts can see it. Greedy and sampled (``generate_step``): every row
stops at EOS and is padded afterwards, the loop ends when all rows have. Beam search
(``beam_search``): the beams are the batch's rows, the KV cache follows the surviving beams, and
the best sequences come back. ``tracer.result`` holds the prompt (with its padding) followed by the
new tokens.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol

import mlx.core as mx
import numpy as np

from . import context
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
    runs_parts = False  # the decoding loop (its stop at EOS, the records) is the whole batch's
    steps_known = False  # the run ends at an end-of-sequence token: it may make fewer steps than recorded
    _made: int | None = None  # the steps (forwards) the last run made; None: unknown (stopped)

    def __init__(self, model: Any, inputs: tuple, kwargs: dict, *, max_new_tokens: int = 20,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 50,
                 streamer: Any = None, eos_token_id: Any = None, num_return_sequences: int = 1,
                 num_beams: int = 1, length_penalty: float = 1.0, early_stopping: bool | str = False,
                 min_new_tokens: int | None = None, pad_token_id: int | None = None, **unused: Any) -> None:
        unknown = set(unused) - {"use_cache", "output_scores", "return_dict_in_generate"}
        if unknown:
            raise TypeError(f"unsupported generate() keyword(s): {sorted(unknown)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            # transformers' own check and message (its GenerationConfig.validate): nothing is generated.
            raise ValueError(f"`max_new_tokens` must be greater than 0, but is {max_new_tokens}.")
        if isinstance(num_return_sequences, bool) or not isinstance(num_return_sequences, int) \
                or num_return_sequences < 1:
            raise ValueError(f"`num_return_sequences` must be a positive integer, but is {num_return_sequences}")
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"`num_beams` must be a positive integer, but is {num_beams}")
        if num_beams == 1 and num_return_sequences > 1 and not do_sample:
            # transformers' own refusal: greedy decoding would return n identical rows
            raise ValueError("Greedy methods without beam search do not support `num_return_sequences` different "
                             f"than 1 (got {num_return_sequences}).")
        if num_beams > 1:
            if num_return_sequences > num_beams:
                raise ValueError(f"`num_return_sequences` ({num_return_sequences}) has to be smaller or equal to "
                                 f"`num_beams` ({num_beams}).")
            if streamer is not None:
                raise ValueError("`streamer` cannot be used with beam search (yet!). Make sure that `num_beams` is "
                                 "set to 1.")
            if do_sample:
                raise NotImplementedError("beam sampling (num_beams > 1 with do_sample=True) is not supported; "
                                          "use beam search (do_sample=False) or sampling with one beam")
        # transformers repeats each prompt row (num_beams or num_return_sequences times) before the
        # loop: the model (and every module value and invoke's rows) sees them, consecutively
        self.rows_per_input = num_beams if num_beams > 1 else num_return_sequences
        super().__init__(model, inputs, kwargs)
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens or 0
        self.streamer = streamer
        self.num_beams, self.num_return_sequences = num_beams, num_return_sequences
        self.length_penalty, self.early_stopping = float(length_penalty), early_stopping
        eos = eos_token_id if eos_token_id is not None else self.driver.eos_ids()
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        # transformers pads finished rows with the generation pad id, else the first end-of-sequence id
        self.pad_id = pad_token_id if pad_token_id is not None else (
            self.eos_ids[0] if self.eos_ids else self.driver.pad_id)
        self.sampler = _sampler(do_sample, temperature, top_p, top_k)

    @property
    def result(self) -> Any:
        """The generated token ids: ``[rows, prompt (padded) + new tokens]``."""
        return self.recorder.read("", "result")

    def step_count(self) -> int:
        return self.max_new_tokens

    def reached(self, point: HookPoint) -> bool:
        made = self._made
        if made is None or point.kind == "result":
            return True  # a stopped run (``stop_at``) is cut where it stopped; the result is the whole run's
        if point.path == STREAMER:
            return point.call <= made  # the prompt, then a token a step
        return point.call < made  # a module's call k is in the forward of step k

    def edit_steps(self) -> int:
        return self.max_new_tokens  # a stored edit's open loop runs at every step, as nnsight's

    def structure_for(self, batch: Any) -> Structure:
        beams = self.num_beams > 1
        rows = self.driver.rows(batch) // self.num_beams * self.num_return_sequences if beams else None
        return self.driver.generation_structure(batch, self.max_new_tokens, self.recorder.instrumented,
                                                streams=not beams, result_rows=rows)

    def forward(self, runner: Runner, batch: Any) -> Callable[[], Any]:
        return lambda: self.decode(batch, runner)

    def stop_at(self) -> int | None:
        """The step a ``tracer.stop()`` ends the generation in (nnsight: that step's forward is the
        last, no token is chosen from it, nothing is returned); ``None`` when the loop runs out."""
        stop = self.recorder.stop
        return None if stop is None or stop == RESULT else stop.call

    def decode(self, batch: Any, runner: Runner | None = None) -> mx.array:
        """Generate from ``batch``; the token ids, prompt first (fired as ``result`` when traced)."""
        driver = self.driver
        ids = batch.input_ids
        driver.check_length(ids.shape[1], self.max_new_tokens)
        step_fn, cache = driver.decoder(batch)
        stop_at = self.stop_at()
        self._made = None
        if self.num_beams > 1:
            made = 0

            def counted(ids: mx.array, cache: Any) -> Any:
                nonlocal made
                made += 1
                return step_fn(ids, cache)

            result = beam_search(counted, cache, ids, self.num_beams, self.max_new_tokens, self.eos_ids,
                                 self.pad_id, length_penalty=self.length_penalty, early_stopping=self.early_stopping,
                                 num_return_sequences=self.num_return_sequences,
                                 min_new_tokens=self.min_new_tokens, stop_at=stop_at)
            if result is None:  # stopped: the generation never returned
                return None
            self._made = made
        else:
            self._stream(ids, 0, runner)
            new_tokens = []
            try:
                for token in generate_step(step_fn, cache, ids, self.sampler, self.max_new_tokens, self.eos_ids,
                                           self.pad_id, self.min_new_tokens, stop_at, self.speculation(runner)):
                    new_tokens.append(token)
                    self._stream(token, len(new_tokens), runner)
            except GenerationStopped:
                return None  # the generation never returned
            self._made = len(new_tokens)  # one forward a token (a step built ahead and dropped is none)
            if self.streamer is not None and hasattr(self.streamer, "end"):
                self.streamer.end()
            result = mx.concatenate([ids, mx.stack(new_tokens, axis=1)], axis=1)
        result = self.returned(result, ids.shape[1])
        if runner is not None and RESULT in runner.schedule.at:
            return runner.fire_point(RESULT, result)
        return result

    def observed(self, batch: Any) -> bool:
        """A streamer sees every step's tokens, and a container filled after a request of a later
        step holds what the steps made decide (``cut_unmade``): the generation runs even when nothing
        is saved."""
        return self.streamer is not None or super().observed(batch) or any(
            len(container) != size for mark in self.recorder.step_marks for container, size in mark.containers)

    def speculation(self, runner: Runner | None) -> Speculation | None:
        """How the decoding loop may build a step ahead (``generate_step``), or None: only when the
        interventions fired at its steps can be rolled back, and nothing is streamed to the caller
        (a streamer sees each step's tokens before the next step is built, as in transformers)."""
        if self.streamer is not None:
            return None
        if runner is None:
            return NoInterventions()
        if any(point.path == STREAMER for point in runner.schedule.at) or not runner.effect_free():
            return None
        return runner

    def returned(self, ids: mx.array, prompt_width: int) -> Any:
        """What the call returns for the generated ``ids`` (prompts ``prompt_width`` wide): the ids."""
        return ids

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


class Speculation(Protocol):
    """What lets ``generate_step`` build a step before knowing that the run makes it: the state
    of the run's interventions at a ``mark``, restored by ``rollback`` (``Runner`` implements it)."""

    def mark(self) -> Any: ...

    def rollback(self, mark: Any) -> None: ...


class NoInterventions:
    """The ``Speculation`` of a generation with nothing fired at its steps."""

    def mark(self) -> None:
        return None

    def rollback(self, mark: None) -> None:
        pass


def generate_step(step_fn: StepFunction, cache: Any, ids: mx.array, sampler: Callable[[mx.array], mx.array],
                  max_new_tokens: int, eos_ids: list[int], pad_id: int, min_new_tokens: int = 0,
                  stop_at: int | None = None, speculation: Speculation | None = None) -> Iterator[mx.array]:
    """Yield each step's new token per row (``[rows]``), greedy or sampled, as transformers does:
    a row that produced an end-of-sequence token is padded afterwards; the loop ends when every
    row has ended or after ``max_new_tokens`` steps (mlx-lm's ``generate_step`` shape). Before
    ``min_new_tokens`` no end-of-sequence token is chosen. A stop at step ``stop_at`` ends the loop
    after that step's forward (``GenerationStopped``).

    With a ``speculation``, the next step's forward is built while MLX computes this step's token
    (mlx-lm's pipelining): Python's work for step n+1 overlaps MLX's for step n. When step n turns
    out to end the generation, the step built ahead is rolled back (its interventions' values and
    call counts forgotten, an error it raised dropped), so the run is the one made step by step."""
    rows = ids.shape[0]
    finished = mx.zeros((rows,), dtype=mx.bool_)
    eos = mx.array(eos_ids)[None] if eos_ids else None
    logits = step_fn(ids, cache)
    for step in range(max_new_tokens):
        if stop_at is not None and step >= stop_at:
            raise GenerationStopped
        last = _last(logits)
        if step < min_new_tokens and eos_ids:
            last = _forbid(last, eos_ids)
        token = sampler(last)
        token = mx.where(finished, pad_id, token)
        if eos is not None:
            finished = finished | mx.any(token[:, None] == eos, axis=1)
        done = finished.all()
        final = step == max_new_tokens - 1
        if speculation is None or final:
            mx.eval(token, finished, done)  # one evaluation a step: each is a wait for MLX's thread
            yield token
            if done.item() or final:
                return
            logits = step_fn(token[:, None], cache)
            continue
        mx.async_eval(token, finished, done)
        mark = speculation.mark()
        try:
            ahead, error = step_fn(token[:, None], cache), None
        except Exception as e:  # raised only if the step is made: it may end here
            ahead, error = None, e
        yield token
        if done.item():
            speculation.rollback(mark)
            return
        if error is not None:
            raise error
        logits = ahead


class GenerationStopped(Exception):
    """A ``tracer.stop()`` ended the generation mid-loop: nothing is returned."""


_NEG = np.float32(-1.0e9)  # transformers' beam search marks an excluded candidate with this score


def beam_search(step_fn: StepFunction, cache: Any, ids: mx.array, num_beams: int, max_new_tokens: int,
                eos_ids: list[int], pad_id: int, *, length_penalty: float = 1.0, early_stopping: bool | str = False,
                num_return_sequences: int = 1, min_new_tokens: int = 0,
                stop_at: int | None = None) -> mx.array | None:
    """Beam search as transformers 5 runs it (``do_sample=False``); the best ``num_return_sequences``
    sequences per prompt, prompt first, padded to the longest.

    ``ids`` holds each prompt ``num_beams`` times, consecutively. Each step scores every beam's
    continuations by accumulated log-probability (float32), keeps the best ``(1 + #eos) * num_beams``
    (at least ``2 * num_beams``), continues the best ``num_beams`` that did not end, and files the
    ended ones among the top ``num_beams`` as finished with score ``logprob / new_length **
    length_penalty``. The loop ends at ``max_new_tokens``, when no running beam can beat the finished
    ones (transformers' heuristics per ``early_stopping``), or when ``early_stopping=True`` and every
    prompt has ``num_beams`` finished. The KV cache follows the surviving beams. ``None`` when a
    stop fires in step ``stop_at``'s forward (nnsight: the generation never returns)."""
    flat, prompt_len = ids.shape
    batch, k = flat // num_beams, num_beams
    max_len = prompt_len + max_new_tokens
    keep = max(2, 1 + len(eos_ids)) * k
    eos = np.array(eos_ids, dtype=np.int64)
    fill = (pad_id or eos_ids[0]) if eos_ids else -1  # transformers' fill of unwritten positions

    running = np.full((batch, k, max_len), fill, dtype=np.int64)
    running[:, :, :prompt_len] = np.array(ids, dtype=np.int64).reshape(batch, k, prompt_len)
    running_scores = np.zeros((batch, k), dtype=np.float32)
    running_scores[:, 1:] = _NEG  # only the first copy of each prompt starts the search
    running_origin = np.full((batch, k, max_new_tokens), -1, dtype=np.int64)  # flat row each token came from
    finished, finished_origin = running.copy(), running_origin.copy()
    finished_scores = np.full((batch, k), _NEG, dtype=np.float32)
    is_finished = np.zeros((batch, k), dtype=bool)
    improvable = np.ones((batch,), dtype=bool)  # a running beam may still beat the finished ones
    top = np.arange(keep) < k  # only the best num_beams candidates may finish a sequence
    offsets = (np.arange(batch) * k)[:, None]
    rows = np.arange(batch)[:, None]

    logits = step_fn(ids, cache)
    for step in range(max_new_tokens):
        if stop_at is not None and step >= stop_at:
            return None  # a stop fired in this step's forward
        cur = prompt_len + step
        last = _last(logits).astype(mx.float32)
        log_probs = last - mx.logsumexp(last, axis=-1, keepdims=True)
        if step < min_new_tokens and eos_ids:
            log_probs = _forbid(log_probs, eos_ids)
        log_probs = np.array(log_probs)
        vocab = log_probs.shape[-1]
        scores = (log_probs.reshape(batch, k, vocab) + running_scores[:, :, None]).reshape(batch, k * vocab)
        # the best `keep` continuations over all beams, best first (ties: the lower index first)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
        cand_scores = np.take_along_axis(scores, best, axis=1)
        beam, token = best // vocab, best % vocab
        cand = running[rows, beam]
        cand[:, :, cur] = token
        cand_origin = running_origin[rows, beam]
        cand_origin[:, :, step] = beam + offsets
        ends = np.isin(token, eos) | (cur + 1 >= max_len)

        # the running beams of the next step: the best candidates that did not end
        open_scores = cand_scores + ends.astype(np.float32) * _NEG
        pick = np.argsort(-open_scores, axis=1, kind="stable")[:, :k]
        running = cand[rows, pick]
        running_scores = np.take_along_axis(open_scores, pick, axis=1)
        running_origin = cand_origin[rows, pick]

        # the finished sequences: merge the newly ended top candidates, keep the best num_beams
        just_ended = ends & top[None, :]
        ended_scores = cand_scores / np.float32((cur + 1 - prompt_len) ** length_penalty)
        full = is_finished.all(axis=1, keepdims=True) & (early_stopping is True)
        ended_scores = ended_scores + full.astype(np.float32) * _NEG
        ended_scores = ended_scores + (~improvable[:, None]).astype(np.float32) * _NEG
        ended_scores = ended_scores + (~just_ended).astype(np.float32) * _NEG
        merged_scores = np.concatenate([finished_scores, ended_scores], axis=1)
        pick = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        finished = np.concatenate([finished, cand], axis=1)[rows, pick]
        finished_origin = np.concatenate([finished_origin, cand_origin], axis=1)[rows, pick]
        is_finished = np.concatenate([is_finished, just_ended], axis=1)[rows, pick]
        finished_scores = np.take_along_axis(merged_scores, pick, axis=1)

        # can a running beam still beat the worst finished one? (transformers' heuristic)
        length = (max_len if early_stopping == "never" and length_penalty > 0.0 else cur + 1) - prompt_len
        best_running = running_scores[:, :1] / np.float32(length ** length_penalty)
        worst = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), _NEG)
        improvable = improvable & np.any(best_running > worst, axis=1)
        done = (not improvable.any()) or (bool(is_finished.all()) and early_stopping is True) or bool(ends.all())
        if done:
            break
        _reorder(cache, mx.array(running_origin[:, :, step].reshape(-1)))
        logits = step_fn(mx.array(running[:, :, cur].reshape(-1, 1)), cache)

    chosen = finished[:, :num_return_sequences].reshape(batch * num_return_sequences, max_len)
    origin = finished_origin[:, :num_return_sequences].reshape(batch * num_return_sequences, -1)
    generated = int((origin != -1).sum(axis=1).max())
    return mx.array(chosen[:, :prompt_len + generated]).astype(ids.dtype)


def _forbid(logits: mx.array, token_ids: list[int]) -> mx.array:
    """``logits`` with ``token_ids`` impossible (transformers' min-new-tokens processor)."""
    banned = mx.zeros((logits.shape[-1],), dtype=mx.bool_)
    banned[mx.array(token_ids)] = True
    return mx.where(banned, -mx.inf, logits)


def _reorder(cache: Any, index: mx.array) -> None:
    """Make row ``i`` of every per-row array in ``cache`` (mlx-lm caches, also quantized and
    recurrent ones, a kept attention mask) the old row ``index[i]``: the KV cache follows the beams
    that survive a step."""
    rows = index.shape[0]

    def take(value: Any) -> Any:
        if isinstance(value, mx.array):
            return value[index] if value.ndim and value.shape[0] == rows else value
        if isinstance(value, (list, tuple)) and not hasattr(value, "__dict__"):
            return type(value)(take(v) for v in value)
        return value

    for holder in [cache, *cache] if isinstance(cache, list) else [cache]:
        for name, value in list(getattr(holder, "__dict__", {}).items()):
            setattr(holder, name, take(value))


def _last(logits: Any) -> mx.array:
    logits = getattr(logits, "logits", logits)
    return logits[:, -1, :]


def _sampler(do_sample: bool, temperature: float, top_p: float, top_k: int) -> Callable[[mx.array], mx.array]:
    """Greedy, or sampling as transformers' defaults have it (the 50 likeliest tokens unless
    ``top_k`` says otherwise; 0 or None: all of them): by the sampler installed in the context
    (compat: transformers' own, on torch's random stream), else mlx-lm's on MLX's random stream."""
    if not do_sample:
        return lambda logits: mx.argmax(logits, axis=-1)
    installed = context.sampler()
    if installed is not None:
        return installed(temperature, top_k, top_p)
    if temperature == 0:
        return lambda logits: mx.argmax(logits, axis=-1)
    from mlx_lm.sample_utils import make_sampler

    sample = make_sampler(temp=temperature, top_p=top_p if top_p < 1.0 else 0.0, top_k=top_k or 0)
    return lambda logits: sample(logits - mx.logsumexp(logits, axis=-1, keepdims=True))


def generation_structure(named: dict, batch: Any, decoder: Callable, steps: int,
                         instrumented: frozenset = frozenset(), streams: bool = True,
                         result_rows: int | None = None) -> Structure:
    """Hook points of ``steps`` generation steps, from a lazy prefill and one lazy decode step.

    Every decode step calls the same modules with the same shapes (one new position), so steps
    2..n repeat step 1's structure. ``streams``: the streamer's points too (not under beam search,
    which transformers runs without a streamer); ``result_rows``: the returned ids' rows."""
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
    put = [ArraySpec(tuple(ids.shape), ids.dtype)] + [ArraySpec((ids.shape[0],), ids.dtype)] * steps
    for step in range(steps + 1):
        if streams:  # the streamer gets the prompt before the first forward, a step's tokens before the next
            structure.order[streamed(step)] = len(structure.order)
            structure.skeletons[streamed(step)] = put[step]
        for point in (first if step == 0 else later) if step < steps else ():
            at = HookPoint(point.path, point.kind, step)
            structure.order[at] = len(structure.order)
            structure.skeletons[at] = recorded.skeletons[point]
    structure.order[RESULT] = len(structure.order)
    rows = ids.shape[0] if result_rows is None else result_rows
    structure.skeletons[RESULT] = ArraySpec((rows, ids.shape[1] + steps), ids.dtype)
    return structure
