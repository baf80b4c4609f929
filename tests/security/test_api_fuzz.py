"""Schemathesis against our own OpenAPI document, on a real node: 0 server errors, 0 answers that
break the document.

Every operation of ``/openapi.json`` is fuzzed on Argentina's clerk API (a real aiohttp server on
127.0.0.1, real SQLite, Brazil a real peer over mutual TLS) with every schemathesis check, plus
``tests/api/speckit.py``'s own reading of the document (problem ``type`` matches ``code``, the
``status`` member matches the status line, ...). Each case carries the token of a role: usually
one the operation allows, so that the handlers are reached, otherwise any role, so that the
policy is fuzzed too. Schema-valid message ids are often swapped for ids of messages that exist
(sent, received, replied to), so that the fuzzer gets past the 404s into the handlers.

Sizes: ``MLA_FUZZ_EXAMPLES`` examples per operation, 40 by default and 500 with ``MLA_FULL=1``.
Schemathesis adds its own deterministic cases (the schema's examples, boundary values, missing
and wrong-typed parameters) to those; the requests actually sent are counted per operation and
printed (``-s``).

Schemathesis calls the API synchronously (``requests``), so the nodes run in an event loop of
their own, on a background thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import CoveragePhaseData
from schemathesis.specs.openapi.checks import positive_data_acceptance

from mla_node.api.openapi import openapi_document
from mla_node.ids import is_ulid
from mla_node.protocol import forms
from tests.api.speckit import Reply, check_against_spec
from tests.netkit import Network, running_network, wait_for

FULL = os.environ.get("MLA_FULL") == "1"
EXAMPLES = int(os.environ.get("MLA_FUZZ_EXAMPLES", "500" if FULL else "40"))
ROLES = ("clerk", "approver", "auditor", "admin")

SCHEMA = schemathesis.openapi.from_dict(openapi_document())

# Refusals of schema-valid input that no schema can express, because they depend on the node's
# state or on another parameter: (status, code, field), each a documented refusal. Any other
# refusal of schema-valid input fails the run (schemathesis' positive_data_acceptance).
SEMANTIC_REFUSALS = frozenset(
    {
        (422, "idempotency_key_reused", "Idempotency-Key"),  # the key was used with another body
        (422, "unknown_state", "to"),  # a state with no node in the directory
        # audit proofs: bounded by the other parameter and by the log's current size
        *((400, "invalid_parameter", name) for name in ("seq", "size", "from", "to")),
    }
)
# Ids of evidence files are valid by the document's pattern but must name files uploaded here.
UNKNOWN_ATTACHMENT = (422, "form_invalid", "attachments.")

KNOWN_IDS: list[str] = []  # filled by the ``base_url`` fixture
TOKENS: dict[str, str] = {}  # role -> token, filled by the ``base_url`` fixture
ROLE_HEADER = "X-Fuzz-Role"  # drawn by a hook, replaced by that role's token before sending
ANSWERS: Counter[tuple[str, int]] = Counter()  # (operation, status) of every answer checked
T = TypeVar("T")
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Operation]


class BackgroundNetwork:
    """Real nodes in an event loop of their own on a thread, for synchronous callers."""

    def __init__(self, folder: Path, states: tuple[str, ...]) -> None:
        self._folder, self._states = folder, states
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._net: Network | None = None
        self._thread = threading.Thread(target=self._thread_main, name="fuzzed-nodes")

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__, which is waiting for the nodes
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with running_network(self._folder, self._states) as net:
            self._net = net
            self._ready.set()
            await self._stop.wait()

    @property
    def net(self) -> Network:
        assert self._net is not None
        return self._net

    def __enter__(self) -> BackgroundNetwork:
        self._thread.start()
        self._ready.wait(120)
        if self._net is None:
            raise RuntimeError("the nodes did not start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` in the nodes' event loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)


async def _seed(net: Network) -> list[str]:
    """Ids of a sent request, a received one, and a received one with a reply sent."""
    ar, br = net["AR"], net["BR"]
    sent = (await ar.submit("BR"))["id"]
    received = (await br.submit("AR", "extradition_request"))["id"]
    answered = (await br.submit("AR"))["id"]

    async def delivered() -> bool:
        views = [await ar.call("GET", f"/api/v1/requests/{sent}", role="auditor")]
        views += [await br.call("GET", f"/api/v1/requests/{m}") for m in (received, answered)]
        return all(view["status"] == "delivered" for _, view in views)

    await wait_for(delivered, within_s=30)
    body = {"type": "status_inquiry", "form": forms.example("status_inquiry")}
    status, reply = await ar.call("POST", f"/api/v1/requests/{answered}/replies", json=body)
    assert status == 201, reply
    return [sent, received, answered, reply["id"]]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Argentina's clerk API, with the ids and tokens the hooks draw from."""
    started = time.monotonic()
    with BackgroundNetwork(tmp_path_factory.mktemp("fuzz"), ("AR", "BR")) as background:
        KNOWN_IDS[:] = background.run(_seed(background.net))
        ar = background.net["AR"]
        TOKENS.update(ar.tokens)
        yield ar.runtime.clerk_url
    _report(time.monotonic() - started)


def _report(seconds: float) -> None:
    per_operation: dict[str, Counter[int]] = {}
    for (operation, status), count in ANSWERS.items():
        per_operation.setdefault(operation, Counter())[status] += count
    print(
        f"\nschemathesis, {EXAMPLES} examples per operation: {sum(ANSWERS.values())} answers "
        f"checked in {seconds:.0f} s, {sum(n for (_, s), n in ANSWERS.items() if s >= 500)} of "
        "them 5xx"
    )
    for operation, statuses in sorted(per_operation.items()):
        print(f"  {operation:45} {statuses.total():6}  {dict(sorted(statuses.items()))}")


@SCHEMA.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    # Only a valid id is swapped: an invalid one belongs to a negative case, which must stay one.
    if not KNOWN_IDS or not path_parameters or not is_ulid(str(path_parameters.get("id"))):
        return st.just(path_parameters)
    params = path_parameters  # narrowed, for the lambda
    known = st.sampled_from(KNOWN_IDS).map(lambda mid: {**params, "id": mid})
    return st.just(path_parameters) | known


def _roles(operation: Operation) -> list[str]:
    return list(operation.definition.raw.get("x-roles") or ROLES)


@SCHEMA.hook
def flatmap_headers(
    context: schemathesis.HookContext, headers: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any]]:
    assert context.operation is not None
    # The role, not its token: examples are drawn before the nodes exist. The test swaps it.
    roles = st.sampled_from(_roles(context.operation)) | st.sampled_from(ROLES)
    return roles.map(lambda role: {**(headers or {}), ROLE_HEADER: role})


def _about_authorization(case: Case) -> bool:
    """Whether schemathesis made this case to see how the API takes bad or missing credentials."""
    meta = case.meta
    if meta is None:
        return False
    if isinstance(meta.phase.data, CoveragePhaseData):
        return (meta.phase.data.parameter or "").lower() == "authorization"
    # A negative case of the headers without the Authorization header it always draws: left out
    # on purpose, as the required header it is.
    drawn = {name.lower() for name in case.headers or {}}
    return meta.is_negative_at(ParameterLocation.HEADER) and "authorization" not in drawn


def accepts_positive_data(ctx: Any, response: schemathesis.Response, case: Any) -> bool | None:
    """schemathesis' positive_data_acceptance, less the SEMANTIC_REFUSALS."""
    refusal = (response.status_code, *_problem_code_and_field(response))
    if refusal in SEMANTIC_REFUSALS:
        return None
    status, code, field = refusal
    if (status, code) == UNKNOWN_ATTACHMENT[:2] and str(field).startswith(UNKNOWN_ATTACHMENT[2]):
        return None
    return positive_data_acceptance(ctx, response, case)


def matches_speckit(ctx: Any, response: schemathesis.Response, case: Any) -> bool | None:
    """tests/api/speckit.py's reading of the document, which the API tests hold every answer to."""
    headers: CIMultiDict[str] = CIMultiDict(
        (name, value) for name, values in response.headers.items() for value in values
    )
    content_type = headers.get("Content-Type", "").split(";")[0].strip()
    raw = response.content
    # A file's bytes (evidence downloads, bundles as files) stay bytes, as speckit reads them.
    body = json.loads(raw) if raw and content_type.endswith("json") else (raw or None)
    path = response.request.path_url
    reply = Reply(response.status_code, CIMultiDictProxy(headers), content_type, body)
    check_against_spec(str(response.request.method), path, reply)
    ANSWERS[case.operation.label, response.status_code] += 1
    return None


def _problem_code_and_field(response: schemathesis.Response) -> tuple[str | None, str | None]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None, None
    return (body.get("code"), body.get("field")) if isinstance(body, dict) else (None, None)


@pytest.mark.slow
@pytest.mark.timeout(600 + 3 * EXAMPLES)
@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,  # a loaded 2-core machine must not turn a slow answer into a failure
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=not FULL,  # the same cases on every CI run; the full size explores
)
def test_fuzz_the_clerk_api(base_url: str, case: Case) -> None:
    # The cases schemathesis builds itself (examples, boundaries) bypass the hooks: they get a
    # role the operation allows, so that they reach the handler.
    drawn = case.headers.pop(ROLE_HEADER, None) if case.headers else None
    role = drawn or _roles(case.operation)[0]
    case.call_and_validate(
        base_url=base_url,
        # Passed apart from the case, so schemathesis knows them as valid credentials (its
        # ignored_auth check then sends the case again without them and with bad ones); they
        # replace the random ones it draws, but not in the cases it makes about them.
        headers={} if _about_authorization(case) else {"Authorization": f"Bearer {TOKENS[role]}"},
        excluded_checks=[positive_data_acceptance],
        additional_checks=[accepts_positive_data, matches_speckit],
    )
