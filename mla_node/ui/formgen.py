"""HTML form fields generated from a treaty form's JSON Schema (protocol/forms.json_schema), and
the posted fields turned back into the nested form the schema describes.

Field names are dotted paths (``contact_officer.email``, ``assistance_sought.0.kind``), the same
paths the validation errors name (``form.contact_officer.email``), so each error lands beside its
field. Empty inputs are left out, so a missing required field is reported by the same pydantic
model the API uses, not by the browser alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multidict import MultiDictProxy

from mla_node.protocol import forms
from mla_node.ui import i18n

TEXTAREA_FROM = 300  # characters allowed: more than this is a multi-line box
ARRAY_ROWS = 2  # empty rows offered for a list of groups


@dataclass
class Field:
    name: str  # dotted path, also the input's name
    label: str
    help: str
    required: bool
    kind: str  # text, textarea, select, number, date, lines, group, rows
    options: list[tuple[str, str]] = field(default_factory=list)
    value: str = ""
    error: str | None = None
    children: list[Field] = field(default_factory=list)
    rows: list[list[Field]] = field(default_factory=list)
    max_length: int | None = None

    @property
    def id(self) -> str:
        return "f-" + self.name.replace(".", "-")


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The schema of a property with $ref followed, and whether null is allowed."""
    nullable = False
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        node = {**node, **options[0]} if options else node
        node.pop("anyOf", None)
    if "$ref" in node:
        node = {
            **defs[node["$ref"].rsplit("/", 1)[-1]],
            **{k: v for k, v in node.items() if k != "$ref"},
        }
    return node, nullable


def build(
    form_type: str,
    lang: str,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> list[Field]:
    schema = forms.json_schema(form_type)
    return _fields(schema, schema.get("$defs", {}), "", lang, values or {}, errors or {})


def _fields(
    schema: dict[str, Any],
    defs: dict[str, Any],
    prefix: str,
    lang: str,
    values: dict[str, Any],
    errors: dict[str, str],
) -> list[Field]:
    required = set(schema.get("required", []))
    out = []
    for name, raw in schema.get("properties", {}).items():
        prop, _ = _resolve(raw, defs)
        path = prefix + name
        out.append(_field(name, path, prop, defs, lang, values.get(name), errors, name in required))
    return out


def _field(
    name: str,
    path: str,
    prop: dict[str, Any],
    defs: dict[str, Any],
    lang: str,
    value: Any,
    errors: dict[str, str],
    required: bool,
) -> Field:
    label = i18n.field_label(lang, name, name.replace("_", " ").capitalize())
    help_text = i18n.field_help(lang, prop.get("description", ""))
    f = Field(path, label, help_text, required, "text", error=errors.get(path))
    kind = prop.get("type")
    if kind == "object":
        f.kind = "group"
        f.children = _fields(prop, defs, path + ".", lang, value or {}, errors)
    elif kind == "array":
        item, _ = _resolve(prop.get("items", {}), defs)
        if item.get("type") == "object":
            f.kind = "rows"
            given = list(value or [])
            for i in range(max(len(given) + 1, ARRAY_ROWS)):
                row_value = given[i] if i < len(given) else {}
                f.rows.append(_fields(item, defs, f"{path}.{i}.", lang, row_value, errors))
        else:
            f.kind = "lines"
            f.value = "\n".join(str(v) for v in value or [])
    elif "enum" in prop or "const" in prop:
        f.kind = "select"
        choices = prop.get("enum") or [prop["const"]]
        f.options = [(_text(c), _text(c)) for c in choices]
        f.value = _text(value) if value is not None else ""
    elif kind == "boolean":
        f.kind = "select"
        f.options = [("true", i18n.translate(lang, "yes")), ("false", i18n.translate(lang, "no"))]
        f.value = _text(value) if value is not None else ""
    elif kind == "integer":
        f.kind = "number"
        f.value = "" if value is None else str(value)
    elif prop.get("format") == "date":
        f.kind = "date"
        f.value = value or ""
    else:
        f.max_length = prop.get("maxLength")
        f.kind = "textarea" if (f.max_length or 0) > TEXTAREA_FROM else "text"
        f.value = "" if value is None else str(value)
    return f


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse(form_type: str, posted: MultiDictProxy[Any]) -> dict[str, Any]:
    """The posted inputs as the nested form; inputs left empty are left out."""
    schema = forms.json_schema(form_type)
    return _parse(schema, schema.get("$defs", {}), "", posted)


def _parse(
    schema: dict[str, Any], defs: dict[str, Any], prefix: str, posted: MultiDictProxy[Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in schema.get("properties", {}).items():
        prop, _ = _resolve(raw, defs)
        path = prefix + name
        kind = prop.get("type")
        if kind == "object":
            group = _parse(prop, defs, path + ".", posted)
            if group:
                out[name] = group
        elif kind == "array":
            item, _ = _resolve(prop.get("items", {}), defs)
            if item.get("type") == "object":
                rows = []
                i = 0
                while any(k.startswith(f"{path}.{i}.") for k in posted):
                    row = _parse(item, defs, f"{path}.{i}.", posted)
                    if row:
                        rows.append(row)
                    i += 1
                if rows:
                    out[name] = rows
            else:
                text = str(posted.get(path, ""))
                lines = [line.strip() for line in text.splitlines() if line.strip()]
                if lines:
                    out[name] = lines
        else:
            text = str(posted.get(path, "")).strip()
            if text == "":
                continue
            if kind == "boolean":
                out[name] = {"true": True, "false": False}.get(text, text)
            elif kind == "integer":
                try:
                    out[name] = int(text)
                except ValueError:
                    out[name] = text  # the model names it: "Must be a whole number."
            else:
                out[name] = text
    return out


def field_errors(problems: list[Any], prefix: str = "form.") -> tuple[dict[str, str], list[str]]:
    """Problems by field path (without ``form.``), and those about no field of the form."""
    by_field: dict[str, str] = {}
    other: list[str] = []
    for p in problems:
        if p.field.startswith(prefix):
            by_field.setdefault(p.field.removeprefix(prefix), p.message)
        else:
            other.append(f"{p.field}: {p.message}")
    return by_field, other
