"""A real browser for the view and app tests: Playwright driving Debian's Chromium (or Playwright's own).

Screenshots go to ``tmp/artifacts/`` at the repository root (``MLXSIGHT_ARTIFACTS`` overrides it);
with ``MLXSIGHT_DOCS_IMG=1`` they are also copied into ``docs/img/`` for the docs. The tests skip,
saying why, only where Chromium or Playwright is missing; under CI (``CI`` set) they fail instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("MLXSIGHT_ARTIFACTS", ROOT / "tmp" / "artifacts"))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason + "; .ci/run installs it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """Chromium: the system's (``chromium``, as Debian installs it), else Playwright's own build."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("browser tests need the playwright package (pip install -e '.[test]')")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        except Error as exc:
            b = None
            which = "Playwright's own build" if exe is None else exe
            reason = (f"browser tests need Chromium: apt-get install chromium (or playwright install chromium); "
                      f"launching {which} failed: {str(exc).splitlines()[0]}")
        if b is None:
            _unavailable(reason)
        yield b
        b.close()


class Page:
    """A browser page that records console errors and uncaught exceptions."""

    def __init__(self, browser, width: int = 1200, height: int = 800):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # an alert() would mean token text ran as script
        self.page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.page.close()

    def open_file(self, path: Path) -> None:
        self.page.goto(Path(path).resolve().as_uri())
        self.page.wait_for_selector(".mlxs[data-ready='1']", timeout=30_000)

    def screenshot(self, name: str, **kw) -> Path:
        path = artifact(f"{name}.png")
        self.page.screenshot(path=str(path), **kw)
        return publish(path)


def artifact(name: str) -> Path:
    """Where a test keeps the artifact ``name``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def publish(path: Path) -> Path:
    """Copy an artifact into docs/img/ when ``MLXSIGHT_DOCS_IMG=1`` (how the docs' pictures are made)."""
    if os.environ.get("MLXSIGHT_DOCS_IMG") == "1":
        (ROOT / "docs" / "img").mkdir(exist_ok=True)
        shutil.copy(path, ROOT / "docs" / "img" / path.name)
    return path
