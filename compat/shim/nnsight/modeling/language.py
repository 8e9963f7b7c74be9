from nnsight import LanguageModel  # noqa: F401  (the shim's, which accepts HF tokenizers)
