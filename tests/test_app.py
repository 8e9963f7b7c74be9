"""The web app (``python -m mlxsight serve``), started on a free loopback port and driven in Chromium.

The numbers on the pages are compared with the toolkit run directly on a second copy of the model;
concurrent requests must give the sequential answers; requests outside the limits are refused.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the web app needs the ui extra: pip install -e '.[ui]'")
pytest.importorskip("uvicorn", reason="the web app needs the ui extra: pip install -e '.[ui]'")

import httpx  # noqa: E402
import uvicorn  # noqa: E402

import mlxsight  # noqa: E402
from browser import Page, browser  # noqa: E402,F401  (fixture)
from mlxsight import tools  # noqa: E402
from mlxsight.app import create_app  # noqa: E402
from mlxsight.app.server import Limits  # noqa: E402

PROMPT = "Once upon a time, there was a little girl named Lily. She"


def sae_params(d_in=64, d_sae=48, seed=0):
    rng = np.random.default_rng(seed)
    return {"W_enc": rng.normal(size=(d_in, d_sae)).astype(np.float32) / 4,
            "b_enc": rng.normal(size=d_sae).astype(np.float32) / 4 - 0.5,
            "W_dec": rng.normal(size=(d_sae, d_in)).astype(np.float32) / 4,
            "b_dec": np.zeros(d_in, np.float32)}


def make_sae():
    import mlx.core as mx

    return tools.SAE("standard", {k: mx.array(v) for k, v in sae_params().items()},
                     site=tools.Site.parse("blocks.2.hook_resid_post"))


@pytest.fixture(scope="module")
def server(stories_path, tmp_path_factory):
    sae_dir = make_sae().save(tmp_path_factory.mktemp("sae"))  # loaded back as `serve --sae DIR` does
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    app = create_app(stories_path, sae=sae_dir, model_name="stories260k",
                     limits=Limits(body_bytes=4096, prompt_tokens=64, new_tokens=40))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "the app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def reference(stories_path):
    """A second copy of the model, on this thread: the toolkit run directly."""
    return mlxsight.LanguageModel(stories_path)


def continuation(model, prompt, n):
    ids = model.generate(prompt, max_new_tokens=n)
    ids = np.asarray(ids)[0].tolist()
    tok = model.tokenizer
    n_prompt = len(tok.encode(prompt))
    return tok.decode(ids, skip_special_tokens=True)[len(tok.decode(ids[:n_prompt], skip_special_tokens=True)):]


def stream(base, path, form):
    with httpx.stream("POST", base + path, json=form, timeout=120) as r:
        assert r.status_code == 200, r.read()
        return list(r.iter_text())


def test_index_lists_the_explorers_it_can_run(server):
    html = httpx.get(server + "/").text
    assert 'href="/playground"' in html and 'href="/sae"' in html
    for name in ("lens", "attention", "heads", "patching", "steering"):
        assert f'href="/{name}"' in html


def test_playground_streams_the_models_greedy_continuation(server, browser, reference):  # noqa: F811
    chunks = stream(server, "/stream/generate", {"prompt": "Once upon a time", "max_new_tokens": 24})
    assert len(chunks) > 3  # streamed piece by piece, not in one answer
    expected = continuation(reference, "Once upon a time", 24)
    assert "".join(chunks) == expected
    with Page(browser) as p:
        page = p.page
        page.goto(server + "/playground")
        page.fill("textarea[name=prompt]", PROMPT)
        page.fill("input[name=max_new_tokens]", "20")
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-state=done]", timeout=60_000)
        assert page.text_content("#out") == PROMPT + continuation(reference, PROMPT, 20)
        assert p.errors == []
        p.screenshot("app-playground")


def test_sae_explorer_shows_the_toolkits_activations(server, browser, reference):  # noqa: F811
    expected = tools.feature_activations(reference, make_sae(), PROMPT)
    with Page(browser, height=900) as p:
        page = p.page
        page.goto(server + "/sae")
        page.fill("textarea[name=prompt]", PROMPT)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-state=done]", timeout=60_000)
        frame = page.frame_locator("#out")
        frame.locator(".mlxs[data-ready='1']").wait_for()
        options = frame.locator("select option").evaluate_all("os => os.map(o => o.textContent)")
        assert [o.split()[0] for o in options] == [f"#{i}" for i in expected.feature_ids]
        for k in range(min(3, len(expected.feature_ids))):
            frame.locator("select").select_option(str(k))
            shown = frame.locator(".mlxs-tok").evaluate_all("es => es.map(e => +e.dataset.v)")
            np.testing.assert_allclose(shown, expected.acts[:, k], atol=5e-4)
        assert p.errors == []
        p.screenshot("app-sae", full_page=True)


def steered(reference, prompt, scale, n, layer=2):
    vector = tools.steering_vector(reference, "I am very happy and glad", "I am very sad and angry", layer)
    return tools.generate_steered(reference, prompt, vector, scales=[scale], max_new_tokens=n).texts[0]


def test_steering_streams_the_toolkits_steered_generation(server, browser, reference):  # noqa: F811
    form = {"positive": "I am very happy and glad", "negative": "I am very sad and angry", "layer": 2,
            "prompt": "Once upon a time", "scale": 2, "max_new_tokens": 24}
    chunks = stream(server, "/stream/steer", form)
    prefix = reference.tokenizer.decode(reference.tokenizer.encode("Once upon a time"), skip_special_tokens=True)
    expected = steered(reference, "Once upon a time", 2.0, 24)
    assert prefix + "".join(chunks) == expected
    assert expected != steered(reference, "Once upon a time", 0.0, 24)  # the vector does change the story
    with Page(browser) as p:
        page = p.page
        page.goto(server + "/steering")
        page.fill("input[name=max_new_tokens]", "24")
        page.fill("input[name=scale]", "-2")  # moving the slider regenerates
        page.wait_for_selector("body[data-state=done]", timeout=60_000)
        assert page.text_content("#out") == steered(reference, "Once upon a time", -2.0, 24)
        assert page.text_content("output[data-for=scale]") == "-2"
        assert p.errors == []
        p.screenshot("app-steering")


def check_lens(frame, reference):
    r = tools.logit_lens(reference, PROMPT, top_k=5)
    for i, j in [(0, 0), (len(r.layers) - 1, len(r.tokens) - 1), (2, 5)]:
        frame.locator(f"td[data-layer='{r.labels[i]}'][data-pos='{j}']").hover()
        lines = frame.locator(".mlxs-info").inner_text().splitlines()
        assert [float(x.rsplit(" ", 1)[1]) for x in lines[1:6]] == pytest.approx(r.top_probs[i, j].tolist(), abs=6e-5)


def check_patching(frame, reference, method="activation"):
    form = PATCHING
    metric = tools.logit_diff(reference.tokenizer.encode(form["good"], add_special_tokens=False)[0],
                              reference.tokenizer.encode(form["bad"], add_special_tokens=False)[0])
    sweep = getattr(tools, f"{method}_patching")
    r = sweep(reference, form["clean"], form["corrupted"], metric, component="resid", progress=False)
    shown = frame.locator("td[data-layer]").evaluate_all("es => es.map(e => +e.textContent)")
    np.testing.assert_allclose(np.array(shown).reshape(r.scores.shape), r.normalized, atol=0.0051)


def check_attention(frame, reference):
    r = tools.attention_patterns(reference, PROMPT)
    frame.locator("[data-strip='to'] .mlxs-tok[data-pos='4']").hover()
    to = frame.locator("[data-strip='to'] .mlxs-tok").evaluate_all("es => es.map(e => +e.dataset.v)")
    np.testing.assert_allclose(to, r.weights[0, 0, 4], atol=0.5 / 255 + 5e-4)


def check_heads(frame, reference):
    r = tools.head_scores(reference, "induction")
    assert frame.locator("ol li").first.text_content() == "L{}H{}  {:.4f}".format(*r.top(1)[0])


PATCHING = {"clean": "Once upon a time there was a girl named Lily. One day",
            "corrupted": "Once upon a time there was a girl named Tim. One day",
            "good": " Lily", "bad": " Tim", "component": "resid"}


@pytest.mark.parametrize("name,fn,check", [
    ("lens", "logit_lens", check_lens),
    ("attention", "attention_patterns", check_attention),
    ("heads", "head_scores", check_heads),
    ("patching", "activation_patching", check_patching),
    ("patching-attribution", "attribution_patching", lambda f, ref: check_patching(f, ref, "attribution")),
])
def test_analysis_explorers_show_the_toolkits_numbers(server, browser, reference, name, fn, check):  # noqa: F811
    with Page(browser, height=900) as p:
        page = p.page
        page.goto(f"{server}/{name.split('-')[0]}")  # the form's defaults: PROMPT, and PATCHING for patching
        if name == "patching-attribution":
            page.select_option("select[name=method]", "attribution")
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-state=done]", timeout=120_000)
        frame = page.frame_locator("#out")
        frame.locator(".mlxs[data-ready='1']").wait_for()
        check(frame, reference)
        assert p.errors == []
        p.screenshot(f"app-{name}", full_page=True)


def test_token_text_is_shown_as_text_in_the_explorers(server, browser):  # noqa: F811
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)> & Lily"
    with Page(browser, height=900) as p:
        page = p.page
        page.goto(server + "/lens")
        page.fill("textarea[name=prompt]", hostile)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-state=done]", timeout=60_000)
        frame = page.frame_locator("#out")
        frame.locator(".mlxs[data-ready='1']").wait_for()
        headers = "".join(frame.locator("tr").first.locator("th").all_text_contents())
        assert "<script>" in headers.replace(" ", "") and frame.locator("img").count() == 0
        page.goto(server + "/playground")
        page.fill("textarea[name=prompt]", hostile)
        page.fill("input[name=max_new_tokens]", "4")
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-state=done]", timeout=60_000)
        assert page.text_content("#out").startswith(hostile) and page.locator("#out img").count() == 0
        assert p.errors == []


def test_concurrent_requests_give_the_sequential_answers(server):
    prompts = ["Once upon a time", "The cat sat", "Lily and Tim went", "One day, a little"]
    forms = [{"prompt": q, "max_new_tokens": 16} for q in prompts]
    sae_forms = [{"prompt": q} for q in prompts]
    sequential = [stream(server, "/stream/generate", f) for f in forms]
    sequential_sae = [_no_uid(httpx.post(server + "/api/sae", json=f, timeout=60).json()["html"]) for f in sae_forms]
    with ThreadPoolExecutor(8) as pool:
        gens = [pool.submit(stream, server, "/stream/generate", f) for f in forms]
        saes = [pool.submit(lambda f: httpx.post(server + "/api/sae", json=f, timeout=60).json()["html"], f)
                for f in sae_forms]
        assert ["".join(g.result()) for g in gens] == ["".join(s) for s in sequential]
        assert [_no_uid(s.result()) for s in saes] == sequential_sae


def _no_uid(html):
    return re.sub(r"mlxs-[0-9a-f]{12}", "mlxs-uid", html)


@pytest.mark.parametrize("path,form,status,message", [
    ("/stream/generate", {"prompt": "Once", "max_new_tokens": 41}, 400, "max_new_tokens"),
    ("/stream/generate", {"prompt": "Once " * 80}, 400, "limit is 64"),
    ("/stream/generate", {"prompt": ""}, 400, "non-empty"),
    ("/api/sae", {"prompt": "x" * 5000}, 400, "over 4096 bytes"),
    ("/api/nothing", {}, 404, "no explorer"),
])
def test_requests_outside_the_limits_are_refused(server, path, form, status, message):
    r = httpx.post(server + path, json=form, timeout=30)
    assert r.status_code == status and message in r.json()["error"]


def test_cross_site_requests_are_refused(server):
    # a form or no-cors fetch from another site can only send "simple" bodies such as text/plain
    r = httpx.post(server + "/stream/generate", content=b'{"prompt": "Once"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and "application/json" in r.json()["error"]
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own name as Host
    r = httpx.post(server + "/stream/generate", json={"prompt": "Once"}, headers={"Host": "evil.example"})
    assert r.status_code == 400


def test_the_app_loads_the_model_on_its_own_thread(reference):
    with pytest.raises(TypeError, match="checkpoint path or a function"):
        create_app(reference)  # made on this thread: refused, with what to pass instead


def test_serve_without_the_ui_extra_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    from mlxsight import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert app.main([]) == 1
    assert "pip install 'mlxsight[ui]'" in capsys.readouterr().err


def test_serve_binds_to_loopback_by_default(monkeypatch):
    from mlxsight import app

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda a, host, port, **kw: seen.update(host=host, port=port))
    monkeypatch.setattr(app, "create_app", lambda *a, **kw: None)
    assert app.main(["--port", "8123"]) == 0
    assert seen == {"host": "127.0.0.1", "port": 8123}
