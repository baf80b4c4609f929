"""Accessibility in the browser, page by page, in English and French: exactly one <h1>, heading
levels never skipped, a label for every visible field, alt on every image, a name on every link
and button (browserkit.accessibility_problems, run on the page as Chromium renders it); and the
sign-in form used with the keyboard alone (Tab, Enter), a wrong token first."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from mla_node.protocol import forms
from tests.netkit import Network
from tests.ui.browserkit import accessibility_problems, chromium, sign_in_by_keyboard

pytestmark = pytest.mark.asyncio(loop_scope="module")

# In the browser, English and French (the longest words); the four languages' markup is checked
# without a browser too (tests/ui/test_ui_pages.py).
LANGUAGES = ("en", "fr")
UNKNOWN = "01ARZ3NDEKTSV4RRFFQ69G5FAV"  # a well-formed id no message has


async def test_the_checks_catch_what_they_look_for(net: Network) -> None:
    """The checks themselves, on a page made to fail each of them."""
    async with chromium() as browser:
        page = await browser.new_page()
        await page.set_content(
            "<html><head><title>x</title></head><body><h2>a</h2><h1>b</h1><h1>c</h1><h4>d</h4>"
            '<input id="q"><select name="s"></select><label>Name <textarea></textarea></label>'
            '<input type="hidden" name="h"><img src="x.png"><a href="/x"></a><button></button>'
            '<input aria-label="Search"></body></html>'
        )
        problems = await accessibility_problems(page)
        assert "<html> has no lang" in problems
        assert "2 <h1> instead of one" in problems
        assert "the first heading is h2" in problems
        assert 'h1 then h4: "d"' in problems
        assert '<input id="q" name=""> has no label' in problems
        assert '<select id="" name="s"> has no label' in problems
        assert "an image without alt: x.png" in problems
        assert sum("without a name" in p for p in problems) == 2
        assert len(problems) == 9, problems  # the wrapped textarea and aria-label pass


async def test_every_page_is_accessible_and_sign_in_works_by_keyboard(
    net: Network, clerk_case: str
) -> None:
    ar = net["AR"]
    base = ar.runtime.clerk_url
    async with chromium() as browser:
        clerk = await (await browser.new_context()).new_page()
        # A wrong token first, by keyboard: the error is announced beside the field.
        await clerk.goto(base + "/ui/signin")
        assert await accessibility_problems(clerk) == []
        await clerk.keyboard.press("Tab")
        await clerk.keyboard.press("Enter")
        await clerk.keyboard.press("Tab")
        await expect(clerk.locator("#token")).to_be_focused()
        await clerk.keyboard.type("not-a-token")
        await clerk.keyboard.press("Enter")
        await expect(clerk.locator("#signin-error")).to_be_visible()
        await expect(clerk.locator("#token")).to_have_attribute("aria-invalid", "true")
        assert await accessibility_problems(clerk) == []
        await sign_in_by_keyboard(clerk, base, ar.tokens["clerk"])

        auditor = await (await browser.new_context()).new_page()
        await sign_in_by_keyboard(auditor, base, ar.tokens["auditor"])

        clerk_pages = [
            "/ui/cases",
            "/ui/cases?box=outbox&type=mla_request",
            "/ui/inbox",
            f"/ui/requests/{clerk_case}",
            f"/ui/requests/{clerk_case}?reply=withdrawal",
            "/ui/network",
            *(f"/ui/new?type={t}" for t in sorted(forms.REQUEST_TYPES)),
            "/ui/audit",  # refused to a clerk: the error page
            f"/ui/requests/{UNKNOWN}",  # not found: the error page
        ]
        auditor_pages = ["/ui/audit", "/ui/audit/verify", f"/ui/requests/{clerk_case}"]
        for lang in LANGUAGES:
            for page, paths in ((clerk, clerk_pages), (auditor, auditor_pages)):
                await page.goto(f"{base}/ui/cases?lang={lang}")
                for path in paths:
                    await page.goto(base + path)
                    await expect(page.locator("html")).to_have_attribute("lang", lang)
                    problems = await accessibility_problems(page)
                    assert problems == [], f"{path} ({lang}): {problems}"

        # A form sent back with its errors is checked too.
        await clerk.goto(f"{base}/ui/new?type=provisional_arrest&lang=en")
        await clerk.click("#submit-request")
        await expect(clerk.locator("#form-errors")).to_be_visible()
        assert await accessibility_problems(clerk) == []
        await clerk.goto(f"{base}/ui/requests/{clerk_case}")
        await clerk.click("#send-reply")
        await expect(clerk.locator("#reply-errors")).to_be_visible()
        assert re.search(r"/reply$", clerk.url)
        assert await accessibility_problems(clerk) == []
