"""Every page, in each of the four languages: a lang attribute, one h1, headings that do not skip
a level, a label for every field; the dashboard and a request form in Portuguese and French
(the catalogs themselves: tests/ui/test_i18n.py)."""

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
            assert i18n.translate(lang, "signout") in html, path
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


# A few words each page must show in Portuguese and French (labels, a legal state or form type,
# a treaty field's label and its explanation).
TRANSLATED = {
    "pt": {
        "/ui/cases": ["<h1>Casos</h1>", "Pedido de assistência jurídica mútua", "Outro Estado",
                      "Sair", "Entregue"],
        "/ui/new?type=mla_request": ["<h1>Novo pedido</h1>", "Estado requerido",
                                     "Referência do processo", "Resumo dos fatos",
                                     "O número do processo da autoridade requerente",
                                     "Arquivos de prova"],
        "/ui/new?type=provisional_arrest": ["Prisão preventiva para fins de extradição",
                                            "Referência do mandado ou da sentença"],
    },
    "fr": {
        "/ui/cases": ["<h1>Dossiers</h1>", "Demande d&#39;entraide judiciaire", "Autre État",
                      "Se déconnecter", "Remise"],
        "/ui/new?type=mla_request": ["<h1>Nouvelle demande</h1>", "État requis",
                                     "Référence du dossier", "Résumé des faits",
                                     "Le numéro de dossier de l&#39;autorité requérante",
                                     "Fichiers de preuve"],
        "/ui/new?type=provisional_arrest": ["Arrestation provisoire",
                                            "Référence du mandat ou du jugement"],
    },
}  # fmt: skip


@pytest.mark.parametrize("lang", ["pt", "fr"])
async def test_the_dashboard_and_a_form_in_portuguese_and_french(
    net: Network, clerk_case: str, lang: str
) -> None:
    async with browser(net["AR"]) as b:
        for path, words in TRANSLATED[lang].items():
            sep = "&" if "?" in path else "?"
            status, html, _ = await b.get(f"{path}{sep}lang={lang}")
            assert status == 200, path
            assert f'<html lang="{lang}">' in html, path
            for word in words:
                assert word in html, f"{path} ({lang}): {word!r} missing"
            assert '<a href="?' in html and f'hreflang="{lang}" aria-current="true"' in html
        # The language is remembered: the next page, without ?lang=, is still in it.
        _, html, _ = await b.get("/ui/network")
        assert f'<html lang="{lang}">' in html
        assert i18n.translate(lang, "network") in html


async def test_accept_language_chooses_portuguese_and_french(net: Network) -> None:
    for header, lang, word in (("pt-BR,pt;q=0.9", "pt", "Entrar"), ("fr-CA", "fr", "Jeton")):
        async with browser(net["AR"], role=None) as b:
            _, html, _ = await b.get("/ui/signin", headers={"Accept-Language": header})
            assert f'<html lang="{lang}">' in html and word in html
