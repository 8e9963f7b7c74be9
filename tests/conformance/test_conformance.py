"""A representative subset of nnsight 0.8.1's and nnterp 1.3.0's own tests, run unchanged on both
backends (the full run is ``python -m conformance.run``, see docs/compatibility.md).

Each id must pass on real nnsight (so a broken harness cannot pass vacuously) and on mlxsight.
The packages come from PyPI at test time; without network access the tests skip.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from conformance import run, sources

pytestmark = pytest.mark.conformance

NNSIGHT = [
    "tests/test_language.py::TestActivationModification::test_inplace_zeroing",
    "tests/test_language.py::TestAttnImplementation::test_set_env_switches_the_implementation",
    "tests/test_language.py::TestCache::test_cache_captures_intervention",
    "tests/test_language.py::TestCustomEnvoys::test_custom_eproperty_reads_per_head_view",
    "tests/test_language.py::TestGeneration::test_generator_output_matches_result",
    "tests/test_language.py::TestLanguageModel::test_invokes_generate_per_prompt",
    "tests/test_language.py::TestModernDecoder::test_batched_narrowing",
    "tests/test_language.py::TestRename::test_leading_dot_module_list",
    "tests/test_language.py::TestSession::test_cross_trace_value_flow",
    "tests/test_language.py::TestTokenization::test_unequal_length_list_is_padded",
    "tests/test_chat.py::TestChat::test_trace_list_of_conversations",
]
NNTERP = [
    "nnterp/tests/test_interventions.py::test_logit_lens[gpt2]",
    "nnterp/tests/test_model_renaming.py::test_standardized_transformer_steer_method[Maykeye/TinyLLama-v0]",
    "nnterp/tests/test_prompt_utils.py::test_run_prompts[yujiepan/llama-2-tiny-random]",
]


def fetched(fetch):
    try:
        return fetch()
    except (subprocess.SubprocessError, OSError) as e:
        if os.environ.get("CI"):  # CI reaches PyPI: a failed fetch there must not pass as a skip
            raise
        pytest.skip(f"could not fetch the package from PyPI: {e}")


@pytest.mark.parametrize("suite, ids, fetch", [("nnsight", NNSIGHT, sources.nnsight_tests),
                                               ("nnterp", NNTERP, sources.nnterp_package)])
def test_subset_passes_on_both_backends(suite, ids, fetch, tmp_path):
    fetched(fetch)
    results = run.run_backends(suite, tmp_path, ids, None, timeout=900)
    failures = []
    for nodeid in ids:
        for backend in run.BACKENDS:
            got = results[backend].get(run.junit_name(nodeid), {"outcome": "not run", "message": ""})
            if got["outcome"] != "passed":
                failures.append(f"{backend}: {nodeid}: {got['outcome']}: {got['message']}")
    log = {b: (tmp_path / f"{b}.log").read_text()[-2000:] for b in run.BACKENDS if (tmp_path / f"{b}.log").exists()}
    assert not failures, "\n".join(failures) + "\n" + "\n".join(f"--- {b} log tail\n{t}" for b, t in log.items())


# Pages of nnsight 0.8.1's published documentation whose code blocks (run unchanged, notebook-style)
# must give mlxsight the same saved values as nnsight; the full run is `python -m conformance.docs`.
DOC_PAGES = ["docs/usage/generate.md", "docs/usage/invoke-and-batching.md", "docs/usage/save.md",
             "docs/patterns/logit-lens.md"]


def test_documentation_examples_match_nnsight(tmp_path):
    from conformance import docs

    found = docs.pages(fetched(sources.nnsight_tests))
    failures = []
    for page in DOC_PAGES:
        folder = tmp_path / page.replace("/", "__")
        docs.write_page(found[page], folder)
        sides = docs.run_sides(folder, timeout=600)
        rows = docs.judge(folder, len(found[page]), sides)
        ran = [r for r in rows if r["nnsight"] == "ok"]
        if not ran:
            failures.append(f"{page}: no block ran on nnsight (the harness is broken)")
        failures += [f"{page} block {r['block']}: {r['reason']}" for r in ran if not r["passed"]]
    assert not failures, "\n".join(failures)
