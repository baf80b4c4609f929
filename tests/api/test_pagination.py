"""Cursor pagination and the list filters, on 25 real requests from Argentina to two states."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from mla_node.protocol import forms
from tests.api.speckit import Api, wait_for_status
from tests.netkit import running_network

pytestmark = pytest.mark.asyncio(loop_scope="module")

REQUESTS = "/api/v1/requests"
TYPES = sorted(forms.REQUEST_TYPES)


@dataclass
class Sent:
    ar: Api
    br: Api
    us: Api
    ids: list[str]  # the 25, in the order submitted
    type_of: dict[str, str]  # of every request AR sent, the 25 and those tests add
    peer_of: dict[str, str]

    async def submit(self, form_type: str, peer: str) -> str:
        body = {"type": form_type, "to": peer, "form": forms.example(form_type)}
        reply = await self.ar.post(REQUESTS, body)
        assert reply.status == 201
        message_id: str = reply.body["id"]
        self.type_of[message_id] = form_type
        self.peer_of[message_id] = peer
        return message_id

    def sent_where(self, form_type: str | None = None, peer: str | None = None) -> list[str]:
        """Newest first, as the outbox lists them."""
        return sorted(
            (
                i
                for i in self.type_of
                if form_type in (None, self.type_of[i]) and peer in (None, self.peer_of[i])
            ),
            reverse=True,
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sent]:
    """25 requests AR -> BR or US, of the three request types, all delivered."""
    folder = tmp_path_factory.mktemp("net")
    async with running_network(folder, ("AR", "BR", "US")) as net:
        ar, br, us = Api(net["AR"]), Api(net["BR"]), Api(net["US"])
        result = Sent(ar, br, us, [], {}, {})
        for i in range(25):
            result.ids.append(await result.submit(TYPES[i % 3], ("BR", "US")[i % 2]))
        for message_id in result.ids:
            await wait_for_status(ar, message_id, "delivered")
        yield result


async def walk(api: Api, query: str, limit: int, cursor: str = "") -> list[list[str]]:
    """Every page of a listing (from ``cursor`` on), as lists of ids."""
    pages: list[list[str]] = []
    cursor = f"&cursor={cursor}" if cursor else ""
    while True:
        reply = await api.get(f"{REQUESTS}?limit={limit}{query}{cursor}", role="auditor")
        assert reply.status == 200, reply.body
        pages.append([item["id"] for item in reply.body["items"]])
        next_cursor = reply.body["next_cursor"]
        if next_cursor is None:
            return pages
        assert next_cursor == pages[-1][-1]
        cursor = f"&cursor={next_cursor}"
        assert len(pages) < 100, "the cursor does not advance"


def flat(pages: list[list[str]]) -> list[str]:
    return [i for page in pages for i in page]


async def test_pages_of_ten_cover_all_25_without_duplicates_or_gaps(sent: Sent) -> None:
    pages = await walk(sent.ar, "", 10)
    assert [len(p) for p in pages] == [10, 10, 5]
    ids = flat(pages)
    assert len(ids) == len(set(ids)) == 25
    assert set(ids) == set(sent.ids)
    assert ids == sorted(ids, reverse=True), "newest first, by id"


@pytest.mark.parametrize("limit", [1, 7, 24, 25, 26, 200])
async def test_any_page_size_gives_the_same_walk(sent: Sent, limit: int) -> None:
    pages = await walk(sent.ar, "", limit)
    assert flat(pages) == sent.sent_where()
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit


async def test_an_exact_multiple_has_no_empty_last_page(sent: Sent) -> None:
    expected = sent.sent_where(form_type="extradition_request")
    assert len(expected) == 9  # the fixture's 0th, 3rd, ... 24th request; no test adds more
    pages = await walk(sent.ar, "&type=extradition_request", 3)
    assert [len(p) for p in pages] == [3, 3, 3]
    assert flat(pages) == expected


async def test_a_request_submitted_while_paging_does_not_shift_the_pages(sent: Sent) -> None:
    snapshot = sent.sent_where()
    first = await sent.ar.get(f"{REQUESTS}?limit=10", role="auditor")
    extra = await sent.submit("mla_request", "BR")
    rest = await walk(sent.ar, "", 10, cursor=first.body["next_cursor"])
    assert [item["id"] for item in first.body["items"]] + flat(rest) == snapshot
    assert extra not in flat(rest)
    await wait_for_status(sent.ar, extra, "delivered")


@pytest.mark.parametrize("form_type", TYPES)
async def test_filter_by_type(sent: Sent, form_type: str) -> None:
    pages = await walk(sent.ar, f"&type={form_type}", 4)
    assert flat(pages) == sent.sent_where(form_type=form_type)
    assert len(flat(pages)) >= 8


@pytest.mark.parametrize("peer", ["BR", "US"])
async def test_filter_by_peer_in_both_boxes(sent: Sent, peer: str) -> None:
    expected = sent.sent_where(peer=peer)
    assert len(expected) >= 12
    assert flat(await walk(sent.ar, f"&peer={peer}", 5)) == expected
    receiver = sent.br if peer == "BR" else sent.us
    for message_id in expected:
        await wait_for_status(sent.ar, message_id, "delivered")
    assert flat(await walk(receiver, "&box=inbox&peer=AR", 5)) == expected
    other = "US" if peer == "BR" else "BR"
    assert await walk(receiver, f"&box=inbox&peer={other}", 5) == [[]]


async def test_filter_by_case(sent: Sent) -> None:
    request_id = sent.ids[0]  # AR -> BR
    inquiry = {"type": "status_inquiry", "form": forms.example("status_inquiry")}
    follow_up = await sent.br.post(f"{REQUESTS}/{request_id}/replies", inquiry)
    await wait_for_status(sent.br, follow_up.body["id"], "delivered")
    assert await walk(sent.ar, f"&case={request_id}", 10) == [[request_id]]
    assert await walk(sent.ar, f"&box=inbox&case={request_id}", 10) == [[follow_up.body["id"]]]
    assert await walk(sent.br, f"&box=inbox&case={request_id}", 10) == [[request_id]]
    assert await walk(sent.br, f"&case={request_id}", 10) == [[follow_up.body["id"]]]
    assert await walk(sent.br, f"&case={sent.ids[1]}", 10) == [[]]


async def test_filter_by_status(sent: Sent) -> None:
    for message_id in sent.sent_where():
        await wait_for_status(sent.ar, message_id, "delivered")
    assert flat(await walk(sent.ar, "&status=delivered", 10)) == sent.sent_where()
    assert await walk(sent.ar, "&status=queued", 10) == [[]]
    # In Brazil's inbox, a clerk opening a request moves it from received to retrieved.
    to_brazil = sent.sent_where(peer="BR")
    opened = to_brazil[::2]
    before = flat(await walk(sent.br, "&box=inbox&status=retrieved", 4))
    for message_id in opened:
        assert (await sent.br.get(f"{REQUESTS}/{message_id}")).body["status"] == "retrieved"
    retrieved = flat(await walk(sent.br, "&box=inbox&status=retrieved", 4))
    received = flat(await walk(sent.br, "&box=inbox&status=received", 4))
    assert retrieved == sorted(set(before) | set(opened), reverse=True)
    assert not set(received) & set(retrieved)
    assert set(received) | set(retrieved) == set(to_brazil)


async def test_filters_combine(sent: Sent) -> None:
    pages = await walk(sent.ar, "&type=provisional_arrest&peer=US&status=delivered", 2)
    expected = sent.sent_where(form_type="provisional_arrest", peer="US")
    assert expected
    assert flat(pages) == expected


async def test_an_unmatched_filter_is_an_empty_page(sent: Sent) -> None:
    assert await walk(sent.ar, "&peer=MX", 10) == [[]]
    assert await walk(sent.ar, "&box=inbox&type=mla_request", 10) == [[]]
