"""The pages of the web interface. Every handler goes through the service layer, exactly as the
clerk API does: the same use cases, the same validation, the same evidence."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from mla_node.api.attachment_routes import file_position, stream_download
from mla_node.errors import FormInvalid, InvalidParameter, MlaError
from mla_node.ids import is_ulid
from mla_node.protocol import forms
from mla_node.protocol.attachments import decode_name_header
from mla_node.service import attachments, cases, views
from mla_node.service.context import Role
from mla_node.service.tokens import authenticate
from mla_node.ui import audit_pages, casework, formgen, paging
from mla_node.ui.core import (
    CSRF_HEADER,
    PRE_CSRF,
    SESSIONS,
    UI_PREFIX,
    check_csrf,
    lang_of,
    new_pre_csrf,
    node,
    principal,
    redirect,
    render,
    session_of,
)
from mla_node.ui.sessions import COOKIE, PRE_COOKIE

# The follow-ups a clerk can send from a request's page, by who is sending.
REQUESTED_SIDE = ("additional_info_request", "return_with_reasons", "execution_result")
REQUESTING_SIDE = ("supplement", "withdrawal", "status_inquiry")


def _cookie(response: web.StreamResponse, request: web.Request, name: str, value: str) -> None:
    response.set_cookie(
        name, value, path=UI_PREFIX, httponly=True, samesite="Strict", secure=request.secure
    )


def _message_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if not is_ulid(value):
        raise InvalidParameter("the id must be a 26-character message id", field="id")
    return value


async def home(request: web.Request) -> web.StreamResponse:
    session = request.config_dict[SESSIONS].get(request.cookies.get(COOKIE), node(request).clock())
    raise redirect(f"{UI_PREFIX}/cases" if session else f"{UI_PREFIX}/signin")


def _safe_next(value: str | None) -> str:
    if value and value.startswith(UI_PREFIX + "/") and not value.startswith("//"):
        return value
    return f"{UI_PREFIX}/cases"


async def signin_page(request: web.Request) -> web.Response:
    pre = request.cookies.get(PRE_COOKIE) or new_pre_csrf()
    request[PRE_CSRF] = pre
    response = render(request, "signin.html", next=_safe_next(request.query.get("next")), bad=False)
    _cookie(response, request, PRE_COOKIE, pre)
    return response


async def signin(request: web.Request) -> web.StreamResponse:
    form = await request.post()  # the CSRF field was checked against the pre-session cookie
    token = str(form.get("token", "")).strip()
    try:
        who = await authenticate(node(request).db, f"Bearer {token}")
    except MlaError:
        request[PRE_CSRF] = request.cookies.get(PRE_COOKIE, "")
        return render(
            request, "signin.html", status=401, next=_safe_next(str(form.get("next", ""))), bad=True
        )
    session = request.config_dict[SESSIONS].create(who, node(request).clock())
    response = web.HTTPSeeOther(_safe_next(str(form.get("next", ""))))
    _cookie(response, request, COOKIE, session.id)
    response.del_cookie(PRE_COOKIE, path=UI_PREFIX)
    raise response


async def signout(request: web.Request) -> web.StreamResponse:
    request.config_dict[SESSIONS].end(session_of(request).id)
    response = web.HTTPSeeOther(f"{UI_PREFIX}/signin")
    response.del_cookie(COOKIE, path=UI_PREFIX)
    raise response


def _choice(request: web.Request, name: str, allowed: Any) -> str | None:
    value = request.query.get(name) or None
    return value if value in allowed else None


async def cases_page(request: web.Request) -> web.Response:
    q = request.query
    filters = {
        "box": _choice(request, "box", ("outbox", "inbox")),
        "status": _choice(request, "status", casework.STATES),
        "form_type": _choice(request, "type", forms.REQUEST_TYPES),
        "peer": (q.get("peer") or "").upper()[:2] or None,
        "search": (q.get("q") or "").strip()[:26] or None,
    }
    ctx = node(request)
    page = await casework.case_page(
        ctx,
        box=filters["box"],
        status=filters["status"],
        form_type=filters["form_type"],
        peer=filters["peer"],
        search=filters["search"],
        with_dates=views.may_see_content(ctx, principal(request)),
        after=paging.cursor(q.get("after")),
        before=paging.cursor(q.get("before")),
    )
    return render(
        request,
        "cases.html",
        lines=page.items,
        page=page,
        filters=filters,
        states=casework.STATES,
        request_types=sorted(forms.REQUEST_TYPES),
    )


INBOX_PAGE = 100  # received messages on one page of the inbox


async def inbox_page(request: web.Request) -> web.Response:
    ctx = node(request)

    async def received(below: str | None) -> AsyncGenerator[dict[str, Any], None]:
        cursor = below
        while True:
            batch = await views.list_requests(
                ctx,
                box="inbox",
                status=None,
                form_type=None,
                case_id=None,
                peer=None,
                cursor=cursor,
                limit=views.MAX_PAGE,
            )
            for item in batch["items"]:
                yield item
            cursor = batch["next_cursor"]
            if cursor is None:
                return

    page = await paging.page_of(
        received,
        lambda m: str(m["id"]),
        after=paging.cursor(request.query.get("after")),
        before=paging.cursor(request.query.get("before")),
        size=INBOX_PAGE,
    )
    items = [casework.inbox_line(m) for m in page.items]
    return render(request, "inbox.html", items=items, page=page)


async def _request_view(request: web.Request, message_id: str, **extra: Any) -> web.Response:
    ctx = node(request)
    who = principal(request)
    view = await views.get_request(ctx, who, message_id)
    sides = REQUESTED_SIDE if view["box"] == "inbox" else REQUESTING_SIDE
    is_request = view["type"] in forms.REQUEST_TYPES
    can_act = who.role is Role.CLERK and view["purged_at"] is None
    acknowledged = any(e.get("event") == "acknowledged" for e in view["evidence"]) or any(
        m["type"] == "acknowledgement" for m in view["thread"]
    )
    reply_type = extra.pop("reply_type", None) or request.query.get("reply")
    if reply_type not in sides:
        reply_type = sides[0]
    lang = lang_of(request)
    return render(
        request,
        "request.html",
        status=extra.pop("status", 200),
        view=view,
        form_items=_form_items(view["form"], lang) if view["form"] else [],
        can_ack=can_act and is_request and view["box"] == "inbox" and not acknowledged,
        can_reply=can_act,
        reply_types=sides,
        reply_type=reply_type,
        reply_fields=extra.pop("reply_fields", None) or formgen.build(reply_type, lang),
        reply_other=extra.pop("reply_other", []),
        reply_failed=extra.pop("reply_failed", False),
        notice=extra.pop("notice", None),
        may_bundle=who.role in (Role.CLERK, Role.AUDITOR, Role.ADMIN),
        **extra,
    )


def _form_items(form: dict[str, Any], lang: str, prefix: str = "") -> list[tuple[str, Any]]:
    from mla_node.ui.i18n import field_label

    out: list[tuple[str, Any]] = []
    for key, value in form.items():
        if value is None:
            continue
        label = field_label(lang, key, key.replace("_", " ").capitalize())
        if isinstance(value, dict):
            out.append((label, _form_items(value, lang)))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out.append((label, [_form_items(v, lang) for v in value]))
        elif isinstance(value, list):
            out.append((label, ", ".join(str(v) for v in value)))
        elif isinstance(value, bool):
            out.append((label, "✓" if value else "✗"))
        else:
            out.append((label, "" if value is None else str(value)))
    return out


async def request_page(request: web.Request) -> web.Response:
    return await _request_view(request, _message_id(request), notice=request.query.get("sent"))


async def acknowledge(request: web.Request) -> web.StreamResponse:
    message_id = _message_id(request)
    await cases.acknowledge(node(request), principal(request), message_id, {})
    raise redirect(f"{UI_PREFIX}/requests/{message_id}?sent=ack")


async def reply(request: web.Request) -> web.StreamResponse:
    message_id = _message_id(request)
    posted = await request.post()
    reply_type = str(posted.get("type", ""))
    if reply_type not in forms.FOLLOW_UP_TYPES:
        raise InvalidParameter("choose the kind of follow-up", field="type")
    form = formgen.parse(reply_type, posted)
    try:
        await cases.reply(
            node(request),
            principal(request),
            message_id,
            {"type": reply_type, "form": form},
            str(posted.get("idem", "")) or None,
        )
    except FormInvalid as exc:
        errors, other = formgen.field_errors(exc.problems)
        fields = formgen.build(reply_type, lang_of(request), form, errors)
        return await _request_view(
            request,
            message_id,
            status=422,
            reply_type=reply_type,
            reply_fields=fields,
            reply_other=other,
            reply_failed=True,
        )
    raise redirect(f"{UI_PREFIX}/requests/{message_id}?sent=reply")


async def file_download(request: web.Request) -> web.StreamResponse:
    download = await attachments.open_download(
        node(request), principal(request), _message_id(request), file_position(request)
    )
    return await stream_download(request, download)


async def new_page(request: web.Request) -> web.Response:
    form_type = _choice(request, "type", forms.REQUEST_TYPES) or "mla_request"
    return await _new(request, form_type, {}, {}, [], to="", handling="confidential", files=[])


async def _new(
    request: web.Request,
    form_type: str,
    values: dict[str, Any],
    errors: dict[str, str],
    other: list[str],
    *,
    to: str,
    handling: str,
    files: list[dict[str, Any]],
    status: int = 200,
) -> web.Response:
    peers = await views.peers(node(request))
    return render(
        request,
        "new.html",
        status=status,
        form_type=form_type,
        request_types=sorted(forms.REQUEST_TYPES),
        fields=formgen.build(form_type, lang_of(request), values, errors),
        other_errors=other,
        to_error=errors.get("@to"),
        peers=[p["state"] for p in peers["peers"]],
        to=to,
        handling=handling,
        handling_codes=forms.HANDLING_CODES,
        files=files,
        status_failed=status == 422,
        idem=secrets.token_urlsafe(16),
    )


async def new_submit(request: web.Request) -> web.StreamResponse:
    posted = await request.post()
    form_type = str(posted.get("type", ""))
    if form_type not in forms.REQUEST_TYPES:
        raise InvalidParameter("choose a form", field="type")
    form = formgen.parse(form_type, posted)
    to = str(posted.get("to", ""))
    handling = str(posted.get("handling", "confidential"))
    ids = [str(v) for v in posted.getall("attachment", []) if str(v)]
    payload = {"type": form_type, "to": to, "form": form, "handling": handling, "attachments": ids}
    try:
        message, _ = await cases.submit(
            node(request), principal(request), payload, str(posted.get("idem", "")) or None
        )
    except (FormInvalid, MlaError) as exc:
        if not isinstance(exc, FormInvalid) and exc.field != "to":
            raise
        errors, other = formgen.field_errors(exc.problems)
        if exc.field == "to" or "to" in {p.field for p in exc.problems}:
            errors["@to"] = next((p.message for p in exc.problems if p.field == "to"), exc.detail)
            other = [o for o in other if not o.startswith("to:")]
        files = [{"id": i} for i in ids]
        return await _new(
            request, form_type, form, errors, other, to=to, handling=handling, files=files,
            status=422,
        )  # fmt: skip
    raise redirect(f"{UI_PREFIX}/requests/{message.id}?sent=new")


async def upload(request: web.Request) -> web.Response:
    """The progress-bar upload (static/ui.js): the file's bytes, streamed to the same service
    call as POST /api/v1/attachments, authenticated by the session and its CSRF header."""
    check_csrf(request, request.headers.get(CSRF_HEADER))
    if request.content_type != "application/octet-stream":
        raise InvalidParameter("send the file's bytes as application/octet-stream")
    row = await attachments.upload(
        node(request),
        principal(request),
        request.content.read,
        length=request.content_length,
        name=decode_name_header(request.headers.get("X-File-Name")),
    )
    return web.json_response(attachments.upload_view(row), status=201)


async def network_page(request: web.Request) -> web.Response:
    return render(request, "network.html", net=await views.peers(node(request)))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", home)
    router.add_get("/signin", signin_page)
    router.add_post("/signin", signin)
    router.add_post("/signout", signout)
    router.add_get("/cases", cases_page)
    router.add_get("/inbox", inbox_page)
    router.add_get("/requests/{id}", request_page)
    router.add_get("/requests/{id}/files/{n}", file_download)
    router.add_post("/requests/{id}/acknowledge", acknowledge)
    router.add_post("/requests/{id}/reply", reply)
    router.add_get("/new", new_page)
    router.add_post("/new", new_submit)
    router.add_post("/attachments", upload)
    router.add_get("/network", network_page)
    audit_pages.add_routes(router)
