"""The contract between a traced model and the tracer: what a tracer may ask of a model, and nothing else.

A traced model (``NNsight``, ``LanguageModel``) holds one driver. The tracer never reaches into the
model: it encodes each invoke's input, batches the invokes, asks for the structure of the forward
(hook points, shapes, dtypes) and for a forward to run, all through these methods. Generation adds
a decoder: one KV-cached step function, as mlx-lm's ``generate_step`` uses.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Protocol, runtime_checkable

import mlx.core as mx
import mlx.nn as nn

from .compiler import Compiler
from .structure import Structure

StepFunction = Callable[[mx.array, Any], Any]  # (token ids [B, T], cache) -> logits


@runtime_checkable
class Driver(Protocol):
    """What the tracer needs from any traced model."""

    compiler: Compiler  # compiles this model's graphs, caching schedules by graph shape

    def encode(self, inputs: tuple, kwargs: dict) -> Any:
        """One invoke's input, encoded (token-id rows for a language model, ``(args, kwargs)`` otherwise).
        Raises on an input the model cannot take, before anything is recorded."""

    def rows(self, data: Any) -> int:
        """How many batch rows an encoded input (or a batch) has."""

    def batch(self, datas: list) -> Any:
        """The model's input for several invokes' encoded inputs together (padded)."""

    def forward(self, batch: Any) -> Callable[[], Any]:
        """A thunk running the model once on ``batch`` (lazily: nothing is evaluated)."""

    def signature(self, batch: Any) -> Hashable:
        """What the forward's structure depends on (shapes, padding): the structure cache key."""

    def writes_caller_state(self, batch: Any) -> bool:
        """Whether a forward on ``batch`` changes state the caller holds (a KV cache it passed in):
        then the block's run is the whole forward, even when nothing is saved, as on nnsight."""

    def read_only(self, batch: Any) -> Any:
        """``batch`` for a run while the block records (a value needed then): the same forward,
        leaving the caller's state as it was."""

    def modules(self) -> dict[str, nn.Module]:
        """Every module by its path relative to the root (``""`` is the root)."""

    def structure(self, batch: Any, instrumented: frozenset = frozenset()) -> Structure:
        """Hook points of one forward on ``batch``, with their shapes and dtypes (cached, bounded)."""

    def edit_example(self) -> tuple:
        """An input to learn the structure from while recording an edit (edits have no input)."""


@runtime_checkable
class Decoder(Driver, Protocol):
    """A driver that also generates: ``model.generate(...)``."""

    pad_id: int

    def decoder(self, batch: Any) -> tuple[StepFunction, Any]:
        """A step function and a fresh KV cache for ``batch``."""

    def eos_ids(self) -> list[int]:
        """Token ids that end a row's generation."""

    def check_length(self, tokens: int, new_tokens: int = 0) -> None:
        """Raise if ``tokens`` (+ ``new_tokens`` to generate) need more positions than the model has."""

    def generation_structure(self, batch: Any, steps: int, instrumented: frozenset = frozenset(),
                             streams: bool = True, result_rows: int | None = None) -> Structure:
        """Hook points of ``steps`` generation steps on ``batch`` (cached, bounded); ``streams``: with
        the streamer's points (beam search has none); ``result_rows``: rows of the returned ids when
        they differ from the batch's (beam search returns ``num_return_sequences`` per prompt)."""
