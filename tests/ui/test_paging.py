"""Paging of the lists beyond one page: the cases dashboard (with its filters and search), the
inbox and the auditor's log. More requests than a page are sent for real (the clerk API, as
clerks' programs do), then every list is walked page by page with its "next" links and back
with its "previous" links: no row is missed, none is shown twice, the filters stay on."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mla_node.ui import audit_pages, casework, pages
from tests.netkit import Network, running_network, wait_for
from tests.ui.conftest import Browser, browser

pytestmark = pytest.mark.asyncio(loop_scope="module")

MLA = 2 * casework.PAGE + 15  # three pages of MLA requests alone
EXTRADITIONS = 20
NEXT = re.compile(r'<a rel="next" class="page-next" href="([^"]+)"')
Sent = tuple[Network, dict[str, list[str]]]  # the network, and the ids sent of each type
PREV = re.compile(r'<a rel="prev" class="page-prev" href="([^"]+)"')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sent]:
    """AR sends BR ``MLA`` MLA requests and ``EXTRADITIONS`` extradition requests, delivered."""
    async with running_network(tmp_path_factory.mktemp("paging"), ("AR", "BR")) as net:
        gate = asyncio.Semaphore(16)

        async def one(form_type: str) -> str:
            async with gate:
                return str((await net["AR"].submit("BR", form_type))["id"])

        mla = await asyncio.gather(*(one("mla_request") for _ in range(MLA)))
        extra = await asyncio.gather(*(one("extradition_request") for _ in range(EXTRADITIONS)))

        async def all_delivered() -> bool:
            seen, cursor = 0, ""
            while True:
                _, body = await net["AR"].call(
                    "GET", f"/api/v1/requests?box=outbox&status=delivered&limit=200{cursor}"
                )
                seen += len(body["items"])
                if not body["next_cursor"]:
                    return seen == MLA + EXTRADITIONS
                cursor = f"&cursor={body['next_cursor']}"

        await wait_for(all_delivered, within_s=30)
        yield net, {"mla": mla, "extradition": extra}


async def walk(b: Browser, path: str, row: re.Pattern[str]) -> list[list[str]]:
    """Every page of a list from ``path`` by its "next" links, then back to the first by its
    "previous" links, which must show the same pages; the rows of each page."""
    forward: list[list[str]] = []
    url = path
    while True:
        status, text, _ = await b.get(url)
        assert status == 200, url
        forward.append(row.findall(text))
        assert bool(PREV.search(text)) == (len(forward) > 1), url
        found = NEXT.search(text)
        if not found:
            break
        url = path.split("?")[0] + html.unescape(found.group(1))
        keep = [p for p in path.split("?", 1)[-1].split("&") if "?" in path and p]
        assert all(p in url for p in keep), f"{url} lost a filter of {path}"
        assert len(forward) < 50, "the pages do not end"
    backward = [forward[-1]]
    while found := PREV.search(text):
        url = path.split("?")[0] + html.unescape(found.group(1))
        status, text, _ = await b.get(url)
        assert status == 200, url
        backward.append(row.findall(text))
    assert backward[::-1] == forward, "the previous pages are not the pages walked"
    return forward


def sizes(total: int, page: int) -> list[int]:
    """The length of each page of ``total`` rows."""
    return [min(page, total - start) for start in range(0, total, page)]


def flat(pages_: list[list[str]]) -> list[str]:
    return [item for page in pages_ for item in page]


async def test_the_dashboard_pages_every_case_once(sent: Sent) -> None:
    net, ids = sent
    row = re.compile(r'data-case="([0-9A-Z]{26})"')
    everything = sorted([*ids["mla"], *ids["extradition"]], reverse=True)
    async with browser(net["AR"]) as b:
        walked = await walk(b, "/ui/cases", row)
        assert [len(p) for p in walked] == sizes(MLA + EXTRADITIONS, casework.PAGE)
        assert flat(walked) == everything  # newest first, each once
        # Filters and search stay on from page to page; a legal state filter too.
        prefix = min(ids["mla"])[:4] if min(ids["mla"])[:4] == max(ids["mla"])[:4] else ""
        query = f"box=outbox&type=mla_request&peer=BR&status=delivered&q={prefix}"
        walked = await walk(b, f"/ui/cases?{query}", row)
        assert len(walked) == 3
        assert flat(walked) == sorted(ids["mla"], reverse=True)
        walked = await walk(b, "/ui/cases?type=extradition_request", row)
        assert flat(walked) == sorted(ids["extradition"], reverse=True)
        assert len(walked) == 1
    async with browser(net["BR"]) as b:  # the requested side's dashboard: the same cases
        assert flat(await walk(b, "/ui/cases?box=inbox", row)) == everything


async def test_the_inbox_pages_every_message_once(sent: Sent) -> None:
    net, ids = sent
    async with browser(net["BR"]) as b:
        walked = await walk(b, "/ui/inbox", re.compile(r'data-id="([0-9A-Z]{26})"'))
        assert [len(p) for p in walked] == sizes(MLA + EXTRADITIONS, pages.INBOX_PAGE)
        assert flat(walked) == sorted([*ids["mla"], *ids["extradition"]], reverse=True)


async def test_the_log_pages_every_record_once(sent: Sent) -> None:
    net, _ = sent
    async with browser(net["AR"], role="auditor") as b:
        walked = await walk(
            b, "/ui/audit", re.compile(r"<tr data-event=\"[a-z_]*\"><td>(\d+)</td>")
        )
        seqs = [int(s) for s in flat(walked)]
        assert seqs == list(range(1, len(seqs) + 1))  # oldest first, no gap, none twice
        assert len(seqs) > 2 * (MLA + EXTRADITIONS)  # each sent and delivered at least
        assert all(len(p) == audit_pages.LOG_PAGE for p in walked[:-1])
