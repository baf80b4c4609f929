"""Treaty forms: examples, required fields, error reporting, bounds, schemas and hostile input."""

import ast
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs; a dependency of openapi-spec-validator
import openapi_spec_validator
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mla_node.errors import FieldProblem, FormInvalid, UnknownFormType
from mla_node.protocol import form_models, forms
from mla_node.protocol.forms import (
    ALL_TYPES,
    FOLLOW_UP_TYPES,
    LATEST_VERSION,
    REQUEST_TYPES,
    all_schema_components,
    example,
    field_help,
    form_model,
    json_schema,
    validate_form,
)

TYPES = sorted(ALL_TYPES)
STABLE_CODES = {
    "missing",
    "extra_field",
    "too_short",
    "too_long",
    "invalid_value",
    "invalid_type",
    "invalid_date",
    "invalid_format",
    "out_of_range",
    "too_many_problems",
}


def problems_of(form_type: str, data: object) -> list[FieldProblem]:
    with pytest.raises(FormInvalid) as info:
        validate_form(form_type, LATEST_VERSION[form_type], data)
    return info.value.problems


def attempt(form_type: str, version: int, data: object) -> dict[str, Any] | list[FieldProblem]:
    """The normalised form, or the problems found; any other exception escapes."""
    try:
        return validate_form(form_type, version, data)
    except FormInvalid as exc:
        return exc.problems


def codes_by_field(form_type: str, data: object) -> dict[str, str]:
    return {p.field: p.code for p in problems_of(form_type, data)}


def key_paths(data: object, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every path to a dict key in ``data``, list positions included."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key)
            yield from key_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from key_paths(value, (*prefix, index))


def without(data: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    copied = copy.deepcopy(data)
    parent: Any = copied
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return copied


def with_value(data: dict[str, Any], dotted: str, value: object) -> dict[str, Any]:
    copied = copy.deepcopy(data)
    parent: Any = copied
    *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    for part in parents:
        parent = parent[part]
    parent[last] = value
    return copied


# --- the registry --------------------------------------------------------------------------


def test_type_sets_partition_the_registry() -> None:
    assert {"mla_request", "extradition_request", "provisional_arrest"} == REQUEST_TYPES
    assert REQUEST_TYPES | FOLLOW_UP_TYPES == ALL_TYPES
    assert not REQUEST_TYPES & FOLLOW_UP_TYPES
    assert len(ALL_TYPES) == 10
    assert set(LATEST_VERSION) == ALL_TYPES
    assert all(v == 1 for v in LATEST_VERSION.values())


@pytest.mark.parametrize("form_type", ["", "mla", "MLA_REQUEST", "x" * 10_000])
def test_unknown_type_is_refused(form_type: str) -> None:
    with pytest.raises(UnknownFormType) as info:
        validate_form(form_type, 1, {})
    assert info.value.field == "type"
    assert info.value.extra["known_types"] == TYPES
    assert "x" * 100 not in info.value.detail  # the caller's string is not echoed


@pytest.mark.parametrize("version", [0, 2, -1, True])
def test_unknown_version_is_refused(version: int) -> None:
    with pytest.raises(UnknownFormType) as info:
        validate_form("mla_request", version, example("mla_request"))
    assert info.value.field == "version"
    assert info.value.extra["known_versions"] == [1]


@pytest.mark.parametrize("helper", [json_schema, field_help, example])
def test_helpers_refuse_unknown_type(helper: Callable[[str], object]) -> None:
    with pytest.raises(UnknownFormType) as info:
        helper("nope")
    assert info.value.field == "type"


# --- examples ------------------------------------------------------------------------------


@pytest.mark.parametrize("form_type", TYPES)
def test_example_validates_and_is_normalised(form_type: str) -> None:
    data = example(form_type)
    assert validate_form(form_type, LATEST_VERSION[form_type], data) == data
    assert set(data) == set(form_model(form_type, 1).model_fields)


def test_example_is_a_fresh_copy() -> None:
    first = example("mla_request")
    first["contact_officer"]["name"] = "changed"
    assert example("mla_request")["contact_officer"]["name"] != "changed"


def test_validation_strips_whitespace_and_fills_defaults() -> None:
    data = example("provisional_arrest")
    data["case_reference"] = "  FCR 1/2025 \n"
    del data["formal_request_due_days"]
    del data["person"]["aliases"]
    out = validate_form("provisional_arrest", 1, data)
    assert out["case_reference"] == "FCR 1/2025"
    assert out["formal_request_due_days"] == 60
    assert out["person"]["aliases"] == []


# --- required fields and error reporting ---------------------------------------------------


@pytest.mark.parametrize("form_type", TYPES)
def test_each_required_field_removed_is_named(form_type: str) -> None:
    data = example(form_type)
    required_top = {n for n, f in form_model(form_type, 1).model_fields.items() if f.is_required()}
    named_missing: set[str] = set()
    for path in key_paths(data):
        dotted = ".".join(str(p) for p in path)
        result = attempt(form_type, 1, without(data, path))
        if isinstance(result, list):
            assert [(p.field, p.code) for p in result] == [(f"form.{dotted}", "missing")]
            named_missing.add(dotted)
    assert required_top <= named_missing
    # only the basis rule makes an optional field required
    extra = {p for p in named_missing if "." not in p} - required_top
    assert extra <= {"arrest_warrant_reference"}


def test_several_bad_fields_are_all_named() -> None:
    data = example("mla_request")
    data["language"] = "de"
    data["case_reference"] = "   "
    data["deadline"] = "31/12/2025"
    data["translation_attached"] = "yes"
    data["assistance_sought"][1]["kind"] = "interrogation"
    data["contact_officer"]["email"] = "not an address"
    data["contact_officer"]["phone"] = 5551234
    del data["stated_purpose"]
    data["notes"] = "hello"
    assert codes_by_field("mla_request", data) == {
        "form.language": "invalid_value",
        "form.case_reference": "too_short",
        "form.deadline": "invalid_date",
        "form.translation_attached": "invalid_type",
        "form.assistance_sought.1.kind": "invalid_value",
        "form.contact_officer.email": "invalid_format",
        "form.contact_officer.phone": "invalid_type",
        "form.stated_purpose": "missing",
        "form.notes": "extra_field",
    }


@pytest.mark.parametrize("where", ["", "contact_officer.", "assistance_sought.0."])
def test_extra_field_is_refused(where: str) -> None:
    data = with_value(example("mla_request"), where + "secret_channel", "x")
    assert codes_by_field("mla_request", data) == {f"form.{where}secret_channel": "extra_field"}


def test_hostile_extra_key_is_not_echoed_verbatim() -> None:
    data = example("withdrawal")
    data["a.b\x00" + "k" * 5000] = 1
    [problem] = problems_of("withdrawal", data)
    assert problem.code == "extra_field"
    assert problem.field.startswith("form.a_b_kkk")
    assert len(problem.field) < 100


def test_non_object_form_is_refused() -> None:
    assert codes_by_field("withdrawal", ["reason"]) == {"form": "invalid_type"}


def test_problem_count_is_capped() -> None:
    data = {f"k{i}": i for i in range(500)}
    problems = problems_of("status_inquiry", data)
    assert len(problems) == 101
    assert problems[-1].code == "too_many_problems"


def test_messages_are_plain_english_without_pydantic_traces() -> None:
    data = example("extradition_request")
    data["person"]["nationalities"] = ["ar"]
    data["person"]["aliases"] = ["x"] * 21
    data["channel"] = None
    data["law_texts"] = "see annex"
    for problem in problems_of("extradition_request", data):
        assert problem.code in STABLE_CODES
        assert problem.message[0].isupper()
        assert problem.message.endswith(".")
        assert "pydantic" not in problem.message.lower()
        assert "http" not in problem.message


def test_form_invalid_chain_does_not_carry_the_input() -> None:
    data = example("mla_request")
    data["language"] = "a confidential slip"
    with pytest.raises(FormInvalid) as info:
        validate_form("mla_request", 1, data)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert "confidential slip" not in str(info.value.problem())


# --- extradition basis rules ---------------------------------------------------------------


def test_prosecution_needs_an_arrest_warrant() -> None:
    data = example("extradition_request")
    data["arrest_warrant_reference"] = None
    assert codes_by_field("extradition_request", data) == {
        "form.arrest_warrant_reference": "missing"
    }


def test_enforcement_needs_judgment_and_sentence_remaining() -> None:
    data = example("extradition_request")
    data["basis"] = "enforcement"
    assert codes_by_field("extradition_request", data) == {
        "form.judgment_reference": "missing",
        "form.sentence_remaining": "missing",
    }
    data["judgment_reference"] = "Judgment 12/2024 of Oral Criminal Court No. 2, final"
    data["sentence_remaining"] = "4 years and 2 months"
    assert validate_form("extradition_request", 1, data)["basis"] == "enforcement"


def test_basis_rule_is_reported_with_other_problems() -> None:
    data = example("extradition_request")
    data["basis"] = "enforcement"
    data["channel"] = "pigeon"
    assert codes_by_field("extradition_request", data) == {
        "form.channel": "invalid_value",
        "form.judgment_reference": "missing",
        "form.sentence_remaining": "missing",
    }


def test_invalid_basis_is_the_only_problem_named() -> None:
    data = example("extradition_request")
    data["basis"] = "deportation"
    assert codes_by_field("extradition_request", data) == {"form.basis": "invalid_value"}


# --- bounds and types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form_type", "field", "limit"),
    [
        ("mla_request", "case_reference", 200),
        ("mla_request", "stated_purpose", 4_000),
        ("mla_request", "summary_of_facts", 20_000),
        ("extradition_request", "law_texts.penalty", 20_000),
        ("extradition_request", "person.identity_documents.0.number", 200),
        ("supplement", "documents.0", 200),
        ("mla_request", "contact_officer.email", 254),
    ],
)
def test_strings_over_max_length_are_refused(form_type: str, field: str, limit: int) -> None:
    at_limit = "a" * (limit - len("@x.example")) + "@x.example" if "email" in field else "a" * limit
    assert validate_form(form_type, 1, with_value(example(form_type), field, at_limit))
    too_long = with_value(example(form_type), field, "a" + at_limit)
    assert codes_by_field(form_type, too_long) == {f"form.{field}": "too_long"}


@pytest.mark.parametrize(
    ("form_type", "field", "limit"),
    [
        ("mla_request", "assistance_sought", 50),
        ("extradition_request", "person.aliases", 20),
        ("extradition_request", "person.nationalities", 5),
        ("execution_result", "items_delivered", 200),
    ],
)
def test_lists_over_max_items_are_refused(form_type: str, field: str, limit: int) -> None:
    item: Any = example(form_type)
    for part in field.split("."):
        item = item[part]
    too_many = with_value(example(form_type), field, [item[0]] * (limit + 1))
    assert codes_by_field(form_type, too_many) == {f"form.{field}": "too_long"}


def test_mla_request_needs_some_assistance() -> None:
    data = with_value(example("mla_request"), "assistance_sought", [])
    assert codes_by_field("mla_request", data) == {"form.assistance_sought": "too_short"}


@pytest.mark.parametrize("text", ["line\x00break", "bell\x07", "two\nlines"])
def test_single_line_fields_refuse_control_characters(text: str) -> None:
    data = with_value(example("acknowledgement"), "central_authority_reference", text)
    assert codes_by_field("acknowledgement", data) == {
        "form.central_authority_reference": "invalid_format"
    }


def test_multi_line_fields_keep_newlines_but_refuse_nul() -> None:
    ok = with_value(example("withdrawal"), "reason", "First.\nSecond.")
    assert validate_form("withdrawal", 1, ok)["reason"] == "First.\nSecond."
    bad = with_value(example("withdrawal"), "reason", "First.\x00")
    assert codes_by_field("withdrawal", bad) == {"form.reason": "invalid_format"}


@pytest.mark.parametrize(
    "value", ["2025-02-30", "20250301", "2025-W10-1", "2025-03-01T00:00:00", 1740787200, None]
)
def test_dates_must_be_real_and_written_yyyy_mm_dd(value: object) -> None:
    data = with_value(example("acknowledgement"), "received_on", value)
    assert codes_by_field("acknowledgement", data) == {"form.received_on": "invalid_date"}


@pytest.mark.parametrize(
    ("value", "code"), [(0, "out_of_range"), (121, "out_of_range"), ("60", "invalid_type")]
)
def test_formal_request_due_days_bounds(value: object, code: str) -> None:
    data = with_value(example("provisional_arrest"), "formal_request_due_days", value)
    assert codes_by_field("provisional_arrest", data) == {"form.formal_request_due_days": code}


def test_provisional_arrest_needs_the_undertaking() -> None:
    data = with_value(example("provisional_arrest"), "formal_request_will_follow", False)
    assert codes_by_field("provisional_arrest", data) == {
        "form.formal_request_will_follow": "invalid_value"
    }


def test_execution_result_use_restriction_is_optional() -> None:
    data = example("execution_result")
    del data["use_restriction"]
    assert validate_form("execution_result", 1, data)["use_restriction"] is None


# --- schemas and help ----------------------------------------------------------------------


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def subschemas(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from subschemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from subschemas(value)


def test_schema_components_have_no_dangling_refs() -> None:
    components = all_schema_components()
    assert {f"Form{name}V1" for name in ("Person", "ContactOfficer", "MlaRequest")} <= set(
        components
    )
    assert all("$defs" not in schema for schema in components.values())
    for ref in refs(components):
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in components


def test_every_string_and_list_in_the_schemas_is_bounded() -> None:
    for schema in subschemas(all_schema_components()):
        if schema.get("type") == "string" and "enum" not in schema and "const" not in schema:
            assert "maxLength" in schema or schema.get("format") == "date", schema
        if schema.get("type") == "array":
            assert "maxItems" in schema, schema
        if schema.get("type") == "object":
            assert schema.get("additionalProperties") is False, schema


def openapi_document() -> dict[str, Any]:
    paths = {
        f"/forms/{form_type}": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "$ref": f"#/components/schemas/{json_schema(form_type)['title']}"
                            },
                            "example": example(form_type),
                        }
                    }
                },
                "responses": {"204": {"description": "Valid."}},
            }
        }
        for form_type in TYPES
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "forms", "version": "1"},
        "paths": paths,
        "components": {"schemas": all_schema_components()},
    }


def test_components_make_a_valid_openapi_document() -> None:
    openapi_spec_validator.validate(openapi_document())


@pytest.mark.parametrize("form_type", TYPES)
def test_schema_agrees_with_the_model_on_the_example(form_type: str) -> None:
    root = Resource.from_contents(openapi_document(), default_specification=DRAFT202012)
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"urn:forms#/components/schemas/{json_schema(form_type)['title']}"},
        registry=Registry().with_resource("urn:forms", root),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    validator.validate(example(form_type))
    assert not validator.is_valid({**example(form_type), "unexpected": 1})


@pytest.mark.parametrize("form_type", TYPES)
def test_json_schema_refs_point_at_components(form_type: str) -> None:
    schema = json_schema(form_type)
    assert schema == json_schema(form_type, 1)
    assert schema["title"] == form_model(form_type, 1).__name__
    assert set(refs(schema)) <= {f"#/components/schemas/{name}" for name in schema.get("$defs", {})}


@pytest.mark.parametrize("form_type", TYPES)
def test_every_field_has_a_short_description(form_type: str) -> None:
    help_texts = field_help(form_type)
    assert set(form_model(form_type, 1).model_fields) <= set(help_texts)
    for path, text in help_texts.items():
        assert 0 < len(text) <= 160, path


def test_field_help_reaches_nested_fields() -> None:
    help_texts = field_help("extradition_request")
    assert "person.identity_documents.issuing_state" in help_texts
    assert "law_texts.limitation" in help_texts
    assert "contact_officer.email" in field_help("mla_request")


PURE_IMPORTS = {
    "collections.abc",
    "datetime",
    "mla_node.errors",
    "mla_node.protocol.form_models",
    "pydantic",
    "pydantic_core",
    "re",
    "typing",
}


@pytest.mark.parametrize("module", [forms, form_models])
def test_module_imports_nothing_that_does_io(module: ModuleType) -> None:
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= PURE_IMPORTS


# --- hostile input -------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


def outcome(form_type: str, version: int, data: object) -> None:
    try:
        result = attempt(form_type, version, data)
    except UnknownFormType:
        return
    if isinstance(result, list):
        assert result
        assert all(p.field.startswith("form") and p.code in STABLE_CODES for p in result)
    else:
        assert isinstance(result, dict)


@settings(max_examples=300)
@given(
    form_type=st.sampled_from(TYPES) | st.text(max_size=20),
    version=st.integers(min_value=-2, max_value=3),
    data=json_values,
)
def test_random_json_is_refused_or_accepted_cleanly(
    form_type: str, version: int, data: object
) -> None:
    outcome(form_type, version, data)


@settings(max_examples=300)
@given(form_type=st.sampled_from(TYPES), data=st.data(), value=json_values)
def test_mutated_examples_are_refused_or_accepted_cleanly(
    form_type: str, data: st.DataObject, value: object
) -> None:
    form = example(form_type)
    path = data.draw(st.sampled_from(list(key_paths(form))))
    form = with_value(form, ".".join(str(p) for p in path), value)
    outcome(form_type, 1, form)
