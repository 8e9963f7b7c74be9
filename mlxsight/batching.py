"""All row work: invoke inputs into one batch (tokenizing, padding, the padding mask), each invoke's
rows of a batched value (narrowing and widening), and skips assembled from every invoke's rows.

Each invoke's input becomes rows of token ids; rows are padded together on the tokenizer's
padding side with its pad id, as nnsight does. mlx-lm models take no attention mask, so a padded
batch is run with ``PaddingMask`` stand-ins in the cache slots: they mask the pads and shift RoPE
positions so every row's real tokens count from 0, which makes each row's unpadded positions equal
a separate run of that input.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from .aliasing import ViewSpec
from .graph import Graph, Node, map_nodes
from .tree import map_tree, zip_tree


@dataclass
class Batch:
    input_ids: mx.array  # [B, T] int32
    attention_mask: mx.array | None  # [B, T], 1 for real tokens; None when nothing is padded
    left_padding: list[int]
    right_padding: list[int]
    cache: list | None = None  # past_key_values: one mlx-lm KVCache per layer, continued by the forward
    options: dict = field(default_factory=dict)  # forward options the invokes pass (``output_attentions``)

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]


def rows_of(inputs: tuple, kwargs: dict, tokenizer: Any, vocab_size: int | None = None) -> list[list[int]]:
    """Token-id rows for one invoke's input (text, texts, chat conversations, ids, arrays, or an
    encoding dict). Tokenizer options (``max_length``, ``truncation``, ``add_special_tokens``) apply
    to text, per invoke, as in nnsight.

    Every id is checked against ``vocab_size`` here, before anything runs: MLX gathers embedding
    rows without bounds checks, so a bad id would give garbage logits or crash the process."""
    rows = _rows(inputs, kwargs, tokenizer)
    check_ids(rows, vocab_size)
    return rows


_ACCEPTED = ("text, a list of texts, chat messages, token ids (a list or an integer array) or a tokenizer's "
             "output dict")


def _rows(inputs: tuple, kwargs: dict, tokenizer: Any) -> list[list[int]]:
    options = {}
    if kwargs:
        options = {k: kwargs[k] for k in TOKENIZER_OPTIONS if k in kwargs}
        # `use_cache` changes nothing in one forward pass; `padding` is always to the batch's longest row
        kwargs = {k: v for k, v in kwargs.items() if k not in TOKENIZER_OPTIONS and k not in ("padding", "use_cache")}
    if kwargs:
        unknown = set(kwargs) - {"input_ids", "attention_mask"}
        if unknown:
            raise TypeError(f"unsupported trace/invoke keyword(s) for an MLX language model: {sorted(unknown)}")
        if inputs:
            raise TypeError("give the input either positionally or as input_ids=..., not both")
        return _rows_from_encoding(kwargs)
    if len(inputs) != 1:
        raise TypeError(f"expected one input ({_ACCEPTED}), got {len(inputs)}")
    x = inputs[0]
    if type(x) is mx.array:  # the common case first: ids already in an array
        return _rows_of_array(x)
    if isinstance(x, str):
        return [_encode(tokenizer, x, options)]
    if _is_chat(x):
        return [_encode_chat(tokenizer, x)]
    if isinstance(x, (list, tuple)) and x and all(_is_chat(c) for c in x):
        return [_encode_chat(tokenizer, c) for c in x]
    if isinstance(x, dict) or hasattr(x, "keys") and "input_ids" in x.keys():
        return _rows_from_encoding(dict(x))
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"the input is an empty {type(x).__name__}: give {_ACCEPTED}")
        if all(isinstance(s, str) for s in x):
            return [_encode(tokenizer, s, options) for s in x]
        if all(isinstance(r, (list, tuple)) for r in x):
            return [_id_list(r) for r in x]
        return [_id_list(x)]
    if isinstance(x, mx.array):
        return _rows_of_array(x)
    if hasattr(x, "tolist") and hasattr(x, "shape"):  # numpy arrays, torch tensors
        return _rows_of_array(x)
    raise TypeError(f"cannot use {type(x).__name__} {x!r:.40} as a language-model input: give {_ACCEPTED}")


class TokenRows(list):
    """Token-id rows; an element may be a ``[1, T]`` id array kept as given."""


TOKENIZER_OPTIONS = ("max_length", "truncation", "add_special_tokens")


def _encode(tokenizer: Any, text: str, options: dict | None = None) -> list[int]:
    return list(tokenizer(text, **(options or {}))["input_ids"])


def _is_chat(x: Any) -> bool:
    """A conversation: a non-empty list of ``{"role": ..., "content": ...}`` messages."""
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(m, dict) and "role" in m for m in x)


def _encode_chat(tokenizer: Any, conversation: Any) -> list[int]:
    """One row: the conversation through the tokenizer's chat template, ready for the reply."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("chat-message input needs a tokenizer with a chat template")
    ids = tokenizer.apply_chat_template(list(conversation), add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    return [int(i) for i in ids]


def _dtype_name(x: Any) -> str:
    return str(getattr(x, "dtype", type(x).__name__)).replace("mlx.core.", "")


def _rows_of_array(x: Any) -> list:
    """Rows of an id array (MLX, numpy or torch): integer dtype, one or two dimensions."""
    if not _integer_dtype(x):
        raise TypeError(f"token ids must be integers; got an array of {_dtype_name(x)}")
    shape = tuple(x.shape)
    if len(shape) not in (1, 2):
        raise ValueError(f"token ids must be a [tokens] or [rows, tokens] array; got shape {shape}")
    if isinstance(x, mx.array) and len(shape) == 2 and shape[0] == 1:
        return TokenRows([x])  # one row of ids: kept as an array (no round trip through Python lists)
    ids = x.tolist()
    return [ids] if len(shape) == 1 else ids


_MX_INTEGERS = frozenset({mx.int8, mx.int16, mx.int32, mx.int64, mx.uint8, mx.uint16, mx.uint32, mx.uint64})


def _integer_dtype(x: Any) -> bool:
    dtype = x.dtype
    if isinstance(dtype, mx.Dtype):
        return dtype in _MX_INTEGERS
    kind = getattr(dtype, "kind", None)  # numpy
    if kind is not None:
        return kind in "iu"
    return str(dtype).replace("torch.", "") in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                                  "uint64", "long", "int", "short")


def _id_list(row: Any) -> list[int]:
    if hasattr(row, "tolist") and hasattr(row, "shape"):
        if len(row.shape) != 1:
            raise ValueError(f"a row of token ids must be one-dimensional; got shape {tuple(row.shape)}")
        return _rows_of_array(row)[0]
    ids = []
    for t in row:
        if isinstance(t, bool) or not isinstance(t, int) and not hasattr(t, "__index__"):
            raise TypeError(f"token ids must be integers; got {type(t).__name__} {t!r:.40}")
        ids.append(operator.index(t))
    return ids


def _rows_from_encoding(enc: dict) -> list[list[int]]:
    if "input_ids" not in enc:
        raise ValueError(f"an input dict needs 'input_ids' (a tokenizer's output); got keys {sorted(map(str, enc))}")
    ids = _rows(((enc["input_ids"]),), {}, None) if not isinstance(enc["input_ids"], str) else None
    if ids is None:
        raise TypeError("'input_ids' must hold token ids, not text")
    mask = enc.get("attention_mask")
    if mask is None:
        return ids
    mask = mask.tolist() if hasattr(mask, "tolist") else list(mask)
    mask = [mask] if mask and not isinstance(mask[0], (list, tuple)) else mask
    ids = [r.reshape(-1).tolist() if isinstance(r, mx.array) else r for r in ids]
    if [len(r) for r in mask] != [len(r) for r in ids]:
        raise ValueError("'attention_mask' must have the shape of 'input_ids'")
    return [[t for t, m in zip(r, mr) if m] for r, mr in zip(ids, mask)]


def check_ids(rows: list, vocab_size: int | None) -> None:
    """Raise unless every row has at least one token and every id is in ``[0, vocab_size)``."""
    if not rows:
        raise ValueError("the input has no rows")
    for row in rows:
        if isinstance(row, mx.array):
            if row.size == 0:
                raise ValueError("an input encodes to zero tokens (an empty row)")
            low, high = _id_range(row)
        else:
            if not row:
                raise ValueError("an input encodes to zero tokens (an empty row)")
            low, high = min(row), max(row)
        if low < 0:
            raise ValueError(f"token id {low} is negative: ids index the vocabulary")
        if vocab_size is not None and high >= vocab_size:
            raise ValueError(f"token id {high} is out of range for this model's vocabulary of {vocab_size} tokens "
                             f"(valid ids: 0-{vocab_size - 1})")


def _id_range(row: mx.array) -> tuple[int, int]:
    """The smallest and largest id of an id array, read on the host (the forward evaluates the ids
    anyway; a second MLX evaluation costs more): a few ids as Python ints, many through numpy."""
    if row.ndim in (1, 2) and row.size <= 4096:
        lists = row.tolist() if row.ndim == 2 else [row.tolist()]
        return min(map(min, lists)), max(map(max, lists))
    ids = np.asarray(row)
    return int(ids.min()), int(ids.max())


def pad(rows: list[list[int]], side: str, pad_id: int) -> Batch:
    """Pad rows to one length on ``side`` ("left" or "right")."""
    if len(rows) == 1 and isinstance(rows[0], mx.array):
        ids = rows[0] if rows[0].dtype == mx.int32 else rows[0].astype(mx.int32)
        return Batch(ids, None, [0], [0])
    rows = [r.reshape(-1).tolist() if isinstance(r, mx.array) else r for r in rows]
    width = max(len(r) for r in rows)
    gaps = [width - len(r) for r in rows]
    if side == "left":
        ids = [[pad_id] * g + r for r, g in zip(rows, gaps)]
        mask = [[0] * g + [1] * len(r) for r, g in zip(rows, gaps)]
    else:
        ids = [r + [pad_id] * g for r, g in zip(rows, gaps)]
        mask = [[1] * len(r) + [0] * g for r, g in zip(rows, gaps)]
    padded = any(gaps)
    return Batch(
        input_ids=mx.array(ids, dtype=mx.int32),
        attention_mask=mx.array(mask, dtype=mx.int32) if padded else None,
        left_padding=gaps if side == "left" else [0] * len(rows),
        right_padding=gaps if side != "left" else [0] * len(rows),
    )


class PaddingMask:
    """Stands in an mlx-lm cache slot for one padded forward: masks pads, offsets positions.

    mlx-lm builds its mask with ``cache.make_mask`` and its RoPE positions from ``cache.offset``;
    a left-padded row gets offset ``-padding`` so its first real token is at position 0.
    """

    def __init__(self, left_padding: list[int], right_padding: list[int]) -> None:
        self.left_padding = mx.array(left_padding) if any(left_padding) else None
        self.right_padding = mx.array(right_padding) if any(right_padding) else None
        self.offset = -self.left_padding if self.left_padding is not None else 0

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        """``[B, 1, n, n]`` (or ``[n, n]``) booleans: causal, within the window, never a pad key."""
        positions = mx.arange(n)
        mask = positions[:, None] >= positions[None]
        if window_size is not None:
            mask = mask & (positions[:, None] < positions[None] + window_size)
        if self.left_padding is not None:
            mask = mask & (self.left_padding[:, None, None, None] <= positions)
        if self.right_padding is not None:
            mask = mask & (positions < (n - self.right_padding)[:, None, None, None])
        return mask

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        return keys, values

    def empty(self) -> bool:
        return True


class InvokeRows(list):
    """One invoke's token-id rows, with what else it passes to the forward: the ``past_key_values``
    it continues (``cache``) and forward options (``options``, e.g. ``output_attentions``)."""

    def __init__(self, rows: list, cache: Any = None, options: dict | None = None) -> None:
        super().__init__(rows)
        self.cache = cache
        self.options = dict(options or {})


def forward_options(datas: list) -> dict:
    """The forward options of a batch's invokes, merged in order (nnsight updates one dict with
    each invoke's, so a later invoke's value wins)."""
    options: dict = {}
    for data in datas:
        options.update(getattr(data, "options", {}))
    return options


def continued_cache(datas: list, batch: Batch, n_layers: int) -> list | None:
    """The one ``past_key_values`` every invoke of ``datas`` continues (``None`` if none gives one).

    Raises unless all invokes give the same cache, one mlx-lm ``KVCache`` per decoder layer with
    one row per batch row, and no row is padded (a cache holds no padding mask)."""
    caches = [d.cache for d in datas if isinstance(d, InvokeRows) and d.cache is not None]
    if not caches:
        return None
    from mlx_lm.models.cache import KVCache

    cache = caches[0]
    if len(caches) < len(datas) or any(c is not cache for c in caches):
        raise ValueError("past_key_values: every invoke of a trace must continue the same cache (or none)")
    if not isinstance(cache, (list, tuple)) or len(cache) != n_layers or \
            not all(type(c) is KVCache for c in cache):
        raise TypeError(f"past_key_values must be a list of {n_layers} mlx_lm KVCache objects (one per decoder "
                        f"layer, e.g. mlx_lm.models.cache.make_prompt_cache(model.mlx_model) for a model "
                        f"without sliding windows), got {type(cache).__name__}")
    if batch.attention_mask is not None:
        raise ValueError("past_key_values continues rows of one length: these rows would be padded, and a "
                         "cache holds no padding mask")
    offsets = {c.offset for c in cache}
    if len(offsets) != 1:
        raise ValueError(f"past_key_values: the layers' caches hold different numbers of positions {sorted(offsets)}")
    rows = {c.keys.shape[0] for c in cache if c.keys is not None}
    if rows - {batch.size}:
        raise ValueError(f"past_key_values holds {sorted(rows)} row(s); the trace has {batch.size}")
    return list(cache)


class CacheReader:
    """Stands in a ``KVCache`` slot while a forward's structure is learned: reads its keys and values,
    never writes them, so learning the structure leaves the caller's cache as it was."""

    def __init__(self, cache: Any) -> None:
        self.offset = cache.offset
        self._kv = (cache.keys[..., :self.offset, :], cache.values[..., :self.offset, :]) if self.offset else None

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> Any:
        from mlx_lm.models.cache import create_attention_mask

        return create_attention_mask(n, self.offset, return_array, window_size)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self._kv is None:
            return keys, values
        return mx.concatenate([self._kv[0], keys], axis=2), mx.concatenate([self._kv[1], values], axis=2)

    def empty(self) -> bool:
        return self._kv is None


class BatchSize:
    """The total number of rows, known once every invoke has been seen."""

    def __init__(self) -> None:
        self.value: int | None = None

    def __int__(self) -> int:
        if self.value is None:
            raise RuntimeError("the batch size is not known yet")
        return self.value

    def __repr__(self) -> str:
        return f"BatchSize({self.value})"


class Batcher:
    """One trace's rows: each invoke's encoded input and row range, and the padded batch of them all."""

    def __init__(self, driver: Any, repeat: int = 1) -> None:
        self.driver = driver
        self.repeat = repeat  # each encoded row enters the batch this many times, consecutively
        self.datas: list = []  # encoded inputs, in invoke order
        self.rows_used = 0
        self.size = BatchSize()
        self._batches: dict[tuple, Any] = {}  # by the ids of the datas: the last few batches built

    def add(self, inputs: tuple, kwargs: dict) -> tuple[Any, tuple[int, int]]:
        """Encode one invoke's input; its data and its rows of the batch."""
        data = self.driver.encode(inputs, kwargs)
        if self.repeat > 1:
            if not isinstance(data, list):
                raise TypeError("repeating input rows needs token-id rows (a language model's input)")
            data = [row for row in data for _ in range(self.repeat)]  # transformers' repeat_interleave
        n = self.driver.rows(data)
        rows = (self.rows_used, self.rows_used + n)
        self.rows_used += n
        self.datas.append(data)
        return data, rows

    def batch(self, datas: list | None = None) -> Any:
        """The padded batch of ``datas`` (default: every invoke's input)."""
        datas = self.datas if datas is None else datas
        key = tuple(id(d) for d in datas)
        batch = self._batches.pop(key, None)
        if batch is None:
            batch = self.driver.batch(datas)
        self._batches[key] = batch  # most recent last; a trace alternates between a few lists at most
        if len(self._batches) > 4:
            del self._batches[next(iter(self._batches))]
        return batch

    def part(self, datas: list) -> tuple[Any, list]:
        """The batch of some invokes' inputs (``datas``, in invoke order) whose rows are as they are in
        the batch of every input so far: as wide, so padded alike (the widest input so far joins them
        when none of them is as wide). Also the inputs it holds, in row order."""
        widths = [_width(d) for d in self.datas]
        if None not in widths and widths:
            widest = max(range(len(widths)), key=widths.__getitem__)
            if widths[widest] > max(_width(d) for d in datas):
                order = {id(d): i for i, d in enumerate(self.datas)}
                datas = sorted([*datas, self.datas[widest]], key=lambda d: order[id(d)])
        return self.batch(datas), datas

    def separable(self) -> bool:
        """Whether some invokes' rows can run without the others': not when they continue a KV cache,
        which holds every row of the batch."""
        return all(getattr(d, "cache", None) is None for d in self.datas)

    def rows_in(self, datas: list, data: Any) -> tuple[int, int]:
        """``data``'s row range in the batch of ``datas``."""
        start = 0
        for d in datas:
            n = self.driver.rows(d)
            if d is data:
                return start, start + n
            start += n
        raise ValueError("the input is not part of that batch")

    def fix_size(self, batch: Any) -> int:
        self.size.value = self.driver.rows(batch)
        return self.size.value

    def narrow(self, rows: tuple[int, int]) -> "RowSlice":
        """The view of an invoke's rows of a batched value."""
        return RowSlice(rows[0], rows[1], self.size)


def _width(data: Any) -> int | None:
    """The longest row of an invoke's token-id rows (``None``: not token rows)."""
    if not isinstance(data, list) or not data:
        return None
    return max(r.shape[-1] if isinstance(r, mx.array) else len(r) for r in data)


@dataclass(frozen=True)
class RowSlice(ViewSpec):
    """One invoke's rows of a batched value: every array leaf whose dim 0 is the batch is narrowed
    (``get``) or written back into the whole batch (``put``, widening)."""

    start: int
    stop: int
    batch: Any  # the BatchSize (known at exit), or an int

    def get(self, base: Any) -> Any:
        batch = int(self.batch)
        if self.start == 0 and self.stop == batch:
            return base  # a lone invoke is not narrowed
        return map_tree(base, lambda a: a[self.start : self.stop] if _batched(a, batch) else a)

    def put(self, base: Any, value: Any) -> Any:
        if self.start == 0 and self.stop == int(self.batch):
            return value
        return zip_tree(base, value, self._put_leaf)

    def _put_leaf(self, base: Any, value: Any) -> Any:
        if not _batched(base, int(self.batch)):
            return value
        parts = [base[: self.start], value, base[self.stop :]]
        return mx.concatenate([p for p in parts if p.shape[0]], axis=0)

    def __str__(self) -> str:
        return f".rows[{self.start}:{self.stop}]"


def _batched(a: Any, batch: int) -> bool:
    return isinstance(a, mx.array) and a.ndim > 0 and a.shape[0] == batch


def assemble_skip(path: str, replacements: list[tuple[tuple[int, int] | None, Any]], batch_size: int) -> Any:
    """One skip value for the whole batch from each invoke's ``(rows, value)``, in row order."""
    if len(replacements) == 1 and (replacements[0][0] is None or replacements[0][0] == (0, batch_size)):
        return replacements[0][1]
    parts = sorted(((rows, v) for rows, v in replacements if rows is not None), key=lambda p: p[0])
    covered = [r for r, _ in parts]
    if any(rows is None for rows, _ in replacements) or covered[0][0] != 0 or covered[-1][1] != batch_size \
            or any(a[1] != b[0] for a, b in zip(covered, covered[1:])):
        raise ValueError(f"A batched `.skip()` has to cover every row: every invoke that adds rows must "
                         f"skip model.{path}")
    out = parts[0][1]
    for _, v in parts[1:]:
        out = zip_tree(out, v, lambda a, b: mx.concatenate([a, b], axis=0))
    return out


def invokes_needed(graph: Graph, node: Node, rows: dict[int, tuple[int, int]]) -> tuple[set[int], set[int]] | None:
    """The invokes whose rows ``node``'s value depends on, so it can be computed on their rows alone,
    and the nodes that computation needs (``None``: it needs the whole batch).

    Rows of a batched forward do not mix: an invoke's value depends on its own rows, on edits of
    those rows, and on values other invokes hand it. An edit of another invoke's rows (a ``put`` of
    its ``RowSlice``) leaves these rows as they were. ``rows``: each invoke's row range; a graph
    with skips, gradients or a computation on the whole batch (an edit of ``model.edit``, an empty
    invoke) needs the whole batch."""
    if node.invoke is not None and node.invoke not in rows or \
            any(n.op in ("skip", "grad", "set_grad") for n in graph):
        return None
    owner = {r: i for i, r in rows.items()}
    needed = {node.invoke} if node.invoke is not None else set()
    while True:
        walked = _walk(graph, node, needed, owner)
        if walked is None:
            return None
        found, seen = walked
        if found <= needed:
            return (needed, seen) if needed else None
        needed |= found


def _walk(graph: Graph, node: Node, keep: set[int], owner: dict) -> tuple[set[int], set[int]] | None:
    """The invokes whose rows the values of ``keep``'s rows depend on, and the nodes reached;
    ``None`` if one of them is computed on the whole batch (its rows mixed or indexed)."""
    found: set[int] = set()
    seen: set[int] = set()
    stack = [node] + [n for n in graph if n.op == "write"]
    while stack:
        n = stack.pop()
        if n.index in seen:
            continue
        seen.add(n.index)
        rows = _rows_of(n)
        if rows is not None and rows not in owner:
            return None
        if rows is not None and n.op == "put" and owner[rows] not in keep:
            stack.append(n.args[0])  # another invoke's edit: these rows are its base's
            continue
        if rows is not None:
            found.add(owner[rows])
        stack.extend(n.inputs())
    whole: dict[int, bool] = {}  # node index -> its value is the whole batch (not one invoke's rows)
    for n in (graph.nodes[i] for i in sorted(seen)):
        rows = _rows_of(n)
        if n.op in ("read", "write") or n.op == "put" and rows is not None:
            whole[n.index] = True
        elif n.op == "view" and rows is not None:
            whole[n.index] = False
        elif any(whole.get(d.index, False) for d in n.inputs()):
            return None  # an operation on the whole batch: its rows are not these
        else:
            whole[n.index] = False
    return found, seen


def _rows_of(node: Node) -> tuple[int, int] | None:
    """The row range a ``view``/``put`` of one invoke's rows addresses."""
    if node.op in ("view", "put") and isinstance(node.target, RowSlice):
        return node.target.start, node.target.stop
    return None


def restrict(graph: Graph, nodes: set[int], keep: set[int], rows: dict[int, tuple[int, int]],
             moved: dict[int, tuple[int, int]], size: int) -> tuple[Graph, dict[int, Node]]:
    """The ``nodes`` of ``graph`` (found by ``invokes_needed``) on the rows of the invokes ``keep``
    only: each kept invoke's rows at ``moved[invoke]`` of a batch of ``size`` rows, the edits of
    other invokes' rows dropped. Returns the new graph and each node's counterpart in it."""
    owner = {r: i for i, r in rows.items()}
    new: dict[int, Node] = {}
    out = Graph()
    for n in graph:
        if n.index not in nodes:
            continue
        spec = n.target
        if _rows_of(n) is not None:
            invoke = owner[(spec.start, spec.stop)]
            if invoke not in keep:  # another invoke's edit: these rows are its base's
                new[n.index] = new[n.args[0].index]
                continue
            spec = RowSlice(*moved[invoke], size)
        args, kwargs = map_nodes((n.args, n.kwargs), lambda d: new[d.index])
        new[n.index] = out.create(n.op, spec, args, kwargs, n.where, n.invoke)
    return out, new
