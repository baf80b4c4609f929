"""Debian's Chromium driven by Playwright (no browser download: ``executable_path``).

Outside CI the browser tests skip, saying why, when /usr/bin/chromium is missing; in CI
(``CI=true``) a missing browser fails them: .ci/run installs it.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs it (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium to run the browser tests")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """One headless Chromium. Playwright gives every launch a fresh temporary profile (user data
    dir), and every ``new_context()`` its own cookies: one context per person of the story."""
    require_chromium()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


def artifacts_dir(fallback: Path) -> Path:
    """Where screenshots go: $MLA_ARTIFACTS/ui when set (CI keeps it), else a test folder."""
    root = os.environ.get("MLA_ARTIFACTS")
    folder = Path(root) / "ui" if root else fallback
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def sign_in(page: Page, base: str, token: str) -> None:
    await page.goto(base + "/ui/")
    assert re.search(r"/ui/signin", page.url)
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(re.compile(r"/ui/cases"))
