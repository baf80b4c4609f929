"""The whole story in a real headless Chromium across two real nodes.

A clerk in Argentina submits an MLA request with an evidence file; Brazil's clerk sees it unread
in the inbox, opens it (retrieved), acknowledges it and asks for additional information;
Argentina's clerk supplements; Brazil returns an execution result; Argentina sees the complete
timeline with verified receipts; an auditor exports the case's bundle and verifies it by upload.
Screenshots of every page are kept (``MLA_ARTIFACTS``, see tests/ui/browserkit.py).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.async_api import FilePayload, Page, expect

from tests.netkit import Network
from tests.ui.browserkit import (
    artifacts_dir,
    assert_accessible,
    chromium,
    sign_in,
    sign_in_by_keyboard,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MLA_FORM = {
    "#f-case_reference": "FCR 4417/2024",
    "#f-offence": "Money laundering (Criminal Code of Argentina, art. 303).",
    "#f-summary_of_facts": "Transfers through accounts of Delta Trading Ltda. in São Paulo.",
    "#f-proceeding": "Investigation FCR 4417/2024, Federal Prosecutor's Office No. 3.",
    "#f-facts_of_request": "Eleven transfers reached account 0001-22334-5 at Banco Exemplo.",
    "#f-act_giving_rise": "Order of Federal Criminal Court No. 7 of 12 August 2024.",
    "#f-assistance_sought-0-description": "Statements 2021-2023 of every account of Delta.",
    "#f-stated_purpose": "Investigation FCR 4417/2024 and any trial arising from it.",
    "#f-contact_officer-name": "Lucía Fernández",
    "#f-contact_officer-email": "lucia.fernandez@cooperacion.example",
    "#f-contact_officer-phone": "+54 11 5555 0100",
}


async def shot(page: Page, folder: Path, name: str) -> None:
    """Every page the story reaches is kept as a screenshot, and checked for accessibility
    (one h1, no skipped heading level, labels, alt texts: browserkit.accessibility_problems)."""
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    await assert_accessible(page)


async def reload_until(page: Page, selector: str, within_s: float = 20.0) -> None:
    """Server-rendered pages: reload until what another node sent shows up."""
    deadline = time.monotonic() + within_s
    while await page.locator(selector).count() == 0:
        assert time.monotonic() < deadline, f"{selector} did not appear on {page.url}"
        await page.wait_for_timeout(200)
        await page.reload()


async def test_the_whole_story(net: Network, tmp_path: Path) -> None:
    shots = artifacts_dir(tmp_path / "screenshots")
    ar, br = net["AR"], net["BR"]
    ar_url, br_url = ar.runtime.clerk_url, br.runtime.clerk_url
    async with chromium() as browser:
        lucia = await (await browser.new_context(accept_downloads=True)).new_page()
        joao = await (await browser.new_context()).new_page()
        auditor = await (await browser.new_context(accept_downloads=True)).new_page()

        # Argentina's clerk signs in and fills in a new MLA request.
        await lucia.goto(ar_url + "/ui/signin")
        await shot(lucia, shots, "01-signin")
        # By keyboard alone: the skip link comes first and jumps past the header (the language
        # picker), the next Tab reaches the token field, Enter signs in.
        await sign_in_by_keyboard(lucia, ar_url, ar.tokens["clerk"])
        await lucia.goto(ar_url + "/ui/new?type=mla_request")
        await expect(lucia.locator("h1")).to_have_count(1)

        # A first try with the form left empty: the schema's errors, next to their fields.
        await lucia.select_option("#f-to", "BR")
        await lucia.click("#submit-request")
        await expect(lucia.locator("#form-errors")).to_be_visible()
        await expect(lucia.locator("#f-case_reference-error")).to_have_text(
            "This field is required."
        )
        await expect(lucia.locator("#f-case_reference")).to_have_attribute("aria-invalid", "true")
        await shot(lucia, shots, "02-new-request-errors")

        for selector, value in MLA_FORM.items():
            await lucia.fill(selector, value)
        await lucia.select_option("#f-assistance_sought-0-kind", "documents_and_records")
        await lucia.select_option("#f-language", "es")
        # The evidence file, uploaded with a progress bar.
        evidence: FilePayload = {
            "name": "extractos.pdf",
            "mimeType": "application/pdf",
            "buffer": b"%PDF-1.7 " + b"records " * 20000,
        }
        await lucia.set_input_files("#file", files=[evidence])
        await lucia.click("#upload-button")
        await expect(lucia.locator("#uploaded li[data-id]")).to_have_count(1)
        await expect(lucia.locator("#upload-progress")).to_have_attribute("value", "100")
        await shot(lucia, shots, "03-new-request-filled")
        await lucia.click("#submit-request")
        await lucia.wait_for_url(re.compile(r"/ui/requests/[0-9A-Z]{26}\?sent=new"))
        request_id = re.search(r"/requests/([0-9A-Z]{26})", lucia.url).group(1)  # type: ignore[union-attr]
        await expect(lucia.locator(".use-restriction")).to_contain_text("FCR 4417/2024")
        await expect(lucia.locator(".files li")).to_contain_text("extractos.pdf")
        await shot(lucia, shots, "04-request-sent")

        # Brazil's clerk: the request is in the inbox, unread.
        await sign_in(joao, br_url, br.tokens["clerk"])
        await joao.goto(br_url + "/ui/inbox")
        row = f'tr[data-id="{request_id}"]'
        await reload_until(joao, row)
        await expect(joao.locator(row)).to_have_class("unread")
        await shot(joao, shots, "05-inbox-unread")
        await joao.click(f"{row} a")
        await expect(joao.locator("#status")).to_have_text("retrieved")
        await expect(joao.locator('tr[data-event="retrieved"]')).to_have_count(1)
        await shot(joao, shots, "06-request-received")

        # It acknowledges, then asks for additional information.
        await joao.click("#acknowledge")
        await joao.wait_for_url(re.compile(r"sent=ack"))
        await expect(joao.locator("#acknowledge")).to_have_count(0)
        await joao.fill("#f-information_needed", "Certified copies of the court order.")
        await joao.fill("#f-reason", "Brazilian banks release records on a certified order.")
        await joao.click("#send-reply")
        await joao.wait_for_url(re.compile(r"sent=reply"))
        await expect(joao.locator('.thread li[data-type="additional_info_request"]')).to_have_count(
            1
        )

        # Argentina supplements.
        await lucia.goto(ar_url + f"/ui/requests/{request_id}")
        await reload_until(lucia, '.thread li[data-type="additional_info_request"]')
        # An empty supplement first: the error sits beside its field.
        await lucia.click("#send-reply")
        await expect(lucia.locator("#f-text-error")).to_be_visible()
        await lucia.fill("#f-text", "The certified order of 12 August 2024 is attached.")
        await lucia.click("#send-reply")
        await lucia.wait_for_url(re.compile(r"sent=reply"))

        # Brazil returns the execution result.
        await joao.goto(br_url + f"/ui/requests/{request_id}?reply=execution_result")
        await reload_until(joao, '.thread li[data-type="supplement"]')
        await joao.goto(br_url + f"/ui/requests/{request_id}?reply=execution_result")
        await joao.select_option("#f-extent", "full")
        await joao.fill("#f-summary", "The bank's certified statements are delivered.")
        await joao.click("#send-reply")
        await joao.wait_for_url(re.compile(r"sent=reply"))
        await shot(joao, shots, "07-requested-side-thread")

        # Argentina sees the whole case, every record and the receipt verified.
        await lucia.goto(ar_url + f"/ui/requests/{request_id}")
        await reload_until(lucia, '.thread li[data-type="execution_result"]')
        for event in ("submitted", "delivered", "acknowledged"):
            await expect(lucia.locator(f'tr[data-event="{event}"]')).to_have_count(1)
        assert await lucia.locator("tr.evidence td.bad").count() == 0
        await expect(lucia.locator("dd.ok")).to_contain_text("BR")
        await lucia.goto(ar_url + "/ui/cases")
        await expect(lucia.locator(f'tr[data-case="{request_id}"] .state')).to_have_text("Executed")
        await shot(lucia, shots, "08-cases")
        await lucia.goto(ar_url + f"/ui/requests/{request_id}")
        await shot(lucia, shots, "09-request-complete")

        # An auditor exports the bundle and verifies it by upload.
        await sign_in(auditor, ar_url, ar.tokens["auditor"])
        await auditor.goto(ar_url + f"/ui/requests/{request_id}")
        async with auditor.expect_download() as info:
            await auditor.click(f'a[href="/ui/bundles/{request_id}"]')
        bundle = tmp_path / "case.bundle.json"
        await (await info.value).save_as(bundle)
        await auditor.goto(ar_url + "/ui/audit")
        await expect(auditor.locator('tr[data-event="exported"]')).not_to_have_count(0)
        await shot(auditor, shots, "10-audit")
        await auditor.goto(ar_url + "/ui/audit/verify")
        await auditor.set_input_files("#bundle", str(bundle))
        await auditor.click("#verify-button")
        await expect(auditor.locator("#verdict")).to_have_class(re.compile(r"\bok\b"))
        await expect(auditor.locator("#verdict h2")).to_have_text("The bundle verifies.")
        await shot(auditor, shots, "11-verify-ok")

        # In Spanish, the same page.
        await auditor.goto(ar_url + "/ui/network?lang=es")
        await expect(auditor.locator("html")).to_have_attribute("lang", "es")
        await expect(auditor.locator("h1")).to_have_text("Red")
        await expect(auditor.locator('tr[data-peer="BR"]')).to_contain_text("Accesible")
        await shot(auditor, shots, "12-network-es")
