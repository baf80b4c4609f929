"""Every page, in English and Spanish: a lang attribute, one h1, headings that do not skip a
level, a label for every field; and the Spanish catalog covers every English entry."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from mla_node.protocol import forms
from mla_node.ui import i18n
from tests.netkit import Network
from tests.ui.conftest import browser

pytestmark = pytest.mark.asyncio(loop_scope="module")

FIELDS = ("input", "select", "textarea")


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.headings: list[int] = []
        self.fields: list[str | None] = []
        self.labels: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
            self.headings.append(int(tag[1]))
        elif tag == "label" and a.get("for"):
            self.labels.add(str(a["for"]))
        elif tag in FIELDS and a.get("type") != "hidden":
            self.fields.append(a.get("id"))


def check(html: str, lang: str, where: str) -> None:
    page = Page()
    page.feed(html)
    assert page.lang == lang, where
    assert page.headings.count(1) == 1, where
    assert page.headings[0] == 1, where
    for before, after in zip(page.headings, page.headings[1:], strict=False):
        assert after <= before + 1, f"{where}: h{before} then h{after}"
    unlabelled = [f for f in page.fields if f is None or f not in page.labels]
    assert not unlabelled, f"{where}: fields without a label: {unlabelled}"


async def test_the_spanish_catalog_covers_english() -> None:
    assert set(i18n.ES) == set(i18n.EN)
    assert {f"form.{t}" for t in forms.ALL_TYPES} <= set(i18n.EN)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
async def test_every_page_is_accessible_in_each_language(
    net: Network, clerk_case: str, lang: str
) -> None:
    async with browser(net["BR"], role=None) as b:
        status, html, _ = await b.get(f"/ui/signin?lang={lang}")
        check(html, lang, "signin")
        await b.sign_in("clerk")
        pages = [
            "/ui/cases",
            "/ui/inbox",
            f"/ui/requests/{clerk_case}",
            "/ui/network",
            *(f"/ui/new?type={t}" for t in sorted(forms.REQUEST_TYPES)),
            *(f"/ui/requests/{clerk_case}?reply={t}" for t in ("return_with_reasons",)),
        ]
        for path in pages:
            status, html, _ = await b.get(path)  # the language cookie set by ?lang= holds
            assert status == 200, path
            check(html, lang, path)
            if lang == "es":
                assert "Cerrar sesión" in html, path
    async with browser(net["BR"], role="auditor") as b:
        await b.get(f"/ui/cases?lang={lang}")
        for path in ("/ui/audit", "/ui/audit/verify", f"/ui/requests/{clerk_case}"):
            status, html, _ = await b.get(path)
            assert status == 200, path
            check(html, lang, path)


async def test_accept_language_chooses_spanish(net: Network) -> None:
    async with browser(net["AR"], role=None) as b:
        _, html, _ = await b.get("/ui/signin", headers={"Accept-Language": "es-AR,es;q=0.9"})
        assert '<html lang="es">' in html and "Iniciar sesión" in html
