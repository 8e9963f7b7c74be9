from .transformers import LanguageModel  # noqa: F401

from .._surface import missing

__getattr__ = missing(__name__)
