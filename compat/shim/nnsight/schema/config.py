"""``nnsight.CONFIG``: the attributes scripts set or read; none changes mlxsight's behaviour."""

from types import SimpleNamespace


class _Config(SimpleNamespace):
    def set_default_api_key(self, key: str) -> None:
        self.API.APIKEY = key

    def set_default_app_debug(self, debug: bool) -> None:
        self.APP.DEBUG = debug

    def save(self) -> None:
        """nnsight writes its config file; the mlx backend keeps nothing."""


CONFIG = _Config(
    APP=SimpleNamespace(DEBUG=False, PYMOUNT=True, REMOTE_LOGGING=True, DISABLE_CPP_BACKTRACE=False),
    API=SimpleNamespace(HOST="https://api.ndif.us", APIKEY=None, COMPRESS=True),
)


from .._surface import missing  # noqa: E402

__getattr__ = missing(__name__)
