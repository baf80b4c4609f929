"""The web interface's plumbing: its own deny-by-default role table, sessions, CSRF, security
headers, language, templates, and error pages.

The UI is an aiohttp sub-application mounted at ``/ui/`` on the clerk address. The clerk API's
bearer-token middleware lets requests routed into this sub-application through
(``is_ui_request``); this module's middleware then applies ``UI_POLICY`` to every one of them:
a UI route without an entry is refused to everybody, as in the API.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from mla_node.api.request_context import CTX
from mla_node.errors import Forbidden, MlaError
from mla_node.service.context import NodeContext, Principal, Role
from mla_node.ui import i18n
from mla_node.ui.sessions import COOKIE, PRE_COOKIE, Session, SessionStore, same

UI_PREFIX = "/ui"
HERE = Path(__file__).parent
UI_MARK = web.AppKey("ui_mark", bool)
SESSIONS = web.AppKey("ui_sessions", SessionStore)
TEMPLATES = web.AppKey("ui_templates", jinja2.Environment)
SESSION = web.RequestKey("ui_session", Session)
LANG = web.RequestKey("ui_lang", str)
PRE_CSRF = web.RequestKey("ui_pre_csrf", str)  # the sign-in form's CSRF value
LANG_COOKIE = "mla_lang"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"

ANYONE: frozenset[Role] = frozenset(Role)
CLERK = frozenset({Role.CLERK})
AUDITORS = frozenset({Role.AUDITOR, Role.ADMIN})
NO_SESSION = None  # the route needs no session (sign-in and static files)
# (method, route) -> roles with a session that may use it; None: no session needed.
UI_POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("GET", "/ui/"): NO_SESSION,  # a redirect: to the cases, or to the sign-in
    ("GET", "/ui/signin"): NO_SESSION,
    ("POST", "/ui/signin"): NO_SESSION,
    ("GET", "/ui/static"): NO_SESSION,
    ("POST", "/ui/signout"): ANYONE,
    ("GET", "/ui/cases"): ANYONE,
    ("GET", "/ui/inbox"): ANYONE,
    ("GET", "/ui/requests/{id}"): ANYONE,
    # whoever sees the form sees its files: checked again by service/attachments.open_download
    ("GET", "/ui/requests/{id}/files/{n}"): ANYONE,
    ("POST", "/ui/requests/{id}/acknowledge"): CLERK,
    ("POST", "/ui/requests/{id}/reply"): CLERK,
    ("GET", "/ui/new"): CLERK,
    ("POST", "/ui/new"): CLERK,
    ("POST", "/ui/attachments"): CLERK,
    ("GET", "/ui/network"): ANYONE,
    ("GET", "/ui/audit"): AUDITORS,
    ("GET", "/ui/audit/verify"): AUDITORS,
    ("POST", "/ui/audit/verify"): AUDITORS,
    # as in the API: a clerk may need a case's bundle for a court as much as an auditor does
    ("GET", "/ui/bundles/{id}"): frozenset({Role.CLERK, Role.AUDITOR, Role.ADMIN}),
}
# Routes whose body is a stream (a file): the CSRF token comes in a header or as the first part
# of a multipart body, and the handler checks it (``check_csrf``) before it reads anything else.
STREAMED = frozenset({("POST", "/ui/attachments"), ("POST", "/ui/audit/verify")})

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_ui_request(request: web.Request) -> bool:
    """Whether the request was routed into the UI sub-application (which checks its own
    sessions and role table); the API's bearer-token middleware lets only these through."""
    return any(UI_MARK in app for app in request.match_info.apps)


def node(request: web.Request) -> NodeContext:
    return request.config_dict[CTX]


def session_of(request: web.Request) -> Session:
    session: Session = request[SESSION]
    return session


def principal(request: web.Request) -> Principal:
    return session_of(request).principal


def lang_of(request: web.Request) -> str:
    lang: str = request.get(LANG, i18n.DEFAULT)
    return lang


def csrf_refused(detail: str = "the form's CSRF token is missing or wrong") -> Forbidden:
    """A 403 (no error class of its own: the API's error codes stay as documented)."""
    return Forbidden(detail, extra={"reason": "csrf"})


def check_csrf(request: web.Request, token: str | None) -> None:
    session = request.get(SESSION)
    expected = session.csrf if session is not None else request.cookies.get(PRE_COOKIE)
    if not same(token, expected):
        raise csrf_refused()


def _same_origin(request: web.Request) -> bool:
    # With Referrer-Policy: no-referrer, browsers send "Origin: null" on form posts; then the
    # CSRF token (and the SameSite=Strict cookie) decide alone. A named other origin never passes.
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True
    return origin == f"{request.scheme}://{request.host}"


def render(
    request: web.Request,
    template: str,
    status: int = 200,
    **context: Any,
) -> web.Response:
    lang = lang_of(request)
    session = request.get(SESSION)
    env = request.config_dict[TEMPLATES]
    html = env.get_template(template).render(
        lang=lang,
        t=lambda key: i18n.translate(lang, key),
        when=lambda iso: i18n.when(lang, iso),
        day=lambda value: i18n.day(lang, value),
        session=session,
        role=session.principal.role.value if session else None,
        csrf=session.csrf if session else request.get(PRE_CSRF, ""),
        path=request.path,
        languages=list(i18n.LANGUAGE_NAMES.items()),
        lang_href=lambda code: _with_query(request, lang=code),
        href=lambda **changes: _with_query(request, **changes),
        **context,
    )
    response = web.Response(text=html, status=status, content_type="text/html")
    if request.query.get("lang") in i18n.LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, lang, path=UI_PREFIX, httponly=True, samesite="Strict",
            secure=request.secure, max_age=365 * 24 * 3600,
        )  # fmt: skip
    return response


def _with_query(request: web.Request, **changes: object) -> str:
    """This page's query string (filters, search, page) with ``changes`` made; None removes."""
    query = {k: v for k, v in request.query.items() if k not in changes}
    query.update({k: str(v) for k, v in changes.items() if v is not None})
    return "?" + urlencode(query)


def redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def _error_page(request: web.Request, exc: MlaError) -> web.Response:
    key = {403: "forbidden", 404: "not_found"}.get(exc.status, "error")
    if exc.extra.get("reason") == "csrf":
        key = "csrf"
    return render(
        request, "error.html", status=exc.status, message_key=key, detail=exc.detail, code=exc.code
    )


@web.middleware
async def ui_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[LANG] = i18n.choose(
        request.query.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.headers.get("Accept-Language"),
    )
    resource = request.match_info.route.resource
    if resource is None:
        return await handler(request)  # aiohttp's 404/405
    key = (request.method, resource.canonical)
    if request.method == "HEAD":
        key = ("GET", resource.canonical)
    try:
        if key not in UI_POLICY:
            raise _forbidden(request.method, resource.canonical)
        allowed = UI_POLICY[key]
        if allowed is not NO_SESSION:
            store = request.config_dict[SESSIONS]
            session = store.get(request.cookies.get(COOKIE), node(request).clock())
            if session is None:
                if request.method == "GET":
                    target = request.path_qs
                    raise redirect(f"{UI_PREFIX}/signin?next={quote(target, safe='')}")
                raise redirect(f"{UI_PREFIX}/signin")
            request[SESSION] = session
            if session.principal.role not in allowed:
                raise _forbidden(request.method, resource.canonical)
        if request.method not in ("GET", "HEAD"):
            if not _same_origin(request):
                raise csrf_refused("the form came from another site")
            if key not in STREAMED:
                header = request.headers.get(CSRF_HEADER)
                if header is None:
                    form = await request.post()
                    value = form.get(CSRF_FIELD)
                    header = value if isinstance(value, str) else None
                check_csrf(request, header)
        return await handler(request)
    except MlaError as exc:
        return _error_page(request, exc)


def _forbidden(method: str, route: str) -> MlaError:
    return Forbidden(f"this role may not {method} {route}")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.content_type == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")


def new_pre_csrf() -> str:
    return secrets.token_urlsafe(32)


def make_ui_app() -> web.Application:
    from mla_node.ui import pages  # the handlers import this module

    app = web.Application(middlewares=[ui_middleware])
    app[UI_MARK] = True
    app[SESSIONS] = SessionStore()
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app.on_response_prepare.append(_security_headers)
    pages.add_routes(app.router)
    app.router.add_static("/static", HERE / "static", append_version=False)
    return app


def add_ui(app: web.Application) -> None:
    """Mount the web interface at /ui/ on the clerk application."""
    app.add_subapp(UI_PREFIX + "/", make_ui_app())
