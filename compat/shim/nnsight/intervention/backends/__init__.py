from ..._surface import missing

__getattr__ = missing(__name__)
