"""The shapes of the treaty forms, version 1. Registry, validation and help live in ``forms.py``.

Field lists follow ``reference/treaties.md``: OAS treaty A-55 (mutual legal assistance) Art. 25-26
and B-47 (extradition). Each class name carries its version, so that a corrected version 2 can sit
beside it while old records, stored with their version number, keep validating against the shape
they were written in. Class names are also the OpenAPI component names, hence the ``Form`` prefix.

Every string and list is bounded: forms come from browsers and from other states' nodes.
"""

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

# Control characters have no place in a legal form and corrupt logs, terminals and printouts.
# Multi-line text keeps tab, line feed and carriage return.
ONE_LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
MULTI_LINE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
# The HTML living standard's address syntax: what a browser's email input accepts, no more.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
PHONE_PATTERN = r"^\+?[0-9][0-9 ().-]*[0-9]$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"

# What to tell a clerk when a pattern does not match, since a regex means nothing to a lawyer.
PATTERN_HINTS: dict[str, str] = {
    ONE_LINE_PATTERN: "Must be a single line of text without control characters.",
    MULTI_LINE_PATTERN: "Must not contain control characters.",
    EMAIL_PATTERN: "Must be an email address, such as name@ministry.example.",
    PHONE_PATTERN: "Must be a telephone number with country code, such as +54 11 5555 0100.",
    COUNTRY_PATTERN: "Must be a two-letter country code in capitals (ISO 3166), such as AR.",
}

# The models strip surrounding whitespace before checking the length, so a blank string is too
# short; the JSON Schema says so too. The characters pydantic-core's trim removes (Unicode
# White_Space), spelled out: regex engines disagree on what ``\s`` matches.
BLANK_PATTERN = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
_NOT_BLANK = Field(json_schema_extra={"not": {"pattern": BLANK_PATTERN}})
Line = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=ONE_LINE_PATTERN), _NOT_BLANK
]
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=4_000, pattern=MULTI_LINE_PATTERN), _NOT_BLANK
]
LongText = Annotated[
    str, StringConstraints(min_length=1, max_length=20_000, pattern=MULTI_LINE_PATTERN), _NOT_BLANK
]
CountryCode = Annotated[str, StringConstraints(min_length=2, max_length=2, pattern=COUNTRY_PATTERN)]
Email = Annotated[str, StringConstraints(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]
Phone = Annotated[str, StringConstraints(min_length=5, max_length=32, pattern=PHONE_PATTERN)]

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date(value: object) -> object:
    # Only YYYY-MM-DD: Python and pydantic would also take week dates, compact forms and Unix
    # timestamps, which a clerk never means and which read differently in different states.
    if type(value) is date:
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PydanticCustomError("mla_invalid_date", "Must be a real date written YYYY-MM-DD.")


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class _FormModel(BaseModel):
    # strict: no coercion of hostile input ("yes" is not true, "60" is not 60, 0 is not a date).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


# --- parts shared by several forms ---------------------------------------------------------


class FormContactOfficerV1(_FormModel):
    """The official the other state can contact about this request."""

    name: Line = Field(description="Full name.")
    email: Email = Field(description="Work email address.")
    phone: Phone = Field(description="Work telephone number with country code.")


class FormIdentityDocumentV1(_FormModel):
    """An identity document of the person sought."""

    kind: Literal["passport", "national_identity_card", "driving_licence", "other"] = Field(
        description="Type of document."
    )
    number: Line = Field(description="Document number as printed on it.")
    issuing_state: CountryCode = Field(description="State that issued it (two-letter code).")


class FormPersonV1(_FormModel):
    """The person whose extradition or arrest is sought (B-47)."""

    family_names: Line = Field(description="Family name or names, as in official documents.")
    given_names: Line = Field(description="Given name or names.")
    aliases: list[Line] = Field(
        default_factory=list, max_length=20, description="Other names the person is known by."
    )
    date_of_birth: IsoDate | None = Field(default=None, description="Date of birth, if known.")
    nationalities: list[CountryCode] = Field(
        default_factory=list,
        max_length=5,
        description="Nationalities, if known (two-letter codes).",
    )
    identity_documents: list[FormIdentityDocumentV1] = Field(
        default_factory=list, max_length=20, description="Known identity documents."
    )
    physical_description: Text | None = Field(
        default=None, description="Height, build, distinguishing marks and similar."
    )
    photographs_attached: bool = Field(default=False, description="Photographs are attached.")
    fingerprints_attached: bool = Field(default=False, description="Fingerprints are attached.")
    probable_location: Text = Field(description="Where the person is believed to be now.")


class FormAssistanceMeasureV1(_FormModel):
    """One act of assistance asked of the requested state (A-55 Art. 7 and 26(d))."""

    kind: Literal[
        "service_of_documents",
        "testimony",
        "appearance_of_witness_or_expert",
        "search_or_seizure",
        "freezing_of_assets",
        "inspection",
        "documents_and_records",
        "transfer_of_detained_person",
        "other",
    ] = Field(description="Type of assistance.")
    description: Text = Field(
        description="Exactly what is to be done, with all that is needed to do it: persons to "
        "hear or serve, places to search, items to seize, accounts, documents."
    )


class FormLawTextsV1(_FormModel):
    """The text of the requesting state's laws that apply to the case (B-47)."""

    offence: LongText = Field(description="Text of the provisions that define the offence.")
    penalty: LongText = Field(description="Text of the provisions that set the penalty.")
    limitation: LongText = Field(description="Text of the provisions on the limitation period.")


# One description per recurring field, so that the three request forms cannot drift apart.
CaseReference = Annotated[
    Line, Field(description="The requesting authority's own file number for this case.")
]
RequestLanguage = Annotated[
    Literal["en", "es", "pt", "fr"],
    Field(description="Language the request is written in: en, es, pt or fr."),
]
TranslationAttached = Annotated[
    bool,
    Field(
        description="A translation into an official language of the requested state is attached."
    ),
]
# Confidential unless the clerk says otherwise: disclosing too little is the recoverable mistake.
Confidential = Annotated[
    bool, Field(description="The requested state is asked to keep the request confidential.")
]
ContactOfficer = Annotated[
    FormContactOfficerV1, Field(description="Who to contact about this request.")
]
Offence = Annotated[
    Text, Field(description="The offence or offences concerned, with their legal name.")
]
Person = Annotated[FormPersonV1, Field(description="The person sought.")]


# --- the three forms that open a case ------------------------------------------------------


class FormMlaRequestV1(_FormModel):
    """Request for mutual legal assistance in a criminal matter (OAS A-55)."""

    case_reference: CaseReference
    offence: Offence
    summary_of_facts: LongText = Field(
        description="Summary of the facts that constitute the offence (Art. 26(a))."
    )
    proceeding: Text = Field(
        description="The investigation or criminal trial concerned: authority, court and file."
    )
    facts_of_request: LongText = Field(description="The facts this request refers to (Art. 26(a)).")
    act_giving_rise: Text = Field(
        description="The act that gives rise to the request, described precisely (Art. 26(b))."
    )
    special_procedure: Text | None = Field(
        default=None,
        description="Any special procedure or requirement of the requesting state (Art. 26(c)).",
    )
    assistance_sought: list[FormAssistanceMeasureV1] = Field(
        min_length=1, max_length=50, description="The assistance sought (Art. 26(d))."
    )
    stated_purpose: Text = Field(
        description="The purpose the evidence may be used for; any other use needs the "
        "requested state's consent (Art. 25)."
    )
    language: RequestLanguage
    translation_attached: TranslationAttached = False
    confidential: Confidential = True
    urgency: Literal["normal", "urgent"] = Field(
        default="normal", description="normal or urgent; say why in the facts if urgent."
    )
    deadline: IsoDate | None = Field(
        default=None, description="Date by which the assistance is needed, if any."
    )
    contact_officer: ContactOfficer


# Which documents each basis of extradition needs (B-47); checked field by field so that a
# missing document is reported together with every other problem of the form.
_BASIS_DOCUMENTS: dict[str, tuple[str, ...]] = {
    "prosecution": ("arrest_warrant_reference",),
    "enforcement": ("judgment_reference", "sentence_remaining"),
}
_DOCUMENT_FIELDS = tuple(dict.fromkeys(f for fields in _BASIS_DOCUMENTS.values() for f in fields))


class FormExtraditionRequestV1(_FormModel):
    """Formal request for extradition (OAS B-47)."""

    # _required_by_basis, for readers of the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"basis": {"const": basis}}, "required": ["basis"]},
                    "then": {
                        "required": list(fields),
                        "properties": {field: {"not": {"type": "null"}} for field in fields},
                    },
                }
                for basis, fields in _BASIS_DOCUMENTS.items()
            ]
        }
    )

    case_reference: CaseReference
    channel: Literal["diplomatic", "consular", "government_to_government"] = Field(
        description="How the request is transmitted."
    )
    person: Person
    offence: Offence
    summary_of_facts: LongText = Field(description="Summary of the facts of the case.")
    law_texts: FormLawTextsV1 = Field(description="Text of the laws that apply.")
    basis: Literal["prosecution", "enforcement"] = Field(
        description="prosecution (to stand trial) or enforcement (to serve a sentence)."
    )
    arrest_warrant_reference: Line | None = Field(
        default=None,
        validate_default=True,
        description="For prosecution: the arrest warrant or equivalent judicial order; attach a "
        "certified copy.",
    )
    judgment_reference: Line | None = Field(
        default=None,
        validate_default=True,
        description="For enforcement: the final judgment; attach a certified copy and proof "
        "that it is enforceable.",
    )
    sentence_remaining: Line | None = Field(
        default=None,
        validate_default=True,
        description="For enforcement: the part of the sentence still to be served.",
    )
    language: RequestLanguage
    translation_attached: TranslationAttached = False
    confidential: Confidential = True
    contact_officer: ContactOfficer

    @field_validator(*_DOCUMENT_FIELDS)
    @classmethod
    def _required_by_basis(cls, value: str | None, info: ValidationInfo) -> str | None:
        # ``basis`` is declared earlier, so it is in ``info.data`` unless it was itself invalid.
        basis = info.data.get("basis", "")
        if value is None and info.field_name in _BASIS_DOCUMENTS.get(basis, ()):
            raise PydanticCustomError(
                "mla_missing", "Required when extradition is sought for {basis}.", {"basis": basis}
            )
        return value


class FormProvisionalArrestV1(_FormModel):
    """Urgent request to arrest a person until the formal extradition request arrives (B-47)."""

    case_reference: CaseReference
    person: Person
    offence: Offence
    summary_of_facts: Text = Field(description="Short summary of the facts.")
    warrant_or_judgment_reference: Line = Field(
        description="The arrest warrant or the judgment on which the request rests."
    )
    formal_request_will_follow: bool = Field(
        description="The requesting state undertakes to send the formal extradition request.",
        json_schema_extra={"const": True},  # _undertaking_given refuses false
    )
    formal_request_due_days: int = Field(
        default=60,
        ge=1,
        le=120,
        description="Days within which the formal request will be sent after the arrest.",
    )
    language: RequestLanguage
    translation_attached: TranslationAttached = False
    confidential: Confidential = True
    contact_officer: ContactOfficer

    @field_validator("formal_request_will_follow")
    @classmethod
    def _undertaking_given(cls, value: bool) -> bool:
        # A provisional arrest without the undertaking would be detention with no end in view.
        if not value:
            raise PydanticCustomError(
                "mla_invalid_value",
                "A provisional arrest needs the undertaking that a formal request will follow.",
            )
        return value


# --- the messages that follow a request within its case ------------------------------------


class FormAdditionalInfoRequestV1(_FormModel):
    """The requested state asks for more information before it can act."""

    information_needed: Text = Field(description="What information or documents are needed.")
    reason: Text = Field(description="Why they are needed.")
    deadline: IsoDate | None = Field(default=None, description="Date to answer by, if any.")


class FormSupplementV1(_FormModel):
    """The answer to a request for additional information."""

    text: LongText = Field(description="The information asked for.")
    documents: list[Line] = Field(
        default_factory=list, max_length=200, description="Description of each document attached."
    )


class FormReturnWithReasonsV1(_FormModel):
    """The requested state returns the request unexecuted and says why."""

    reason: Literal[
        "incomplete",
        "not_covered_by_treaty",
        "dual_criminality",
        "double_jeopardy",
        "political_offence",
        "public_order",
        "other",
    ] = Field(description="The main ground for returning the request.")
    explanation: Text = Field(description="The reasons, in full.")


class FormExecutionResultV1(_FormModel):
    """What the requested state did, and what it sends back."""

    extent: Literal["partial", "full"] = Field(description="Executed in part or in full.")
    summary: Text = Field(description="What was done, and what was not and why.")
    items_delivered: list[Line] = Field(
        default_factory=list, max_length=200, description="Description of each item sent back."
    )
    use_restriction: Text | None = Field(
        default=None,
        description="The purpose stated in the request; the results may be used for it only.",
    )


class FormWithdrawalV1(_FormModel):
    """The requesting state withdraws its request."""

    reason: Text = Field(description="Why the request is withdrawn.")


class FormAcknowledgementV1(_FormModel):
    """The central authority confirms it has received the request."""

    received_on: IsoDate = Field(description="Date the central authority received it.")
    central_authority_reference: Line = Field(description="The central authority's file number.")
    remarks: Text | None = Field(default=None, description="Any remarks.")


class FormStatusInquiryV1(_FormModel):
    """A question about where the request stands."""

    question: Text = Field(description="The question.")
