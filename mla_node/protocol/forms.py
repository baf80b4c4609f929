"""Treaty forms: which form types exist in which versions, how a form is validated, and what the
clerk is told when it is not.

A form is stored and sent with its type and version; ``validate_form`` turns untrusted JSON into
the normalised dict that is signed and stored, or raises ``FormInvalid`` listing every problem
with a stable code and a plain-English message. The shapes themselves are in ``form_models``.

Pure: no I/O, no clock, no randomness.
"""

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mla_node.errors import FieldProblem, FormInvalid, UnknownFormType
from mla_node.protocol.form_models import (
    PATTERN_HINTS,
    FormAcknowledgementV1,
    FormAdditionalInfoRequestV1,
    FormExecutionResultV1,
    FormExtraditionRequestV1,
    FormMlaRequestV1,
    FormProvisionalArrestV1,
    FormReturnWithReasonsV1,
    FormStatusInquiryV1,
    FormSupplementV1,
    FormWithdrawalV1,
)

__all__ = [
    "ALL_TYPES",
    "FOLLOW_UP_TYPES",
    "LATEST_VERSION",
    "REQUEST_TYPES",
    "all_schema_components",
    "example",
    "field_help",
    "form_model",
    "json_schema",
    "validate_form",
]

# Versions are only ever added: a record keeps the version it was written in, so a v1 model stays
# here for as long as v1 records exist, and new forms are written in LATEST_VERSION.
_REGISTRY: Final[Mapping[str, Mapping[int, type[BaseModel]]]] = {
    "mla_request": {1: FormMlaRequestV1},
    "extradition_request": {1: FormExtraditionRequestV1},
    "provisional_arrest": {1: FormProvisionalArrestV1},
    "additional_info_request": {1: FormAdditionalInfoRequestV1},
    "supplement": {1: FormSupplementV1},
    "return_with_reasons": {1: FormReturnWithReasonsV1},
    "execution_result": {1: FormExecutionResultV1},
    "withdrawal": {1: FormWithdrawalV1},
    "acknowledgement": {1: FormAcknowledgementV1},
    "status_inquiry": {1: FormStatusInquiryV1},
}

ALL_TYPES: Final[frozenset[str]] = frozenset(_REGISTRY)
REQUEST_TYPES: Final[frozenset[str]] = frozenset(
    {"mla_request", "extradition_request", "provisional_arrest"}
)
FOLLOW_UP_TYPES: Final[frozenset[str]] = ALL_TYPES - REQUEST_TYPES
LATEST_VERSION: Final[dict[str, int]] = {t: max(v) for t, v in _REGISTRY.items()}

# How far a message's content may travel at the receiving authority, least strict first. Requests
# under the treaties are confidential by default (A-55 Art. 25); "strictly_confidential" is for
# named officials only (e.g. where a person sought is), "ordinary" for what may be shared within
# the authority. It travels inside the signed body; a follow-up is never handled less strictly
# than its case.
HANDLING_CODES: Final[tuple[str, ...]] = ("ordinary", "confidential", "strictly_confidential")
DEFAULT_HANDLING: Final = "confidential"


def stricter_handling(a: str, b: str) -> str:
    return max(a, b, key=HANDLING_CODES.index)


_REF_TEMPLATE: Final = "#/components/schemas/{model}"

# A hostile body can hold thousands of bad keys; past this many, more detail helps nobody.
_MAX_PROBLEMS: Final = 100

# pydantic error type -> (our stable code, message). The codes are part of the API: clients and
# translations key on them, so a code never changes meaning. Messages may use the error's context.
_ERRORS: Final[dict[str, tuple[str, str]]] = {
    "missing": ("missing", "This field is required."),
    "extra_forbidden": ("extra_field", "This field is not part of the form."),
    "string_too_short": ("too_short", "Must be at least {min_length} characters long."),
    "too_short": ("too_short", "Must have at least {min_length} item(s)."),
    "string_too_long": ("too_long", "Must be at most {max_length} characters long."),
    "too_long": ("too_long", "Must have at most {max_length} items."),
    "literal_error": ("invalid_value", "Must be one of: {expected}."),
    "enum": ("invalid_value", "Must be one of: {expected}."),
    "string_pattern_mismatch": ("invalid_format", "Is not in the expected format."),
    "greater_than_equal": ("out_of_range", "Must be at least {ge}."),
    "less_than_equal": ("out_of_range", "Must be at most {le}."),
    "string_type": ("invalid_type", "Must be text."),
    "bool_type": ("invalid_type", "Must be true or false."),
    "int_type": ("invalid_type", "Must be a whole number."),
    "list_type": ("invalid_type", "Must be a list."),
    "model_type": ("invalid_type", "Must be a group of named fields (a JSON object)."),
    "model_attributes_type": ("invalid_type", "Must be a group of named fields (a JSON object)."),
    "dict_type": ("invalid_type", "Must be a group of named fields (a JSON object)."),
    "date_type": ("invalid_date", "Must be a real date written YYYY-MM-DD."),
}
_FALLBACK: Final = ("invalid_value", "This value is not accepted.")
# Errors raised by our own validators: the code follows the prefix, the message is already ours.
_OWN_PREFIX: Final = "mla_"

_PLAIN_SEGMENT: Final = re.compile(r"[A-Za-z0-9_]{1,64}")


def form_model(form_type: str, version: int) -> type[BaseModel]:
    """The pydantic model of one version of one form type, or ``UnknownFormType``."""
    versions = _REGISTRY.get(form_type) if isinstance(form_type, str) else None
    if versions is None:
        raise UnknownFormType(
            "Unknown form type. Known types: " + ", ".join(sorted(ALL_TYPES)) + ".",
            field="type",
            extra={"known_types": sorted(ALL_TYPES)},
        )
    # bool is an int in Python, but "version": true in JSON is a mistake, not version 1.
    if isinstance(version, bool) or not isinstance(version, int) or version not in versions:
        raise UnknownFormType(
            f"Unknown version of the {form_type} form. Known versions: "
            + ", ".join(str(v) for v in sorted(versions))
            + ".",
            field="version",
            extra={"known_versions": sorted(versions)},
        )
    return versions[version]


def validate_form(form_type: str, version: int, data: object) -> dict[str, Any]:
    """Validate untrusted form data and return it normalised as JSON-compatible values.

    Raises ``UnknownFormType`` (field "type" or "version") or ``FormInvalid`` whose ``problems``
    name every bad field as ``form.<dotted path>``, list positions as numbers.
    """
    model = form_model(form_type, version)
    try:
        form = model.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(err) for err in exc.errors(include_url=False, include_input=False)]
        if len(problems) > _MAX_PROBLEMS:
            hidden = len(problems) - _MAX_PROBLEMS
            problems = problems[:_MAX_PROBLEMS]
            problems.append(
                FieldProblem("form", "too_many_problems", f"{hidden} more problems not shown.")
            )
        # ``from None``: pydantic's error text quotes the input, and a request's contents are
        # confidential; they must not reach a log through the exception chain.
        raise FormInvalid(
            f"The {form_type} form has invalid or missing fields.", problems=problems
        ) from None
    return form.model_dump(mode="json", exclude_none=False)


def _problem(err: ErrorDetails) -> FieldProblem:
    field = ".".join(["form", *(_segment(part) for part in err["loc"])])
    kind = err["type"]
    if kind.startswith(_OWN_PREFIX):
        return FieldProblem(field, kind.removeprefix(_OWN_PREFIX), err["msg"])
    code, template = _ERRORS.get(kind, _FALLBACK)
    ctx = err.get("ctx", {})
    if kind == "string_pattern_mismatch":
        template = PATTERN_HINTS.get(str(ctx.get("pattern")), template)
    elif kind == "string_too_short" and ctx.get("min_length") == 1:
        template = "Must not be empty."
    try:
        message = template.format(**ctx)
    except (KeyError, IndexError, ValueError):
        message = _FALLBACK[1]
    return FieldProblem(field, code, message)


def _segment(part: int | str) -> str:
    # Unknown keys are chosen by whoever sent the form: keep them short and printable in replies.
    if isinstance(part, int) or _PLAIN_SEGMENT.fullmatch(part):
        return str(part)
    cleaned = "".join(c if c.isascii() and c.isprintable() and c != "." else "_" for c in part)
    return (cleaned[:64] + "...") if len(cleaned) > 64 else (cleaned or "_")


def json_schema(form_type: str, version: int | None = None) -> dict[str, Any]:
    """JSON Schema of a form (latest version by default).

    Nested models are in ``$defs`` but referenced as ``#/components/schemas/<name>``: put
    ``all_schema_components()`` under ``components/schemas`` of the OpenAPI document.
    """
    model = form_model(form_type, _version_or_latest(form_type, version))
    return model.model_json_schema(ref_template=_REF_TEMPLATE)


def all_schema_components() -> dict[str, Any]:
    """Every form model's schema, nested ones hoisted out of ``$defs``, keyed by component name."""
    components: dict[str, Any] = {}
    for versions in _REGISTRY.values():
        for model in versions.values():
            schema = model.model_json_schema(ref_template=_REF_TEMPLATE)
            for name, part in {model.__name__: schema, **schema.pop("$defs", {})}.items():
                if components.setdefault(name, part) != part:
                    raise RuntimeError(f"two form models share the component name {name}")
    return components


def field_help(form_type: str, version: int | None = None) -> dict[str, str]:
    """Dotted field path (no list positions) -> the description a clerk is shown."""
    model = form_model(form_type, _version_or_latest(form_type, version))
    return dict(_descriptions(model, ""))


def _descriptions(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str]]:
    for name, info in model.model_fields.items():
        yield prefix + name, info.description or ""
        nested = _nested_model(info.annotation)
        if nested is not None:
            yield from _descriptions(nested, f"{prefix}{name}.")


def _nested_model(annotation: object) -> type[BaseModel] | None:
    """The model inside an annotation such as ``X``, ``X | None`` or ``list[X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _version_or_latest(form_type: str, version: int | None) -> int:
    # An unknown type gets version 0 here so that form_model reports the type, not the version.
    return LATEST_VERSION.get(form_type, 0) if version is None else version


def example(form_type: str) -> dict[str, Any]:
    """A realistic, valid, normalised example of the latest version (fictional people)."""
    model = form_model(form_type, _version_or_latest(form_type, None))
    return model.model_validate(_EXAMPLES[form_type]).model_dump(mode="json", exclude_none=False)


_CONTACT: Final = {
    "name": "Lucía Fernández",
    "email": "lucia.fernandez@cooperacion.example",
    "phone": "+54 11 5555 0100",
}

_PERSON: Final = {
    "family_names": "Quiroga Benítez",
    "given_names": "Esteban Andrés",
    "aliases": ["El Contador", "Andrés Quiroga"],
    "date_of_birth": "1978-04-09",
    "nationalities": ["AR"],
    "identity_documents": [
        {"kind": "national_identity_card", "number": "99.123.456", "issuing_state": "AR"},
        {"kind": "passport", "number": "AAX000123", "issuing_state": "AR"},
    ],
    "physical_description": "About 1.78 m, slim, grey hair, scar above the left eyebrow.",
    "photographs_attached": True,
    "fingerprints_attached": False,
    "probable_location": "Apartment 4B, Rua Exemplo 120, Florianópolis, Santa Catarina, Brazil.",
}

_FACTS: Final = (
    "Between March 2021 and June 2023 Esteban Andrés Quiroga Benítez, accountant of the "
    "fictional company Agroexport Delta S.A., is suspected of moving about USD 2.4 million, "
    "obtained by invoicing grain exports that never took place, through accounts of Delta "
    "Trading Ltda. in São Paulo, Brazil, to hide the origin of the money."
)

_EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    "mla_request": {
        "case_reference": "FCR 4417/2024",
        "offence": "Money laundering (Criminal Code of Argentina, art. 303).",
        "summary_of_facts": _FACTS,
        "proceeding": "Investigation FCR 4417/2024 by Federal Prosecutor's Office No. 3, Buenos "
        "Aires, before Federal Criminal Court No. 7.",
        "facts_of_request": "Eleven transfers totalling USD 1.9 million reached account "
        "0001-22334-5 of Delta Trading Ltda. at Banco Exemplo S.A., São Paulo, between "
        "2021-05-04 and 2023-02-17, and were moved on to third parties within days.",
        "act_giving_rise": "Order of Federal Criminal Court No. 7 of 12 August 2024 to obtain "
        "the Brazilian bank records through international cooperation.",
        "special_procedure": "Please have the bank certify the records as true copies.",
        "assistance_sought": [
            {
                "kind": "documents_and_records",
                "description": "Opening documents, signature cards and statements from "
                "2021-01-01 to 2023-12-31 of every account of Delta Trading Ltda. at Banco "
                "Exemplo S.A., São Paulo.",
            },
            {
                "kind": "testimony",
                "description": "Hear Mr João Pereira Lima, former compliance officer of Banco "
                "Exemplo S.A., on the questions in annex 2.",
            },
        ],
        "stated_purpose": "Investigation FCR 4417/2024 for money laundering and any trial "
        "arising from it.",
        "language": "es",
        "translation_attached": True,
        "confidential": True,
        "urgency": "normal",
        "deadline": "2025-06-30",
        "contact_officer": _CONTACT,
    },
    "extradition_request": {
        "case_reference": "FCR 4417/2024",
        "channel": "diplomatic",
        "person": _PERSON,
        "offence": "Money laundering (Criminal Code of Argentina, art. 303).",
        "summary_of_facts": _FACTS,
        "law_texts": {
            "offence": "Art. 303(1): Whoever converts, transfers or otherwise deals with "
            "property originating from a criminal offence, so that it may appear lawful, ...",
            "penalty": "Art. 303(1): imprisonment of three to ten years and a fine of two to ten "
            "times the amount of the operation.",
            "limitation": "Art. 62(2): the action is time-barred after the maximum term of the "
            "penalty, never less than two years nor more than twelve.",
        },
        "basis": "prosecution",
        "arrest_warrant_reference": "Arrest warrant of Federal Criminal Court No. 7, 3 March "
        "2025, file FCR 4417/2024",
        "language": "es",
        "translation_attached": True,
        "confidential": True,
        "contact_officer": _CONTACT,
    },
    "provisional_arrest": {
        "case_reference": "FCR 4417/2024",
        "person": _PERSON,
        "offence": "Money laundering (Criminal Code of Argentina, art. 303).",
        "summary_of_facts": _FACTS,
        "warrant_or_judgment_reference": "Arrest warrant of Federal Criminal Court No. 7, 3 "
        "March 2025",
        "formal_request_will_follow": True,
        "formal_request_due_days": 60,
        "language": "es",
        "translation_attached": True,
        "confidential": True,
        "contact_officer": _CONTACT,
    },
    "additional_info_request": {
        "information_needed": "The CNPJ number of Delta Trading Ltda. and the account numbers.",
        "reason": "Brazilian banks can search their records only by tax number or account.",
        "deadline": "2025-04-15",
    },
    "supplement": {
        "text": "Delta Trading Ltda. is registered under CNPJ 00.000.000/0001-91; the known "
        "account is 0001-22334-5.",
        "documents": ["Extract of the Argentine customs file, 4 pages"],
    },
    "return_with_reasons": {
        "reason": "dual_criminality",
        "explanation": "The conduct described is not an offence under the law of the requested "
        "state, and the assistance sought requires coercive measures.",
    },
    "execution_result": {
        "extent": "partial",
        "summary": "Bank records obtained and certified. Mr Pereira Lima could not be found.",
        "items_delivered": ["Certified statements of account 0001-22334-5, 212 pages"],
        "use_restriction": "Investigation FCR 4417/2024 for money laundering and any trial "
        "arising from it.",
    },
    "withdrawal": {"reason": "The accused died on 2 May 2025; the proceedings are closed."},
    "acknowledgement": {
        "received_on": "2025-03-12",
        "central_authority_reference": "DRCI/SNJ 08012.000123/2025-11",
        "remarks": "Forwarded to the Federal Prosecution Service in São Paulo.",
    },
    "status_inquiry": {"question": "Has the bank produced the records asked for in March?"},
}
