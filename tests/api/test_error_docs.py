"""docs/errors.md documents every stable code with its HTTP status; docs/api.md every route.

Like datasette's tests/test_docs.py: a code or a route added without its documentation fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from mla_node.errors import all_error_classes
from mla_node.protocol import form_models, forms
from tests.api.speckit import SPEC

DOCS = Path(__file__).resolve().parents[2] / "docs"
ERRORS_MD = (DOCS / "errors.md").read_text(encoding="utf-8")
API_MD = (DOCS / "api.md").read_text(encoding="utf-8")

# "| `code` | 422 | ..." -> {"code": "422"}
DOCUMENTED = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}|4xx) \|", ERRORS_MD, re.MULTILINE))
FIELD_SECTION = ERRORS_MD.split("## Field codes", 1)[-1]
FIELD_DOCUMENTED = set(re.findall(r"^\| `([a-z_]+)` \|", FIELD_SECTION, re.MULTILINE))

# Codes the problem middleware gives for aiohttp's own answers (transport/problems.py).
HTTP_LAYER_CODES = {"method_not_allowed": "405", "http_error": "4xx", "not_found": "404"}


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.code)
def test_every_error_code_is_documented_with_its_status(cls: type) -> None:
    code, status = cls.code, str(cls.status)  # type: ignore[attr-defined]
    assert code in DOCUMENTED, f"docs/errors.md has no row for `{code}` ({cls.__name__})"
    assert DOCUMENTED[code] == status, f"docs/errors.md gives `{code}` {DOCUMENTED[code]}"


def test_http_layer_codes_are_documented() -> None:
    for code, status in HTTP_LAYER_CODES.items():
        assert DOCUMENTED.get(code) == status, code


def test_no_documented_code_is_stale() -> None:
    real = {cls.code for cls in all_error_classes()} | set(HTTP_LAYER_CODES)
    assert set(DOCUMENTED) - real == set(), "docs/errors.md lists codes that no longer exist"


def _field_codes() -> set[str]:
    codes = {code for code, _ in forms._ERRORS.values()} | {forms._FALLBACK[0]}
    codes.add("too_many_problems")
    # our own validators: PydanticCustomError("mla_<code>", ...)
    source = inspect.getsource(form_models)
    codes |= set(re.findall(r'PydanticCustomError\(\s*"mla_([a-z_]+)"', source))
    return codes


def test_every_field_code_is_documented() -> None:
    codes = _field_codes()
    assert {"missing", "invalid_date", "invalid_value", "too_many_problems"} <= codes
    assert codes - FIELD_DOCUMENTED == set()


def test_api_doc_covers_every_route() -> None:
    for path, item in SPEC["paths"].items():
        for method in item:
            if method == "parameters":
                continue
            assert f"{method.upper()} {path}" in API_MD, f"docs/api.md: {method.upper()} {path}"


def test_api_doc_names_every_role_and_points_at_the_document() -> None:
    for role in ("clerk", "approver", "auditor", "admin"):
        assert f"`{role}`" in API_MD
    assert "/openapi.json" in API_MD
    assert "docs/errors.md" in API_MD or "(errors.md)" in API_MD
