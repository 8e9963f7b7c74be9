"""mlxsight.views: every result kind as a plot and as offline HTML, checked in a real browser.

Each view is saved to a file, opened from ``file://`` in Chromium with no console errors, driven
(hover, switch layer/head/feature/scale) and what the page shows is compared with the result object;
a screenshot of each is kept under ``tmp/artifacts/`` (see tests/browser.py).
"""

from __future__ import annotations

import base64
import re
import time
import zlib

import numpy as np
import pytest

import view_results as R
from browser import Page, artifact, browser, publish  # noqa: F401  (fixture)
from mlxsight import views
from mlxsight.views import page as page_module

KINDS = ["lens", "attention", "heads", "patching", "patching_heads", "steering", "scale_search", "sae",
         "attribution", "contexts"]


def make(kind):
    return getattr(R, kind)()


def decode(spec):
    """The Python twin of the page's MLXS.decode (to check the encoding, not the browser)."""
    q = np.frombuffer(zlib.decompress(base64.b64decode(spec["b64"])), np.uint8)
    values = spec["lo"] + q.astype(np.float64) * (spec["hi"] - spec["lo"]) / 255
    shape = spec["shape"]
    if not spec["tri"]:
        return values.reshape(shape)
    T = shape[-1]
    out = np.full((*shape[:-2], T, T), spec["lo"])
    out[(..., *np.tril_indices(T))] = values.reshape(*shape[:-2], -1)
    return out


# -- without a browser ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_html_is_one_offline_document_with_token_text_escaped(kind):
    html = make(kind).to_html() if hasattr(make(kind), "to_html") else views.to_html(make(kind))
    assert html.count("<script") == 1 and html.count("</script>") == 1  # the view's own, and no token's
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched
    assert "<link" not in html and "@import" not in html


@pytest.mark.parametrize("kind", KINDS)
def test_plot_returns_a_figure(kind):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = views.plot(make(kind))
    assert isinstance(fig, Figure) and fig.axes
    assert fig.axes[0].images or fig.axes[0].texts or fig.axes[0].lines
    fig.savefig(artifact(f"plot-{kind}.png"), dpi=72)
    publish(artifact(f"plot-{kind}.png"))


def test_results_without_a_view_show_their_fields():
    r = R.steering_vector()
    html = r._repr_html_()
    assert "SteeringVector" in html and "shape [64], float32" in html and "<td>2</td>" in html
    with pytest.raises(TypeError, match="no plot"):
        r.plot()


def test_plot_draws_into_a_given_axes():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert views.plot(R.heads(), ax=ax) is fig
    shown = ax.get_images()[0].get_array()
    np.testing.assert_allclose(shown, R.heads().scores)


@pytest.mark.parametrize("shape,causal", [((2, 3, 7, 7), True), ((2, 3, 7, 7), False), ((5, 4), False)])
def test_encoded_arrays_decode_within_half_a_step(shape, causal):
    a = np.random.default_rng(1).uniform(size=shape).astype(np.float32)
    if causal:
        a = np.tril(a)
    spec = page_module.encode_array(a, 0.0, 1.0)
    assert spec["tri"] is causal
    np.testing.assert_allclose(decode(spec), a, atol=0.5 / 255 + 1e-7)


def test_unknown_results_are_refused_with_the_known_kinds():
    with pytest.raises(TypeError, match="LensResult"):
        views.to_html(object())


def test_results_render_through_their_own_methods(tmp_path):
    result = R.lens()
    assert result._repr_html_().startswith("<!DOCTYPE html>")
    path = result.save_html(tmp_path / "lens.html")
    assert path.read_text(encoding="utf-8").count('class="mlxs"') == 1


# -- in the browser --------------------------------------------------------------------------------

def open_view(browser, tmp_path, result, name, **kw):  # noqa: F811
    path = views.save_html(result, tmp_path / f"{name}.html")
    page = Page(browser, **kw)
    page.open_file(path)
    return page


def test_views_inserted_as_notebook_outputs_stay_apart(browser):  # noqa: F811
    """Two outputs inserted the way Jupyter does (innerHTML, then each script re-created in place)."""
    outputs = [views.to_html(R.heads()), views.to_html(R.attention())]
    with Page(browser) as p:
        page = p.page
        page.set_content("<html><body><div id=nb></div></body></html>")
        page.evaluate("""outputs => outputs.forEach(html => {
            const host = document.createElement("div"); host.innerHTML = html;
            document.getElementById("nb").appendChild(host);
            host.querySelectorAll("script").forEach(old => {
                const s = document.createElement("script"); s.textContent = old.textContent;
                old.parentNode.replaceChild(s, old);
            });
        })""", outputs)
        page.wait_for_function("document.querySelectorAll(\".mlxs[data-ready='1']\").length === 2")
        assert page.locator(".mlxs[data-view=heads] td[data-head]").count() == R.heads().scores.size
        assert page.locator(".mlxs[data-view=attention] figure").count() == R.attention().weights.shape[1] + 1
        assert p.errors == []


def test_lens_cells_show_top_tokens_and_probabilities(browser, tmp_path):  # noqa: F811
    r = R.lens()
    with open_view(browser, tmp_path, r, "lens") as p:
        page = p.page
        for layer, pos in [(0, 0), (2, 3), (3, 7)]:
            page.hover(f"td[data-layer='{layer}'][data-pos='{pos}']")
            lines = page.inner_text(".mlxs-info").splitlines()
            assert lines[0].startswith(f"layer {layer}, position {pos}")
            for rank in range(3):
                token, prob = r.top_tokens[layer][pos][rank], float(r.top_probs[layer, pos, rank])
                assert lines[1 + rank] == f'{rank + 1}. {json_str(token)} {prob:.4f}'
            nll, rk = float(r.target_nll[layer, pos]), int(r.target_rank[layer, pos])
            assert lines[4] == f"target: p {np.exp(-nll):.4f}, nll {nll:.4f}, rank {rk}"
        # the cell text is the top-1 token, with the hostile one shown as text
        cell = page.text_content("td[data-layer='1'][data-pos='2']")
        assert cell == page_module.display_token(r.top_tokens[1][2][0])
        assert page.locator("th", has_text="<script>alert(1)</script>").count() == 1
        page.select_option("select", "target")
        page.hover("td[data-layer='2'][data-pos='3']")
        assert p.errors == []
        p.screenshot("view-lens", full_page=True)


def test_lens_of_chosen_positions_labels_the_columns_by_input_position(browser, tmp_path):  # noqa: F811
    full = R.lens()
    keep = [2, 5, 7]
    r = R.LensResult(**{**vars(full), "probs": full.probs[:, keep], "top_ids": full.top_ids[:, keep],
                        "top_probs": full.top_probs[:, keep], "top_tokens": [[row[p] for p in keep] for row in full.top_tokens],
                        "target_nll": full.target_nll[:, keep], "target_rank": full.target_rank[:, keep],
                        "positions": keep})
    with open_view(browser, tmp_path, r, "lens-positions") as p:
        page = p.page
        headers = page.eval_on_selector_all("tr:first-child th", "es => es.map(e => e.textContent)")[1:]
        assert headers == [page_module.display_token(R.TOKENS[q]) for q in keep]
        page.hover("td[data-layer='1'][data-pos='5']")
        lines = page.inner_text(".mlxs-info").splitlines()
        assert lines[0] == f"layer 1, position 5 {json_str(R.TOKENS[5])}"
        assert lines[1] == f"1. {json_str(full.top_tokens[1][5][0])} {float(full.top_probs[1, 5, 0]):.4f}"
        assert p.errors == []


def test_attention_hover_shows_both_directions_and_switches_heads(browser, tmp_path):  # noqa: F811
    r = R.attention()
    w = r.weights
    with open_view(browser, tmp_path, r, "attention") as p:
        page = p.page
        page.select_option("label:has-text('layer') select", "1")
        page.click("figure[data-head='2']")
        page.hover("[data-strip='to'] .mlxs-tok[data-pos='5']")
        to = [float(x) for x in page.eval_on_selector_all("[data-strip='to'] .mlxs-tok", "es => es.map(e => e.dataset.v)")]
        frm = [float(x) for x in page.eval_on_selector_all("[data-strip='from'] .mlxs-tok", "es => es.map(e => e.dataset.v)")]
        np.testing.assert_allclose(to, w[1, 2, 5, :], atol=0.5 / 255 + 5e-4)
        np.testing.assert_allclose(frm, w[1, 2, :, 5], atol=0.5 / 255 + 5e-4)
        info = page.inner_text(".mlxs-info")
        assert info.startswith("layer 1, head 2")
        best = int(np.argmax(w[1, 2, 5]))
        assert f'attends to: {json_str(R.TOKENS[best].replace(chr(0x2581), " "))}@{best}' in info
        p.screenshot("view-attention", full_page=True)
        page.select_option("label:has-text('head') select", "-1")  # mean of heads
        page.hover("[data-strip='to'] .mlxs-tok[data-pos='3']")
        to = [float(x) for x in page.eval_on_selector_all("[data-strip='to'] .mlxs-tok", "es => es.map(e => e.dataset.v)")]
        np.testing.assert_allclose(to, w[1, :, 3, :].mean(0), atol=0.5 / 255 + 5e-4)
        assert page.locator(".mlxs-tok", has_text="<script>alert(1)</script>").count() == 2
        assert p.errors == []


def test_heads_grid_and_top_list(browser, tmp_path):  # noqa: F811
    r = R.heads()
    with open_view(browser, tmp_path, r, "heads") as p:
        page = p.page
        page.hover("td[data-layer='2'][data-head='4']")
        assert page.inner_text(".mlxs-info") == f"layer 2, head 4\ninduction {r.scores[2, 4]:.4f}"
        top = page.eval_on_selector_all("ol li", "es => es.map(e => e.textContent)")
        assert top[:5] == [f"L{layer}H{head}  {score:.4f}" for layer, head, score in r.top(5)]
        page.hover("td[data-layer='2'][data-head='4']")
        assert p.errors == []
        p.screenshot("view-heads", full_page=True)


def test_patching_heatmap_with_token_labels(browser, tmp_path):  # noqa: F811
    r = R.patching()
    with open_view(browser, tmp_path, r, "patching") as p:
        page = p.page
        headers = page.eval_on_selector_all("tr:first-child th", "es => es.map(e => e.textContent)")[1:]
        assert headers == [page_module.display_token(t) for t in R.TOKENS]
        cell = "td[data-layer='1'][data-col='3']"
        assert page.inner_text(cell) == f"{r.normalized[1, 3]:.2f}"
        page.hover(cell)
        info = page.inner_text(".mlxs-info").splitlines()
        assert info[1:] == [f"logit_diff {r.scores[1, 3]:.4f}", f"normalised {r.normalized[1, 3]:.4f}"]
        page.select_option("select", "scores")
        assert page.inner_text(cell) == f"{r.scores[1, 3]:.2f}"
        page.select_option("select", "norm")
        page.hover(cell)
        assert p.errors == []
        p.screenshot("view-patching", full_page=True)


def test_patching_per_position_heads_pick_a_head(browser, tmp_path):  # noqa: F811
    r = R.patching_heads()
    with open_view(browser, tmp_path, r, "patching-heads") as p:
        page = p.page
        page.select_option("label:has-text('head') select", "2")
        cell = "td[data-layer='1'][data-col='4']"
        assert page.inner_text(cell) == f"{r.normalized[1, 4, 2]:.2f}"
        page.hover(cell)
        assert page.inner_text(".mlxs-info").splitlines()[1] == f"logit_diff {r.scores[1, 4, 2]:.4f}"
        assert p.errors == []


def test_steering_slider_picks_the_scale(browser, tmp_path):  # noqa: F811
    r = R.steering()
    with open_view(browser, tmp_path, r, "steering") as p:
        page = p.page
        for i, scale in enumerate(r.scales):
            page.fill("input[type=range]", str(i))
            assert page.inner_text(".mlxs-ctrl b").strip() == f"{scale:g}"
            assert page.inner_text(".mlxs-text") == r.texts[i]
        assert p.errors == []
        page.fill("input[type=range]", "0")
        p.screenshot("view-steering", full_page=True)


def test_sae_features_highlight_the_text(browser, tmp_path):  # noqa: F811
    r = R.sae()
    with open_view(browser, tmp_path, r, "sae") as p:
        page = p.page
        k = 2
        page.select_option("select", str(k))
        shown = [float(x) for x in page.eval_on_selector_all(".mlxs-tok", "es => es.map(e => e.dataset.v)")]
        np.testing.assert_allclose(shown, r.acts[:, k], atol=5e-4)
        page.hover(".mlxs-tok[data-pos='6']")
        lines = page.inner_text(".mlxs-info").splitlines()
        order = [j for j in np.argsort(-r.acts[6], kind="stable") if r.acts[6, j] > 0]
        assert lines[1:] == [f"#{r.feature_ids[j]} {r.acts[6, j]:.3f}" for j in order]
        assert p.errors == []
        p.screenshot("view-sae", full_page=True)


def big_attention(source, stories_path):
    """12 layers x 12 heads x 256 tokens: random causal softmaxes, or the bundled model's real patterns
    (its 5 x 8 heads on a 256-token story, tiled to 144; deflate sees each matrix on its own)."""
    if source == "random":
        return R.attention(n_layers=12, n_heads=12, tokens=[f"t{i}" for i in range(256)])
    import mlxsight
    from mlxsight import tools

    model = mlxsight.LanguageModel(stories_path)
    text = " ".join(["Once upon a time, there was a little girl named Lily. She liked to play outside in the sun."] * 20)
    ids = model.tokenizer.encode(text)[:256]
    real = tools.attention_patterns(model, ids)
    w = np.asarray(real.weights).reshape(-1, 256, 256)
    w = np.stack([w[i % len(w)] for i in range(144)]).reshape(12, 12, 256, 256)
    return R.AttentionPatterns(weights=w, layers=list(range(12)), tokens=real.tokens, input_ids=ids)


def test_attribution_is_signed_with_the_error_term(browser, tmp_path):  # noqa: F811
    r = R.attribution()
    ids = [i for i, _ in r.top(20)]
    with open_view(browser, tmp_path, r, "attribution") as p:
        page = p.page
        options = page.eval_on_selector_all("select option", "os => os.map(o => o.textContent.split(' ')[0])")
        assert sorted(options) == sorted([f"#{i}" for i in ids] + ["SAE"])
        page.select_option("select", str(len(ids)))  # the error term
        shown = page.eval_on_selector_all(".mlxs-tok", "es => es.map(e => +e.dataset.v)")
        np.testing.assert_allclose(shown, r.error_scores, atol=5e-4)
        page.hover(".mlxs-tok[data-pos='4']")
        lines = page.inner_text(".mlxs-info").splitlines()[1:]
        row = np.append(r.scores[4, ids], r.error_scores[4])
        names = [f"#{i}" for i in ids] + ["SAE error"]
        order = sorted(range(len(row)), key=lambda k: -abs(row[k]))[:8]
        assert lines == [f"{names[k]} {row[k]:.3f}" for k in order]
        assert p.errors == []
        p.screenshot("view-attribution", full_page=True)


def test_top_contexts_shade_each_window(browser, tmp_path):  # noqa: F811
    r = R.contexts()
    with open_view(browser, tmp_path, r, "contexts") as p:
        page = p.page
        for j in range(3):
            page.select_option("select", str(j))
            rows = page.locator("[data-rank]")
            n = int(np.isfinite(r.values[j]).sum())
            assert rows.count() == n
            for rank in range(n):
                shown = rows.nth(rank).locator(".mlxs-tok").evaluate_all("es => es.map(e => +e.dataset.v)")
                np.testing.assert_allclose(shown, r.window_acts[j][rank], atol=5e-4)
                assert rows.nth(rank).locator(".mlxs-tok.sel").count() == 1
                assert rows.nth(rank).locator(".mlxs-sub").text_content().startswith(f"{r.values[j, rank]:.3f}")
        page.select_option("select", "1")
        page.hover("[data-rank='0'] .mlxs-tok >> nth=2")
        assert p.errors == []
        p.screenshot("view-contexts", full_page=True)


def test_scale_search_lists_its_evaluations(browser, tmp_path):  # noqa: F811
    r = R.scale_search()
    with open_view(browser, tmp_path, r, "scale-search") as p:
        page = p.page
        rows = page.eval_on_selector_all("tr", "es => es.slice(1).map(e => e.textContent)")
        assert rows == [f"{i + 1}{s:g}{v:.4f}" for i, (s, v) in enumerate(r.evaluations)]
        assert page.locator("svg circle").count() == len(r.evaluations)
        assert p.errors == []
        p.screenshot("view-scale-search", full_page=True)


@pytest.mark.parametrize("source", ["random", "stories260k"])
def test_attention_12_layers_12_heads_256_tokens_size_and_first_render(browser, tmp_path, stories_path, source):  # noqa: F811
    r = big_attention(source, stories_path)
    start = time.perf_counter()
    path = views.save_html(r, tmp_path / "attention-big.html")
    encode_s = time.perf_counter() - start
    size = path.stat().st_size
    with Page(browser) as p:
        start = time.perf_counter()
        p.open_file(path)
        render_s = time.perf_counter() - start
        assert p.errors == []
        # the page holds the right numbers after the round trip through the encoding
        p.page.select_option("label:has-text('layer') select", "11")
        p.page.click("figure[data-head='7']")
        p.page.hover("[data-strip='to'] .mlxs-tok[data-pos='200']")
        to = p.page.eval_on_selector_all("[data-strip='to'] .mlxs-tok", "es => es.map(e => +e.dataset.v)")
        np.testing.assert_allclose(to, r.weights[11, 7, 200], atol=0.5 / 255 + 5e-4)
    line = (f"attention 12x12x256 ({source}): file {size} bytes ({size / 1e6:.2f} MB), written in {encode_s:.2f} s, "
            f"first render (file:// load to ready) {render_s:.2f} s")
    print("\n" + line)
    with open(artifact("attention-12x12x256.txt"), "a") as f:
        f.write(line + "\n")
    assert size < 8e6  # the render time is reported, not asserted (speed targets live in the bench)


def json_str(text):
    import json

    return json.dumps(page_module.display_token(text))
