"""The catalogs: every language has every English entry (and no other), every treaty field a
label and every field explanation a translation in each language; dates in each language."""

from __future__ import annotations

import pytest

from mla_node.protocol import forms
from mla_node.ui import formgen, i18n

OTHERS = [lang for lang in i18n.LANGUAGES if lang != "en"]


def schema_fields() -> tuple[set[str], set[str]]:
    """Every field name and every field explanation of every treaty form."""
    names: set[str] = set()
    helps: set[str] = set()

    def walk(fields: list[formgen.Field]) -> None:
        for f in fields:
            names.add(f.name.rsplit(".", 1)[-1])
            if f.help:
                helps.add(f.help)
            walk(f.children)
            for row in f.rows:
                walk(row)

    for form_type in sorted(forms.ALL_TYPES):
        walk(formgen.build(form_type, "en"))
    return names, helps


def test_the_four_languages_of_the_oas() -> None:
    assert i18n.LANGUAGES == ("en", "es", "pt", "fr")
    assert list(i18n.LANGUAGE_NAMES) == list(i18n.LANGUAGES)
    assert set(i18n.CATALOGS) == set(i18n.LANGUAGES)


@pytest.mark.parametrize("lang", OTHERS)
def test_each_catalog_has_every_english_entry_and_no_other(lang: str) -> None:
    catalog = i18n.CATALOGS[lang]
    assert sorted(set(i18n.EN) - set(catalog)) == [], f"{lang} lacks these"
    assert sorted(set(catalog) - set(i18n.EN)) == [], f"{lang} has keys English lacks"
    assert [k for k, v in catalog.items() if not v.strip()] == [], f"{lang}: empty entries"
    assert [k for k, v in i18n.EN.items() if not v.strip()] == []


def test_every_form_type_and_state_has_a_name() -> None:
    from mla_node.ui.casework import STATES

    assert {f"form.{t}" for t in forms.ALL_TYPES} <= set(i18n.EN)
    assert {f"state.{s}" for s in STATES} <= set(i18n.EN)


@pytest.mark.parametrize("lang", OTHERS)
def test_every_treaty_field_has_a_label_and_its_explanation_in_each_language(lang: str) -> None:
    names, helps = schema_fields()
    labels, explanations = i18n.FIELD_LABELS[lang], i18n.HELP[lang]
    assert sorted(names - set(labels)) == []
    assert sorted(set(labels) - names) == [], "labels of fields no form has"
    assert sorted(helps - set(explanations)) == []
    assert sorted(set(explanations) - helps) == [], "explanations no field gives"
    assert all(v.strip() for v in (*labels.values(), *explanations.values()))
    translated = {f.help for f in formgen.build("mla_request", lang)}
    assert not translated & helps - {""}, "the form shows English explanations"


@pytest.mark.parametrize(
    ("lang", "at", "on"),
    [
        ("en", "12 Mar 2025 14:03 UTC", "1 Feb 2025"),
        ("es", "12 mar 2025 14:03 UTC", "1 feb 2025"),
        ("pt", "12 mar 2025 14:03 UTC", "1 fev 2025"),
        ("fr", "12 mars 2025 14:03 UTC", "1 févr. 2025"),
    ],
)
def test_dates(lang: str, at: str, on: str) -> None:
    assert i18n.when(lang, "2025-03-12T14:03:09.123+00:00") == at
    assert i18n.day(lang, "2025-02-01") == on


def test_the_language_is_chosen() -> None:
    assert i18n.choose(None, None, "pt-BR,pt;q=0.9,en;q=0.5") == "pt"
    assert i18n.choose(None, None, "fr-CA") == "fr"
    assert i18n.choose(None, "fr", "es") == "fr"
    assert i18n.choose("pt", "fr", "es") == "pt"
    assert i18n.choose("xx", None, "de") == "en"
