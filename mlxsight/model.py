"""Traceable models: ``NNsight`` wraps any ``mlx.nn.Module``; ``LanguageModel`` adds loading,
tokenizing and batching for mlx-lm checkpoints."""

from __future__ import annotations

import copy
import sys

import threading
import warnings
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable

import mlx.core as mx
import mlx.nn as nn

from .batching import Batch, CacheReader, InvokeRows, PaddingMask, continued_cache, forward_options, pad, rows_of
from .compiler import Compiler
from .context import current_tracer
from .envoy import Envoy
from .structure import Structure, record_structure, signature
from .torch_ops import to_mlx
from .tracer import Tracer

if TYPE_CHECKING:
    from .session import Session

# nnsight keyword arguments that have no meaning for an in-memory MLX model.
_IGNORED_LOAD_KWARGS = {"dispatch", "device_map", "attn_implementation", "revision", "trust_remote_code",
                        "low_cpu_mem_usage", "cache_dir", "local_files_only", "max_memory", "offload_folder",
                        "offload_state_dict", "offload_buffers", "token", "use_safetensors", "force_download"}


class NNsight(Envoy):
    """Wrap an ``mlx.nn.Module`` so that ``with model.trace(x):`` records interventions on it."""

    def __init__(self, module: nn.Module, *, rename: dict | None = None, envoys: dict | None = None,
                 **kwargs: Any) -> None:
        # A view of an MLX module (compat's torch view, which nnterp re-wraps) wraps what it views.
        viewed = getattr(module, "mlx_module", None) if not isinstance(module, nn.Module) else None
        module = viewed if isinstance(viewed, nn.Module) else module
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(module, torch.nn.Module):
            from .torch_modules import mirror  # standard torch layers mirrored in MLX; others refused

            module = mirror(module)
        super().__init__(module, "", None)
        object.__setattr__(self, "_rename", dict(rename or {}))
        # envoys={ModuleClass or "path.suffix": EnvoySubclass}: custom envoys (nnsight's envoys=).
        object.__setattr__(self, "_envoy_classes", list((envoys or {}).items()))
        object.__setattr__(self, "_edits", [])
        object.__setattr__(self, "_driver", ModuleDriver(module))
        object.__setattr__(self, "_trace_lock", threading.Lock())  # shared by edit copies: one model
        if any("." in a for v in self._rename.values() for a in ([v] if isinstance(v, str) else v)):
            self._alias_envoys()  # nnsight refuses a dotted alias with no host when the model is built
        for key in kwargs:
            if key not in _IGNORED_LOAD_KWARGS:
                raise TypeError(f"unexpected keyword argument {key!r}")

    # -- what a model presents, and when it is ready -------------------------------------------
    # Every trace runs the whole forward, with every write, even when nothing is saved: set while
    # something outside the trace observes module calls (torch forward hooks under compat).
    whole_forward = False

    def module_view(self, module: nn.Module) -> Any:
        """What an envoy's ``_module`` shows nnsight scripts for ``module`` (mlxsight reads
        ``Envoy.mlx_module``): the module itself, or under compat a ``torch.nn.Module`` view of it
        (``context.set_module_view``)."""
        from .context import settings

        return settings.module_view(self, module) if settings.module_view is not None else module

    @property
    def dispatched(self) -> bool:
        """Whether the weights are in memory: a wrapped module is."""
        return True

    def dispatch(self) -> None:
        """Read the weights (nothing to do for a wrapped module)."""

    def trace(self, *inputs: Any, trace: bool = True, remote: Any = False, **kwargs: Any) -> Tracer | Any:
        """Open a trace over ``inputs``; with ``trace=False`` just run the forward and return its output."""
        if remote:
            raise NotImplementedError(
                "remote=True runs on NDIF through nnsight itself: run the script with "
                "`python -m compat run --backend nnsight SCRIPT`")
        kwargs.pop("scan", None), kwargs.pop("validate", None)  # nnsight 0.4 options, no effect here
        if not trace:
            self.dispatch()
            driver = self._driver
            return _handed_back(driver.forward(driver.batch([driver.encode(inputs, kwargs)]))())
        return Tracer(self, inputs, kwargs)

    def edit(self, *, inplace: bool = False) -> Any:
        """Record interventions that every later trace applies first.

        ``with model.edit() as (tracer, edited):`` edits a copy; ``with model.edit(inplace=True) as
        tracer:`` edits this model. ``clear_edits()`` removes them."""
        from .editing import EditTracer

        return EditTracer(self, inplace)

    def clear_edits(self) -> None:
        """Forget every stored edit."""
        self._edits.clear()

    def scan(self, *inputs: Any, **kwargs: Any) -> Tracer:
        """Like ``trace``, but nothing is computed: saved values are their shapes and dtypes."""
        return Tracer(self, inputs, kwargs, scan=True)

    def session(self, remote: Any = False) -> "Session":
        """Several traces as one computation: values flow between them lazily; saved ones leave."""
        if remote:
            raise NotImplementedError("remote sessions run on NDIF through nnsight: use "
                                      "`python -m compat run --backend nnsight SCRIPT`")
        from .session import Session

        return Session(self)

    @property
    def iter(self) -> Any:
        """Deprecated in nnsight: ``tracer.iter``."""
        return self._deprecated_tracer("model.iter", "tracer.iter").iter

    def all(self) -> Any:
        """Deprecated in nnsight: ``tracer.all()``."""
        return self._deprecated_tracer("model.all()", "tracer.all()").all()

    def _deprecated_tracer(self, old: str, new: str) -> Tracer:
        from .errors import NNsightDeprecationWarning

        warnings.warn(f"{old} is deprecated (as in nnsight); use {new}", NNsightDeprecationWarning, stacklevel=3)
        tracer = self._open_tracer()
        if tracer is None:
            raise ValueError(f"{old} is only meaningful inside a trace")
        return tracer

    # -- what the tracer needs from a model -------------------------------------------------
    def _open_tracer(self) -> Tracer | None:
        tracer = current_tracer()
        return tracer if tracer is not None and tracer.model is self else None

    def _forget_modules(self) -> None:
        """The module tree changed (a submodule was replaced): learn paths and structures anew."""
        self._driver.forget()


_STRUCTURE_CACHE_SIZE = 32


class Structures:
    """A bounded, least-recently-used cache of structures (a notebook tries many input shapes)."""

    def __init__(self, size: int = _STRUCTURE_CACHE_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict = OrderedDict()

    def get(self, key: Any, make: Callable[[], Structure]) -> Structure:
        structure = self.entries.get(key)
        if structure is None:
            structure = self.entries[key] = make()
            if len(self.entries) > self.size:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        return structure

    def clear(self) -> None:
        self.entries.clear()


class ModuleDriver:
    """The driver (see ``driver.Driver``) of any ``mlx.nn.Module``: an input is ``(args, kwargs)``."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.structures = Structures()
        self.compiler = Compiler()
        self._named: dict[str, nn.Module] | None = None
        self.example: tuple | None = None

    def forget(self) -> None:
        self._named = None
        self.structures.clear()
        self.compiler.cache.clear()

    def modules(self) -> dict[str, nn.Module]:
        if self._named is None:
            self._named = dict(self.module.named_modules())
        return self._named

    def encode(self, inputs: tuple, kwargs: dict) -> Any:
        inputs, kwargs = to_mlx(inputs), to_mlx(kwargs)  # torch tensors (a script written for nnsight)
        self.example = inputs
        return (inputs, kwargs)

    def edit_example(self) -> tuple:
        if self.example is None:
            raise TypeError("NNsight(module).edit() needs an example input first: trace the model once")
        return self.example

    def rows(self, data: Any) -> int:
        if isinstance(data, tuple) and len(data) == 2:
            args, _ = data
            first = args[0] if args else None
            return first.shape[0] if isinstance(first, mx.array) and first.ndim else 1
        return self.rows((data, {}))

    def batch(self, datas: list) -> Any:
        if len(datas) > 1:
            raise NotImplementedError("NNsight does not support batching multiple invokes")
        return datas[0]

    def forward(self, batch: Any) -> Callable[[], Any]:
        args, kwargs = batch
        module = self.module
        return lambda: module(*args, **kwargs)

    def signature(self, batch: Any) -> Any:
        return signature(batch)

    def writes_caller_state(self, batch: Any) -> bool:
        return False  # a module's own state changes are not tracked (nor undone) by the tracer

    def read_only(self, batch: Any) -> Any:
        return batch

    def structure(self, batch: Any, instrumented: frozenset = frozenset()) -> Structure:
        return self.structures.get((self.signature(batch), instrumented),
                                   lambda: record_structure(self.modules(), self.forward(batch), instrumented))


class LanguageModel(NNsight):
    """An mlx-lm causal language model with its tokenizer, traced like nnsight's ``LanguageModel``.

    ``LanguageModel(path)`` loads a local checkpoint or hub repo (saved by transformers or converted
    for mlx-lm) through ``loading.load``, lazily as nnsight does: the module tree is built, and the
    weights are read by ``dispatch()`` or the first trace (``dispatch=True``: at once; ``scan`` never
    reads them); ``config=`` builds from a caller's config with the weights that fit;
    ``LanguageModel(module, tokenizer=tok)`` wraps a loaded one. A transformers tokenizer passed in
    becomes ``model.tokenizer`` and is configured in place as nnsight configures it (pad = eos when it
    has none, left padding); an mlx-lm ``TokenizerWrapper`` passed in is left as given and the model
    configures a copy of the tokenizer inside it. ``view="hf"`` (default) presents
    transformers' module paths and output structures where an adapter exists; ``view="mlx"`` the
    plain mlx-lm tree.

    ``attn_implementation`` is transformers' choice of attention: ``"sdpa"`` (the default where the
    model can run it: MLX's fused kernel; attention modules return no weights) or ``"eager"`` (the
    probabilities are computed explicitly and each attention module returns ``(attn_output,
    attn_weights)``); see ``set_attn_implementation``.
    """

    def __init__(self, model: str | Path | nn.Module, *, tokenizer: Any = None, view: str = "hf",
                 dtype: Any = None, torch_dtype: Any = None, tokenizer_kwargs: dict | None = None,
                 config: dict | None = None, attn_implementation: str | None = None, dispatch: bool = False,
                 ignore_mismatched_sizes: bool = False,
                 **kwargs: Any) -> None:
        if view not in ("hf", "mlx"):
            raise ValueError("view must be 'hf' or 'mlx'")
        dtype = dtype if dtype is not None else torch_dtype
        if isinstance(model, (str, Path)):
            from .loading import load

            # Built lazily: every parameter is an unread view of the checkpoint until dispatch().
            module, loaded_tok, config = load(model, kwargs.get("revision"), kwargs.get("trust_remote_code"),
                                              config, ignore_mismatched_sizes)
            config = dict(config)
            passed = tokenizer is not None
            tokenizer = tokenizer if passed else loaded_tok
            dispatched = False
        else:
            module, passed, dispatched = model, True, True
            if tokenizer is None:
                raise TypeError("LanguageModel(module) needs tokenizer=...")
        if dtype is not None and dtype != "auto":
            module.set_dtype(_mx_dtype(dtype))
        if dtype is not None and config is not None:  # "auto" resolved: the dtype the weights have
            config["dtype"] = _dtype_name(module)
        config = config or _config_from_args(module)
        hf_module = _hf_view(module, config) if view == "hf" else None
        super().__init__(hf_module if hf_module is not None else module, **kwargs)
        from mlx_lm.tokenizer_utils import TokenizerWrapper

        # mlx-lm's wrapper holds a transformers tokenizer; nnsight scripts expect that one. nnsight
        # configures the tokenizer it is given in place (pad = eos when missing, left padding), so a
        # transformers tokenizer is configured as there; a wrapper the caller keeps for mlx-lm is
        # left as given: the model configures its own copy of the inner tokenizer.
        if isinstance(tokenizer, TokenizerWrapper):
            tok = copy.deepcopy(tokenizer._tokenizer) if passed else tokenizer._tokenizer
        else:
            tok = tokenizer
        if getattr(tok, "pad_token", None) is None and getattr(tok, "eos_token", None) is not None:
            tok.pad_token = tok.eos_token
        if hasattr(tok, "padding_side"):
            tok.padding_side = "left"
        for key, value in (tokenizer_kwargs or {}).items():
            setattr(tok, key, value)
        object.__setattr__(self, "tokenizer", tok)
        object.__setattr__(self, "config", SimpleNamespace(**config))
        # the checkpoint's generation settings (generation_config.json): generate() takes its defaults from them
        object.__setattr__(self, "generation_config", _generation_config(model, kwargs.get("revision"), config))
        object.__setattr__(self, "mlx_model", module)
        object.__setattr__(self, "view", "hf" if hf_module is not None else "mlx")
        object.__setattr__(self, "_driver", LanguageModelDriver(self._mlx, module, tok, self.view, self.config))
        object.__setattr__(self, "_dispatched", dispatched)
        self._attach_attn_implementation(hf_module, attn_implementation)
        if dispatch:
            self.dispatch()

    # -- attention implementation ---------------------------------------------------------------
    def _attach_attn_implementation(self, hf_module: nn.Module | None, name: str | None) -> None:
        """The HF view carries the model's config, as transformers' model does, and runs ``name``."""
        if hf_module is None:
            self.set_attn_implementation(name)
            self.config._attn_implementation = "sdpa"
            return
        object.__setattr__(hf_module, "config", self.config)
        hf_module.set_attn_implementation(name)

    @property
    def attn_implementation(self) -> str:
        """The attention every layer runs: ``"sdpa"`` or ``"eager"`` (``config._attn_implementation``)."""
        # the driver's module is the HF view itself, whatever `_module` presents (compat's torch view)
        return self._driver.module.attn_implementation if self.view == "hf" else "sdpa"

    def set_attn_implementation(self, attn_implementation: str | None) -> None:
        """Switch the attention of every layer, as transformers' ``model.set_attn_implementation``:
        ``"eager"`` makes each attention module return ``(attn_output, attn_weights)`` with the
        ``[B, heads, T, S]`` probabilities, ``"sdpa"`` ``(attn_output, None)``; ``None`` is the default.
        The values of every module are the same under both (left-pad query rows aside, as in
        transformers: sdpa gives them zeros, eager an even average). ``ValueError`` names an
        implementation the model cannot run."""
        if self.view == "hf":
            self._driver.module.set_attn_implementation(attn_implementation)
            return
        from .adapters.base import check_attn_implementation

        if check_attn_implementation(attn_implementation or "sdpa") != "sdpa":
            raise ValueError("view='mlx' runs mlx-lm's own attention (sdpa); attn_implementation='eager' "
                             "needs the HF view (view='hf')")

    @property
    def dispatched(self) -> bool:
        """Whether the weights have been read (``dispatch()``; the first trace or generation does it)."""
        return self._dispatched

    def dispatch(self) -> None:
        """Read the checkpoint's weights into the module tree built at construction: the same module
        objects (envoys are kept) get their parameters evaluated; an explicit ``dtype`` is applied."""
        if not self._dispatched:
            mx.eval(self.mlx_model.parameters())
            object.__setattr__(self, "_dispatched", True)

    @property
    def generator(self) -> "GeneratorEnvoy":
        """nnsight's ``model.generator``: ``.output`` (deprecated) is the generated ids."""
        return GeneratorEnvoy(self)

    def generate(self, *inputs: Any, max_new_tokens: int | None = None, **kwargs: Any) -> Any:
        """``with model.generate(prompt, max_new_tokens=N) as tracer:`` traces every step.

        Settings the call leaves out come from ``model.generation_config`` (the checkpoint's), else
        transformers' defaults (20 new tokens, greedy, one beam). Called outside a ``with`` statement
        it just generates and returns the token ids."""
        from .generation import GenerationTracer
        from .generation_config import resolve

        # the call's own settings, then a passed GenerationConfig's, then the checkpoint's (as transformers)
        if max_new_tokens is not None:
            kwargs["max_new_tokens"] = max_new_tokens
        kwargs = resolve(kwargs, kwargs.pop("generation_config", None), self.generation_config)
        max_new_tokens = kwargs.pop("max_new_tokens", 20)
        forward_kwargs = {k: kwargs.pop(k) for k in ("input_ids", "attention_mask") if k in kwargs}
        kwargs.pop("remote", None) and self.trace(remote=True)
        tracer = GenerationTracer(self, inputs, forward_kwargs, max_new_tokens=max_new_tokens, **kwargs)
        if _called_in_with_statement():
            return tracer
        self.dispatch()
        tracer.batcher.add(inputs, forward_kwargs)  # each row repeated as the loop needs (beams, sequences)
        return _handed_back(tracer.decode(tracer.batcher.batch()))

    def pipe(self, *inputs: Any, **kwargs: Any) -> Any:
        """``with model.pipe(prompt, max_new_tokens=N) as tracer:``: nnsight's ``pipe``, transformers'
        text-generation pipeline on this model; ``tracer.result`` is its records (one list of
        ``{"generated_text": ...}`` per prompt; a chat gets the reply as an assistant message).

        Traced like ``generate``; called outside a ``with`` statement it returns the records."""
        from .pipeline import PipeTracer

        kwargs.pop("remote", None) and self.trace(remote=True)
        tracer = PipeTracer(self, inputs, kwargs)
        if _called_in_with_statement():
            return tracer
        self.dispatch()
        return _handed_back(tracer.run())


# What an invoke may pass to an HF view's forward besides its inputs (transformers' keywords).
FORWARD_OPTIONS = ("output_attentions",)


class LanguageModelDriver(ModuleDriver):
    """The driver of an mlx-lm language model: inputs are token-id rows, padded together; it decodes."""

    def __init__(self, module: nn.Module, mlx_model: nn.Module, tokenizer: Any, view: str, config: Any) -> None:
        super().__init__(module)
        self.mlx_model, self.tokenizer, self.view, self.config = mlx_model, tokenizer, view, config
        # transformers resolves special-token ids through a slow __getattr__: read it once.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.vocab_size = _vocab_size(mlx_model, vars(config))  # every input id is checked against it
        self.positions = _position_limit(mlx_model, vars(config), self.vocab_size)
        self._layer_count: int | None = None

    def forget(self) -> None:
        super().forget()
        self._layer_count = None

    @property
    def layer_count(self) -> int:
        """How many decoder layers (KV-cache slots) the mlx-lm model has; read once per module tree."""
        if self._layer_count is None:
            self._layer_count = len(getattr(self.mlx_model, "layers", []))
        return self._layer_count

    def encode(self, inputs: tuple, kwargs: dict) -> list[list[int]]:
        if not kwargs:  # the usual case: no cache to continue, no forward options
            return rows_of(inputs, kwargs, self.tokenizer, self.vocab_size)
        kwargs = dict(kwargs)
        cache = kwargs.pop("past_key_values", None)  # continue a KV cache (see ``batch`` and ``forward``)
        # forward options, passed to the model as nnsight passes an invoke's non-tokenizer keywords
        options = {k: kwargs.pop(k) for k in FORWARD_OPTIONS if k in kwargs}
        if options and self.view != "hf":
            raise TypeError(f"{sorted(options)}: forward options of transformers' models, which the HF view "
                            "(view='hf') takes; view='mlx' runs mlx-lm's forward")
        rows = rows_of(inputs, kwargs, self.tokenizer, self.vocab_size)
        return rows if cache is None and not options else InvokeRows(rows, cache, options)

    def edit_example(self) -> tuple:
        return ([[self.pad_id, self.pad_id]],)  # structure only: edits are shape-agnostic

    def rows(self, data: Any) -> int:
        return data.size if isinstance(data, Batch) else len(data)

    def batch(self, datas: list) -> Batch:
        rows = [r for d in datas for r in d]
        batch = pad(rows, getattr(self.tokenizer, "padding_side", "left"), self.pad_id)
        batch.cache = continued_cache(datas, batch, self.layer_count)
        batch.options = forward_options(datas)
        if self.positions is not None:
            self.check_length(batch.input_ids.shape[1] + (batch.cache[0].offset if batch.cache else 0))
        return batch

    def check_length(self, tokens: int, new_tokens: int = 0) -> None:
        """Refuse more positions than a learned position table has rows (GPT-2's ``wpe``): MLX would
        read past the table and return garbage where torch raises."""
        if self.positions is not None and tokens + new_tokens > self.positions:
            what = f"{tokens} prompt tokens + {new_tokens} new tokens" if new_tokens else f"{tokens} tokens"
            raise ValueError(f"{what} is more than this model's {self.positions} positions (its learned position "
                             f"embedding has {self.positions} rows)")

    def writes_caller_state(self, batch: Batch) -> bool:
        return batch.cache is not None  # past_key_values: every layer continues it

    def read_only(self, batch: Batch) -> Batch:
        if batch.cache is None:
            return batch
        return replace(batch, cache=[CacheReader(c) for c in batch.cache])

    def signature(self, batch: Batch) -> Any:
        # The attention implementation decides what attention modules return (weights or None).
        cached = batch.cache[0].offset if batch.cache else None
        attention = getattr(self.module, "attn_implementation", None) if self.view == "hf" else None
        options = tuple(sorted(batch.options.items())) if batch.options else ()
        return (batch.input_ids.shape, tuple(batch.left_padding), tuple(batch.right_padding), cached, attention, options)

    def structure(self, batch: Batch, instrumented: frozenset = frozenset()) -> Structure:
        if batch.cache is None:
            return super().structure(batch, instrumented)
        # Learning the structure runs the forward lazily once more: on readers, so the cache is
        # continued by the traced run only.
        readers = [CacheReader(c) for c in batch.cache]
        return self.structures.get((self.signature(batch), instrumented),
                                   lambda: record_structure(self.modules(), self._continue(batch, readers),
                                                            instrumented))

    def _continue(self, batch: Batch, cache: list) -> Callable[[], Any]:
        """The forward of ``batch``'s rows after the positions ``cache`` holds (mlx-lm's ``cache=``)."""
        module, ids = self.module, batch.input_ids
        if self.view == "hf":
            mask, options = mx.ones(ids.shape, mx.int32), batch.options
            return lambda: module(input_ids=ids, attention_mask=mask, past_key_values=cache, **options)
        return lambda: module(ids, cache=cache)

    def forward(self, batch: Batch) -> Callable[[], Any]:
        if batch.cache is not None:
            return self._continue(batch, batch.cache)
        module, ids = self.module, batch.input_ids
        if self.view == "hf":
            # As transformers is called under nnsight: keywords, with a mask even when nothing is
            # padded, so `model.inputs` is `((), {"input_ids": ..., "attention_mask": ...})`.
            mask = batch.attention_mask if batch.attention_mask is not None else mx.ones(ids.shape, mx.int32)
            options = batch.options
            return lambda: module(input_ids=ids, attention_mask=mask, **options)
        if batch.attention_mask is None:
            return lambda: module(ids)
        n_layers = self.layer_count
        return lambda: module(ids, cache=[PaddingMask(batch.left_padding, batch.right_padding)
                                          for _ in range(n_layers)])

    def eos_ids(self) -> list[int]:
        eos = getattr(self.config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    def decoder(self, batch: Batch) -> tuple[Callable[[mx.array, Any], Any], Any]:
        """A step function ``(ids, cache) -> logits`` and a fresh KV cache for ``batch``."""
        if batch.cache is not None:
            raise NotImplementedError("past_key_values continues a model.trace; model.generate starts its own cache")
        module = self.module
        if self.view == "hf":
            cache = module.make_cache()
            mask = batch.attention_mask

            def hf_step(ids: mx.array, cache: Any) -> Any:
                nonlocal mask
                if mask is not None and ids.shape[1] == 1:
                    mask = mx.concatenate([mask, mx.ones((mask.shape[0], 1), mask.dtype)], axis=1)
                # transformers 5 generates with logits_to_keep=1: lm_head sees [B, 1, D] on every step.
                return module(ids, attention_mask=mask, cache=cache, logits_to_keep=1)

            return hf_step, cache
        if any(batch.left_padding):
            from mlx_lm.models.cache import BatchKVCache

            cache = [BatchKVCache(batch.left_padding) for _ in self.mlx_model.layers]
        else:
            cache = self.mlx_model.make_cache()
        return (lambda ids, cache: module(ids, cache=cache)), cache

    def generation_structure(self, batch: Batch, steps: int, instrumented: frozenset = frozenset(),
                             streams: bool = True, result_rows: int | None = None) -> Structure:
        from .generation import generation_structure

        key = ("generate", steps, self.signature(batch), instrumented, streams, result_rows)
        return self.structures.get(key, lambda: generation_structure(self.modules(), batch, self.decoder, steps,
                                                                     instrumented, streams, result_rows))


class GeneratorEnvoy:
    """``model.generator``: its ``.output`` is the generation's token ids (deprecated in nnsight)."""

    def __init__(self, model: LanguageModel) -> None:
        self._model = model

    @property
    def parent(self) -> LanguageModel:
        return self._model

    @property
    def output(self) -> Any:
        return self._model._deprecated_tracer("model.generator.output", "tracer.result").result

    @property
    def streamer(self) -> "StreamerEnvoy":
        return StreamerEnvoy(self._model)


class StreamerEnvoy:
    """``model.generator.streamer``: its ``.output`` is what a streamer gets at this step of a
    generation, the prompt ids at step 0 and then each step's new token per row (as transformers'
    ``streamer.put``)."""

    path = "model.generator.streamer"

    def __init__(self, model: LanguageModel) -> None:
        self._model = model

    @property
    def output(self) -> Any:
        from .generation import STREAMER, GenerationTracer

        tracer = self._model._open_tracer()
        if not isinstance(tracer, GenerationTracer):
            raise ValueError("model.generator.streamer.output is read inside `with model.generate(...)`")
        return tracer.recorder.read(STREAMER, "output")


def _called_in_with_statement() -> bool:
    """Whether ``model.generate(...)``'s caller wrote it as ``with model.generate(...)``.

    Read from the caller's bytecode (the instruction after the call sets up a ``with``), not from
    its source, which may have changed on disk or not exist."""
    import dis

    from .errors import user_frame

    frame = user_frame(3)
    if frame is None:
        return True
    after = [i.opname for i in dis.get_instructions(frame.f_code) if i.offset > frame.f_lasti][:2]
    if after and after[0] in ("BEFORE_WITH", "BEFORE_ASYNC_WITH", "SETUP_WITH", "SETUP_ASYNC_WITH"):
        return True
    return after == ["COPY", "LOAD_SPECIAL"]  # Python 3.14: the ``__exit__`` lookup comes first


def _handed_back(value: Any) -> Any:
    """A value returned to the script outside any trace, under the same transform as saved values
    (compat: torch tensors)."""
    from . import context

    transform = context.settings.value_transform
    return transform(value) if transform is not None else value


def _generation_config(model: Any, revision: str | None, config: dict) -> Any:
    """The checkpoint's ``GenerationConfig`` (from the model config's token ids for a wrapped module)."""
    from .generation_config import GenerationConfig
    from .loading import resolve

    root = resolve(model, revision) if isinstance(model, (str, Path)) else None
    return GenerationConfig.from_checkpoint(root, config)


def _config_from_args(module: nn.Module) -> dict:
    args = getattr(module, "args", None)
    return dict(vars(args)) if args is not None else {}


def _vocab_size(module: nn.Module, config: dict) -> int | None:
    """How many token ids the model takes: the bound every input id is checked against.

    The model's ``vocab_size`` (mlx-lm's args, else config.json), when an input embedding has that
    many rows; a model may have several embeddings (GPT-2's positions), so without one the largest."""
    rows = [int(m.weight.shape[0]) for _, m in module.named_modules()
            if isinstance(m, (nn.Embedding, nn.QuantizedEmbedding))]
    size = getattr(getattr(module, "args", None), "vocab_size", None) or config.get("vocab_size")
    if isinstance(size, int) and (size in rows or not rows):
        return size
    return max(rows) if rows else None


def _position_limit(module: nn.Module, config: dict, vocab_size: int | None) -> int | None:
    """The rows of a learned position embedding, if the model has one (RoPE models have none: their
    ``max_position_embeddings`` is no hard limit)."""
    limit = next((config.get(k) for k in ("n_positions", "n_ctx", "max_position_embeddings")
                  if isinstance(config.get(k), int)), None)
    for _, m in module.named_modules():
        if isinstance(m, (nn.Embedding, nn.QuantizedEmbedding)) and int(m.weight.shape[0]) == limit != vocab_size:
            return limit
    return None


def _hf_view(module: nn.Module, config: dict) -> nn.Module | None:
    try:
        from .adapters import hf_view
    except ImportError:
        return None
    try:
        return hf_view(module, config)
    except Exception as e:  # noqa: BLE001 - fall back to the plain tree, loudly
        warnings.warn(f"no HF view for this model ({e}); using mlx-lm's module tree", stacklevel=3)
        return None


def _dtype_name(module: nn.Module) -> str:
    """The dtype of a module's floating-point parameters (its first one), by name (``"float32"``)."""
    from mlx.utils import tree_flatten

    for _, value in tree_flatten(module.parameters()):
        if mx.issubdtype(value.dtype, mx.floating):
            return str(value.dtype).removeprefix("mlx.core.")
    return "float32"


def _mx_dtype(dtype: Any) -> mx.Dtype:
    if isinstance(dtype, mx.Dtype):
        return dtype
    name = str(dtype).replace("torch.", "")
    aliases = {"float": "float32", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}
    return getattr(mx, aliases.get(name, name))
