"""The web interface's words in English and Spanish: one catalog, keyed by the English text's id.

A page asks ``t(key)``; a missing Spanish entry falls back to English (a test checks there is
none). The language comes from ``?lang=``, then the ``mla_lang`` cookie, then Accept-Language.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

LANGUAGES: Final = ("en", "es")
DEFAULT: Final = "en"

EN: Final[dict[str, str]] = {
    "app": "Mutual legal assistance node",
    "skip": "Skip to content",
    "signin": "Sign in",
    "signout": "Sign out",
    "signin.help": "Paste the API token your node's administrator gave you. It is checked once; "
    "the page then keeps a session that ends when you sign out or after a while unused.",
    "token": "Token",
    "signin.bad": "That token is unknown or revoked.",
    "signed_in_as": "Signed in as",
    "nav": "Main menu",
    "cases": "Cases",
    "inbox": "Inbox",
    "new": "New request",
    "network": "Network",
    "audit": "Audit",
    "verify": "Verify a bundle",
    "language": "Language",
    "filters": "Filters",
    "box": "Box",
    "all": "All",
    "outbox": "Sent",
    "inboxbox": "Received",
    "status": "Status",
    "type": "Type",
    "peer": "Other state",
    "search": "Search by id",
    "apply": "Apply",
    "case": "Case",
    "opened": "Opened",
    "deadline": "Deadline",
    "overdue": "Overdue",
    "no_cases": "No case matches.",
    "unread": "Unread",
    "read": "Read",
    "id": "Id",
    "from": "From",
    "to": "To",
    "received_at": "Received",
    "empty_inbox": "Nothing has been received yet.",
    "request": "Request",
    "use_restriction": "Use restriction",
    "handling": "Handling",
    "content": "Content",
    "no_content": "The content is not shown to your role.",
    "purged": "The contents were purged.",
    "attachments": "Evidence files",
    "download": "Download",
    "timeline": "Evidence timeline",
    "event": "Event",
    "node": "Node",
    "when": "When",
    "by": "By",
    "verified": "Verified",
    "not_verified": "Not verified",
    "receipt": "Receipt",
    "thread": "Case thread",
    "actions": "Actions",
    "acknowledge": "Acknowledge receipt",
    "reply": "Send a follow-up",
    "send": "Send",
    "form_errors": "Some fields need attention.",
    "required": "required",
    "optional": "optional",
    "file_upload": "Evidence files",
    "file_help": "Each file is encrypted on this node as it is uploaded and travels with the "
    "request.",
    "upload": "Upload",
    "uploaded": "Uploaded",
    "progress": "Upload progress",
    "requested_state": "Requested state",
    "choose_type": "Form",
    "sent": "Sent. The request is on its way.",
    "reachable": "Reachable",
    "unreachable": "Unreachable",
    "unknown": "Unknown",
    "queued": "Queued",
    "directory": "Directory",
    "version": "Version",
    "expires": "Expires",
    "authority": "Authority",
    "endpoint": "Endpoint",
    "last_error": "Last error",
    "checkpoints": "Checkpoints",
    "size": "Size",
    "root": "Root",
    "log": "Log",
    "seq": "No.",
    "actor": "Who",
    "detail": "Detail",
    "next_page": "Next records",
    "export": "Export the evidence bundle",
    "bundle_file": "Bundle file",
    "verify.help": "Choose a bundle file exported by a node. It is checked with this network's "
    "trust root alone.",
    "verdict.ok": "The bundle verifies.",
    "verdict.bad": "The bundle does NOT verify.",
    "account": "What the bundle shows",
    "error": "Error",
    "forbidden": "Your role may not open this page.",
    "not_found": "There is no such page or request.",
    "csrf": "The form expired or did not come from this site. Please try again.",
    "back": "Back to the cases",
    "yes": "yes",
    "no": "no",
    "add_row": "Another entry can be given in the empty rows below.",
    "list_help": "One entry per line.",
    # legal states
    "state.submitted": "Submitted",
    "state.delivered": "Delivered",
    "state.acknowledged": "Acknowledged",
    "state.additional_info_requested": "Additional information requested",
    "state.supplemented": "Supplemented",
    "state.returned": "Returned",
    "state.executed": "Executed",
    "state.withdrawn": "Withdrawn",
    "state.undeliverable": "Undeliverable",
    "state.rejected": "Rejected",
    # form types
    "form.mla_request": "Mutual legal assistance request",
    "form.extradition_request": "Extradition request",
    "form.provisional_arrest": "Provisional arrest",
    "form.additional_info_request": "Ask for additional information",
    "form.supplement": "Supplement",
    "form.return_with_reasons": "Return with reasons",
    "form.execution_result": "Execution result",
    "form.withdrawal": "Withdrawal",
    "form.acknowledgement": "Acknowledgement",
    "form.status_inquiry": "Status inquiry",
}

ES: Final[dict[str, str]] = {
    "app": "Nodo de asistencia jurídica mutua",
    "skip": "Ir al contenido",
    "signin": "Iniciar sesión",
    "signout": "Cerrar sesión",
    "signin.help": "Pegue el token de API que le dio el administrador del nodo. Se comprueba una "
    "vez; la página mantiene luego una sesión que termina al cerrarla o tras un tiempo sin uso.",
    "token": "Token",
    "signin.bad": "Ese token es desconocido o fue revocado.",
    "signed_in_as": "Sesión de",
    "nav": "Menú principal",
    "cases": "Casos",
    "inbox": "Bandeja de entrada",
    "new": "Nueva solicitud",
    "network": "Red",
    "audit": "Auditoría",
    "verify": "Verificar un paquete",
    "language": "Idioma",
    "filters": "Filtros",
    "box": "Bandeja",
    "all": "Todos",
    "outbox": "Enviados",
    "inboxbox": "Recibidos",
    "status": "Estado",
    "type": "Tipo",
    "peer": "Otro Estado",
    "search": "Buscar por id",
    "apply": "Aplicar",
    "case": "Caso",
    "opened": "Abierto",
    "deadline": "Plazo",
    "overdue": "Vencido",
    "no_cases": "Ningún caso coincide.",
    "unread": "No leído",
    "read": "Leído",
    "id": "Id",
    "from": "De",
    "to": "Para",
    "received_at": "Recibido",
    "empty_inbox": "Todavía no se ha recibido nada.",
    "request": "Solicitud",
    "use_restriction": "Restricción de uso",
    "handling": "Tratamiento",
    "content": "Contenido",
    "no_content": "El contenido no se muestra a su rol.",
    "purged": "El contenido fue eliminado.",
    "attachments": "Archivos de prueba",
    "download": "Descargar",
    "timeline": "Cronología de pruebas",
    "event": "Evento",
    "node": "Nodo",
    "when": "Cuándo",
    "by": "Por",
    "verified": "Verificado",
    "not_verified": "No verificado",
    "receipt": "Acuse",
    "thread": "Hilo del caso",
    "actions": "Acciones",
    "acknowledge": "Acusar recibo",
    "reply": "Enviar un seguimiento",
    "send": "Enviar",
    "form_errors": "Algunos campos requieren atención.",
    "required": "obligatorio",
    "optional": "opcional",
    "file_upload": "Archivos de prueba",
    "file_help": "Cada archivo se cifra en este nodo al subirlo y viaja con la solicitud.",
    "upload": "Subir",
    "uploaded": "Subido",
    "progress": "Progreso de la subida",
    "requested_state": "Estado requerido",
    "choose_type": "Formulario",
    "sent": "Enviada. La solicitud está en camino.",
    "reachable": "Accesible",
    "unreachable": "No accesible",
    "unknown": "Desconocido",
    "queued": "En cola",
    "directory": "Directorio",
    "version": "Versión",
    "expires": "Vence",
    "authority": "Autoridad",
    "endpoint": "Dirección",
    "last_error": "Último error",
    "checkpoints": "Puntos de control",
    "size": "Tamaño",
    "root": "Raíz",
    "log": "Registro",
    "seq": "N.º",
    "actor": "Quién",
    "detail": "Detalle",
    "next_page": "Registros siguientes",
    "export": "Exportar el paquete de pruebas",
    "bundle_file": "Archivo del paquete",
    "verify.help": "Elija un paquete exportado por un nodo. Se comprueba solo con la raíz de "
    "confianza de esta red.",
    "verdict.ok": "El paquete es válido.",
    "verdict.bad": "El paquete NO es válido.",
    "account": "Lo que muestra el paquete",
    "error": "Error",
    "forbidden": "Su rol no puede abrir esta página.",
    "not_found": "No existe esa página o solicitud.",
    "csrf": "El formulario expiró o no provino de este sitio. Inténtelo de nuevo.",
    "back": "Volver a los casos",
    "yes": "sí",
    "no": "no",
    "add_row": "Puede indicar otra entrada en las filas vacías de abajo.",
    "list_help": "Una entrada por línea.",
    "state.submitted": "Presentada",
    "state.delivered": "Entregada",
    "state.acknowledged": "Recibo acusado",
    "state.additional_info_requested": "Información adicional solicitada",
    "state.supplemented": "Complementada",
    "state.returned": "Devuelta",
    "state.executed": "Ejecutada",
    "state.withdrawn": "Retirada",
    "state.undeliverable": "No entregable",
    "state.rejected": "Rechazada",
    "form.mla_request": "Solicitud de asistencia jurídica mutua",
    "form.extradition_request": "Solicitud de extradición",
    "form.provisional_arrest": "Detención provisional",
    "form.additional_info_request": "Pedir información adicional",
    "form.supplement": "Complemento",
    "form.return_with_reasons": "Devolución motivada",
    "form.execution_result": "Resultado de la ejecución",
    "form.withdrawal": "Retiro",
    "form.acknowledgement": "Acuse de recibo",
    "form.status_inquiry": "Consulta de estado",
}

# Labels of the treaty form fields (by field name; nested fields use their own name).
FIELDS_ES: Final[dict[str, str]] = {
    "case_reference": "Referencia del caso",
    "offence": "Delito",
    "summary_of_facts": "Resumen de los hechos",
    "proceeding": "Procedimiento",
    "facts_of_request": "Hechos de la solicitud",
    "act_giving_rise": "Acto que motiva la solicitud",
    "special_procedure": "Procedimiento especial",
    "assistance_sought": "Asistencia solicitada",
    "kind": "Clase",
    "description": "Descripción",
    "stated_purpose": "Finalidad declarada",
    "language": "Idioma",
    "translation_attached": "Traducción adjunta",
    "confidential": "Confidencial",
    "urgency": "Urgencia",
    "deadline": "Plazo",
    "contact_officer": "Funcionario de contacto",
    "name": "Nombre",
    "email": "Correo electrónico",
    "phone": "Teléfono",
    "information_needed": "Información necesaria",
    "reason": "Motivo",
    "text": "Texto",
    "documents": "Documentos",
    "explanation": "Explicación",
    "extent": "Alcance",
    "summary": "Resumen",
    "items_delivered": "Elementos entregados",
    "use_restriction": "Restricción de uso",
    "received_on": "Recibido el",
    "central_authority_reference": "Referencia de la autoridad central",
    "remarks": "Observaciones",
    "question": "Pregunta",
    "person": "Persona",
    "channel": "Vía",
    "law_texts": "Textos legales",
    "basis": "Fundamento",
    "arrest_warrant_reference": "Referencia de la orden de detención",
    "judgment_reference": "Referencia de la sentencia",
    "sentence_remaining": "Pena por cumplir",
    "warrant_or_judgment_reference": "Referencia de la orden o sentencia",
    "formal_request_will_follow": "Seguirá la solicitud formal",
    "formal_request_due_days": "Días para la solicitud formal",
}

CATALOGS: Final = {"en": EN, "es": ES}

_MONTHS_ES: Final = (
    "ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic",
)  # fmt: skip


def choose(query: str | None, cookie: str | None, accept: str | None) -> str:
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return candidate
    for part in (accept or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT


def translate(lang: str, key: str) -> str:
    return CATALOGS.get(lang, EN).get(key) or EN.get(key, key)


def field_label(lang: str, name: str, title: str) -> str:
    if lang == "es":
        return FIELDS_ES.get(name, title)
    return title


def when(lang: str, iso: str | None) -> str:
    """An ISO 8601 UTC time as people read it: 12 Mar 2025 14:03 UTC / 12 mar 2025 14:03 UTC."""
    if not iso:
        return ""
    at = dt.datetime.fromisoformat(iso).astimezone(dt.UTC)
    if lang == "es":
        return f"{at.day} {_MONTHS_ES[at.month - 1]} {at.year} {at:%H:%M} UTC"
    return f"{at.day} {at:%b %Y %H:%M} UTC"


def day(lang: str, value: str | None) -> str:
    if not value:
        return ""
    d = dt.date.fromisoformat(value)
    if lang == "es":
        return f"{d.day} {_MONTHS_ES[d.month - 1]} {d.year}"
    return f"{d.day} {d:%b %Y}"
