"""Conformance: nnsight 0.8.1's and nnterp 1.3.0's own test suites, run unchanged on both backends.

``sources`` fetches the published packages into a cache outside the repository, ``checkpoints``
builds an offline Hugging Face cache with the model ids and shapes their tests load, ``plugin``
makes ``import nnsight`` resolve to the chosen backend inside pytest, and ``run`` runs a suite on
both backends and writes the per-test table (``python -m conformance.run --help`` from ``tests/``).
"""
