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
from playwright.async_api import Browser, Page, async_playwright, expect

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


# What the accessibility check looks at in the page as Chromium rendered it (after CSS, so
# "visible" means what a sighted user sees): headings, labels, alt texts, names of controls.
_A11Y_SCRIPT = """() => {
  const problems = [];
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length)
    && getComputedStyle(el).visibility !== "hidden";
  const text = (el) => (el.textContent || "").replace(/\\s+/g, " ").trim();
  const lang = document.documentElement.getAttribute("lang");
  if (!lang) problems.push("<html> has no lang");
  if (!document.title.trim()) problems.push("the page has no title");
  const headings = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")];
  const h1 = headings.filter((h) => h.tagName === "H1");
  if (h1.length !== 1) problems.push(`${h1.length} <h1> instead of one`);
  let before = 0;
  for (const h of headings) {
    const level = Number(h.tagName[1]);
    if (before === 0 && level !== 1) problems.push(`the first heading is h${level}`);
    if (before !== 0 && level > before + 1) {
      problems.push(`h${before} then h${level}: "${text(h)}"`);
    }
    if (!text(h)) problems.push(`an empty h${level}`);
    before = level;
  }
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden" || !visible(el)) continue;
    const named = [...(el.labels || [])].some((l) => text(l))
      || (el.getAttribute("aria-label") || "").trim()
      || (el.getAttribute("aria-labelledby") || "").split(/\\s+/).some((id) => {
        const target = id && document.getElementById(id);
        return target && text(target);
      });
    const tag = el.tagName.toLowerCase();
    if (!named) problems.push(`<${tag} id="${el.id}" name="${el.name}"> has no label`);
  }
  for (const img of document.querySelectorAll("img, input[type=image]")) {
    if (!img.hasAttribute("alt")) problems.push(`an image without alt: ${img.getAttribute("src")}`);
  }
  for (const el of document.querySelectorAll("a[href], button")) {
    if (!visible(el)) continue;
    if (!text(el) && !(el.getAttribute("aria-label") || "").trim()) {
      problems.push(`a ${el.tagName.toLowerCase()} without a name: ${el.outerHTML.slice(0, 80)}`);
    }
  }
  return problems;
}"""


async def accessibility_problems(page: Page) -> list[str]:
    """What is wrong with the page shown, for people using a keyboard or a screen reader: not
    exactly one <h1>, a heading level skipped (h1 then h3), a visible field without a label
    (<label for>, a wrapping <label>, aria-label or aria-labelledby), an image without alt, a
    link or button without a name, no lang or title. Empty when all is well."""
    problems: list[str] = await page.evaluate(_A11Y_SCRIPT)
    return problems


async def assert_accessible(page: Page) -> None:
    problems = await accessibility_problems(page)
    assert not problems, f"{page.url}: {problems}"


async def sign_in_by_keyboard(page: Page, base: str, token: str) -> None:
    """Sign in with the keyboard alone: Tab to the skip link, Enter jumps past the header into
    the page's main part, Tab reaches the token field, the token is typed, Enter submits."""
    await page.goto(base + "/ui/signin")
    await page.keyboard.press("Tab")
    await expect(page.locator("a.skip")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.locator("#token")).to_be_focused()
    await page.keyboard.type(token)
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/ui/cases"))
