"""Headless Chromium for the live tests: the system browser (`/usr/bin/chromium`, `make chromium`) driven
by the pip `playwright` package through `executable_path`, never a downloaded `playwright install` build,
and screenshots kept under `.tracemill/screenshots` where a person (or CI's artifact upload) finds them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = REPO_ROOT / ".tracemill" / "screenshots"
UI_TIMEOUT_MS = 60_000  # a page's data arrives after its shell; on two busy cores that can take a while


@contextmanager
def chromium_page(name: str, width: int = 1600, height: int = 1000) -> Iterator[Any]:
    """A fresh page in a headless system Chromium, closed afterwards; skips where there is no browser.
    When the block fails, what the page showed is kept as `<name>-failed.png` next to the screenshots."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Chromium is not installed and `apt-get install -y chromium` was not possible here "
                    "(`make test` tries it); the browser check needs a system Chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[dev]'")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(UI_TIMEOUT_MS)
            try:
                yield page
            except BaseException:
                if SHOTS.parent.is_dir():
                    SHOTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(SHOTS / f"{name}-failed.png"))
                raise
        finally:
            browser.close()


def screenshot(page: Any, directory: Path, name: str) -> Path:
    """The page as a PNG in `directory`, copied to `.tracemill/screenshots` when the checkout has one."""
    page.wait_for_timeout(1500)  # not synchronisation (the caller waited for its elements): layout settling
    shot = directory / name
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000, f"{name}: a blank page"
    if SHOTS.parent.is_dir():
        SHOTS.mkdir(exist_ok=True)
        shutil.copy(shot, SHOTS / shot.name)
    return shot
