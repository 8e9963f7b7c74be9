"""The web app: explorers over one loaded model, rendered by ``mlxsight.views`` (one rendering path).

Every explorer posts a small JSON form to ``/api/<name>``; the answer is the same HTML document that
``result.to_html()`` gives, shown in a frame, or (generation) text streamed as it is produced.

The model lives on one thread of its own: it is loaded there and every trace runs there, one job at
a time (MLX streams are per thread, and a single worker is the lock that keeps concurrent requests
from interleaving traces). Request bodies, prompt lengths and generation lengths are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import tools, views
from . import shell


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for."""

    body_bytes: int = 16_384
    prompt_tokens: int = 256
    new_tokens: int = 200
    top_k: int = 20


class BadRequest(ValueError):
    """A request outside the limits or missing a field; answered with 400 and the message."""


def _thread_stream() -> None:
    import mlx.core as mx

    mx.set_default_stream(mx.new_stream(mx.default_device()))


class Explorer:
    """The model on its own thread, and the analyses the pages call (each returns HTML or streams text).

    ``model`` is a checkpoint path (or repo id) or a function returning a model; either way it is
    loaded on the model thread. ``sae`` likewise (a path for ``mlxsight.tools.SAE.load``, or a
    loader), or an ``SAE``.
    """

    def __init__(self, model: str | Path | Callable[[], Any], *, sae: Any = None, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlxsight-model",
                                         initializer=_thread_stream)
        try:
            self.model, self.sae = self.worker.submit(self._load, model, sae).result()
        except BaseException:
            self.worker.shutdown()
            raise
        self.parts = tools.standardize(self.model)

    @staticmethod
    def _load(model: Any, sae: Any) -> tuple[Any, Any]:
        import mlxsight

        if isinstance(model, (str, os.PathLike)):
            model = mlxsight.LanguageModel(str(model))
        elif isinstance(model, (types.FunctionType, types.MethodType, functools.partial)):
            model = model()
        else:  # a model made on another thread would carry that thread's MLX stream
            raise TypeError("pass the model as a checkpoint path or a function that loads it (it is loaded on the "
                            f"app's own thread), not a {type(model).__name__}")
        if isinstance(sae, (str, os.PathLike)):
            sae = tools.SAE.load(sae)
        elif isinstance(sae, (types.FunctionType, types.MethodType, functools.partial)):
            sae = sae()
        return model, sae

    def available(self) -> set[str]:
        """The explorers this app serves: the SAE explorer only when an SAE was given."""
        found = {"lens", "attention", "heads", "patching", "steering", "playground"}
        return found | {"sae"} if self.sae is not None else found

    # -- inputs -------------------------------------------------------------------------------------
    def prompt(self, form: dict, key: str = "prompt") -> str:
        text = form.get(key)
        if not isinstance(text, str) or not text.strip():
            raise BadRequest(f"'{key}' must be a non-empty string")
        n = len(self.model.tokenizer.encode(text))
        if n > self.limits.prompt_tokens:
            raise BadRequest(f"'{key}' is {n} tokens; the limit is {self.limits.prompt_tokens}")
        return text

    def integer(self, form: dict, key: str, default: int, lo: int, hi: int) -> int:
        value = form.get(key, default)
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise BadRequest(f"'{key}' must be an integer") from None
        if not lo <= value <= hi:
            raise BadRequest(f"'{key}' must be in [{lo}, {hi}], got {value}")
        return value

    def number(self, form: dict, key: str, default: float, lo: float, hi: float) -> float:
        try:
            value = float(form.get(key, default))
        except (TypeError, ValueError):
            raise BadRequest(f"'{key}' must be a number") from None
        if not (lo <= value <= hi):
            raise BadRequest(f"'{key}' must be in [{lo}, {hi}], got {value}")
        return value

    def token_id(self, form: dict, key: str) -> int:
        """A single token given as text (``" Lily"``); rejects text that is several tokens."""
        text = form.get(key)
        if not isinstance(text, str) or not text:
            raise BadRequest(f"'{key}' must be a token")
        ids = [i for i in self.model.tokenizer.encode(text, add_special_tokens=False)]
        if len(ids) != 1:
            raise BadRequest(f"'{key}' = {text!r} is {len(ids)} tokens, not one")
        return ids[0]

    def layer(self, form: dict) -> int:
        return self.integer(form, "layer", len(self.parts.layers) // 2, 0, len(self.parts.layers) - 1)

    # -- analyses (called with the lock held) -------------------------------------------------------
    def lens(self, form: dict) -> str:
        prompt, k = self.prompt(form), self.integer(form, "top_k", 5, 1, self.limits.top_k)
        return views.to_html(tools.logit_lens(self.model, prompt, top_k=k))

    def attention(self, form: dict) -> str:
        return views.to_html(tools.attention_patterns(self.model, self.prompt(form)))

    def heads(self, form: dict) -> str:
        kind = form.get("kind", "induction")
        if kind not in tools.heads.KINDS:
            raise BadRequest(f"'kind' must be one of {', '.join(tools.heads.KINDS)}")
        return views.to_html(tools.head_scores(self.model, kind))

    def patching(self, form: dict) -> str:
        clean, corrupted = self.prompt(form, "clean"), self.prompt(form, "corrupted")
        metric = tools.logit_diff(self.token_id(form, "good"), self.token_id(form, "bad"))
        component = form.get("component", "resid")
        if component not in ("resid", "attn", "mlp", "heads"):
            raise BadRequest("'component' must be resid, attn, mlp or heads")
        method = form.get("method", "activation")
        sweeps = {"activation": tools.activation_patching, "attribution": tools.attribution_patching}
        if method not in sweeps:
            raise BadRequest("'method' must be activation or attribution")
        sweep = sweeps[method]
        return views.to_html(sweep(self.model, clean, corrupted, metric, component=component, progress=False))

    def sae_features(self, form: dict) -> str:
        if self.sae is None:
            raise BadRequest("no SAE was given: start the app with --sae PATH")
        return views.to_html(tools.feature_activations(self.model, self.sae, self.prompt(form)))

    def generate(self, form: dict, emit: Callable[[str], None], steer: bool = False) -> None:
        """Generate from the form's prompt, calling ``emit`` with each new piece of text."""
        prompt = self.prompt(form)
        n = self.integer(form, "max_new_tokens", 48, 1, self.limits.new_tokens)
        temperature = self.number(form, "temperature", 0.0, 0.0, 2.0)
        vector = None
        if steer:
            layer = self.layer(form)
            scale = self.number(form, "scale", 4.0, -100.0, 100.0)
            pos, neg = self.prompt(form, "positive"), self.prompt(form, "negative")
            vector = scale * np.asarray(tools.steering_vector(self.model, pos, neg, layer), dtype=np.float32)
        tokenizer = self.model.tokenizer
        ids = list(tokenizer.encode(prompt))
        shown = tokenizer.decode(ids, skip_special_tokens=True)  # decoded with the prompt: spaces kept

        def on_token(token: Any) -> None:
            nonlocal shown
            ids.append(int(np.asarray(token).reshape(-1)[0]))
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if text.startswith(shown) and len(text) > len(shown):  # only whole characters, in order
                emit(text[len(shown):])
                shown = text

        kw = {"max_new_tokens": n, "streamer": on_token}
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature)
        # The tracer itself, not model.generate(): generate() guesses from its caller's source line
        # whether it is in a `with`, and this runs on a worker thread inside the package.
        from ..generation import GenerationTracer

        tracer = GenerationTracer(self.model, (prompt,), {}, **kw)
        if vector is None:
            with tracer:
                generated = tracer.result.save()  # a saved name: a block that saves nothing never runs
            return
        import mlx.core as mx

        # As tools.generate_steered(positions="all"): added to every prompt position at the first step,
        # then to each new token; the same tokens, streamed as they come.
        v = mx.array(vector)
        block = self.parts.layers[layer]
        with tracer:
            for _ in tracer.iter[:n]:
                block.output = block.output + v
            generated = tracer.result.save()
        del generated

    # -- the model thread ---------------------------------------------------------------------------
    async def call(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` on the model thread, after every job submitted before it."""
        return await asyncio.wrap_future(self.worker.submit(fn, *args))

    def stream(self, fn: Callable[[Callable[[str], None]], None]) -> AsyncIterator[str]:
        """Run ``fn(emit)`` on the model thread; yield what it emits as it comes."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def work() -> None:
            try:
                fn(lambda text: loop.call_soon_threadsafe(queue.put_nowait, text))
            except Exception as exc:  # shown at the end of the stream: the headers are already sent
                loop.call_soon_threadsafe(queue.put_nowait, f"\n[error: {exc}]")
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        self.worker.submit(work)

        async def chunks() -> AsyncIterator[str]:
            while (item := await queue.get()) is not done:
                yield item

        return chunks()

    def close(self) -> None:
        self.worker.shutdown(wait=True)


ANALYSES = {"lens": "lens", "attention": "attention", "heads": "heads", "patching": "patching", "sae": "sae_features"}


async def _form(request: Request, limits: Limits) -> dict:
    # JSON only: a cross-site page cannot send it without a CORS preflight, which this app never grants
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadRequest("send the form as JSON (Content-Type: application/json)")
    size = request.headers.get("content-length")
    if size is not None and int(size) > limits.body_bytes:
        raise BadRequest(f"request body over {limits.body_bytes} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.body_bytes:
            raise BadRequest(f"request body over {limits.body_bytes} bytes")
    try:
        form = json.loads(body or b"{}")
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(form, dict):
        raise BadRequest("the body must be a JSON object")
    return form


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(model: str | Path | Callable[[], Any], *, sae: Any = None, limits: Limits = Limits(),
               model_name: str = "", allowed_hosts: Sequence[str] = LOOPBACK_NAMES) -> Starlette:
    """The Starlette app for ``model`` (a checkpoint path, or a function that loads an mlxsight
    ``LanguageModel``: it is called on the app's model thread); ``sae`` enables the SAE explorer.

    Requests must name one of ``allowed_hosts`` in their Host header (loopback by default, which keeps
    other web pages out through DNS rebinding); ``["*"]`` accepts any."""
    explorer = Explorer(model, sae=sae, limits=limits)
    available = explorer.available()
    pages = {k: v for k, v in shell.explorers(explorer.sae is not None, len(explorer.parts.layers)).items() if k in available}

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "index")
        if name != "index" and name not in pages:
            return HTMLResponse("not found", status_code=404)
        return HTMLResponse(shell.page(name, pages, model_name=model_name, n_layers=len(explorer.parts.layers)))

    async def analysis(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ANALYSES or name not in pages:
            return JSONResponse({"error": f"no explorer {name!r}"}, status_code=404)
        try:
            form = await _form(request, limits)
            html = await explorer.call(getattr(explorer, ANALYSES[name]), form)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"html": html})

    async def generate(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("generate", "steer") or (name == "steer" and "steering" not in pages):
            return JSONResponse({"error": f"no stream {name!r}"}, status_code=404)
        steer = name == "steer"
        try:
            form = await _form(request, limits)
            # validate before streaming starts, so bad input gets a 400 rather than a broken stream
            await explorer.call(_validate, explorer, form, steer)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        chunks = explorer.stream(lambda emit: explorer.generate(form, emit, steer=steer))
        return StreamingResponse(chunks, media_type="text/plain; charset=utf-8",
                                 headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        explorer.close()

    app = Starlette(routes=[
        Route("/", page),
        Route("/{name:str}", page),
        Route("/api/{name:str}", analysis, methods=["POST"]),
        Route("/stream/{name:str}", generate, methods=["POST"]),
    ], lifespan=lifespan, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))])
    app.state.explorer = explorer
    return app


def _validate(explorer: Explorer, form: dict, steer: bool) -> None:
    explorer.prompt(form)
    explorer.integer(form, "max_new_tokens", 48, 1, explorer.limits.new_tokens)
    explorer.number(form, "temperature", 0.0, 0.0, 2.0)
    if steer:
        explorer.layer(form)
        explorer.number(form, "scale", 4.0, -100.0, 100.0)
        explorer.prompt(form, "positive")
        explorer.prompt(form, "negative")
