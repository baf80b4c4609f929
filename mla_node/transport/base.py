"""The tiny interface delivery needs from a transport, and an in-memory one for fast tests.

Besides the envelope and the receipt, an exchange carries two unsigned hints about log heads
(docs/protocol.md §5.1): the sender says the size of the receiver's newest head it holds
(``WITNESSED_SIZE``), and the receiver answers with the consistency proof from that head to the
one in its receipt (``PeerAnswer.proof``). The size is a context variable, set by the delivery
loop around ``send``, so that it reaches the transport through any wrapper around it (tests and
fault injectors wrap ``send(peer, envelope)``) without each having to pass it on.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import aiohttp

from mla_node.errors import DeliveryError, EnvelopeError
from mla_node.logs import REQUEST_ID
from mla_node.protocol.directory import NodeEntry
from mla_node.protocol.witness import ConsistencyProof

# The size of the newest head of the receiver that the sender holds, for the send in progress.
WITNESSED_SIZE: ContextVar[int | None] = ContextVar("mla_node_witnessed_size", default=None)

# How long an endpoint that failed at the connection level (refused, reset, TLS handshake, no
# answer) is passed over while the peer has others. Long enough that a burst of concurrent sends
# (max_in_flight of them) does not each pay a failed connect to a worker that just died; short
# enough that a restarted worker gets its share again within seconds, without health probes.
ENDPOINT_COOL_DOWN_S = 5.0
# Time to open a connection to one endpoint (TCP and the TLS handshake). Well under a delivery
# attempt's own deadline (delivery.request_timeout_s, 30 s by default), so that an endpoint whose
# machine is gone (no refusal, no answer) leaves time to try the peer's next one; and long enough
# for two lost SYNs to be resent (after 1 s, then 3 s more) on a poor link.
CONNECT_TIMEOUT_S = 10.0
_TURNS = 720_720  # the round-robin counter wraps here: divisible by every count up to 16
# What says an endpoint could not be reached or dropped the connection before answering, as
# opposed to an answer: refused, reset, TLS handshake failed, timed out. The sender goes on to
# the peer's next endpoint.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    ConnectionError,
    ssl.SSLError,
    TimeoutError,
)


class EndpointChooser:
    """Which of a peer's endpoints each request goes to: round-robin per peer, passing over
    those that failed within the cool-down unless every one of them did.

    One per transport instance, shared by every request to every peer (envelopes and file
    transfers alike). Synchronous and lock-free: it is only used from the event loop's thread.
    ``clock`` is monotonic seconds, an argument so that tests need not sleep.
    """

    def __init__(
        self,
        cool_down_s: float = ENDPOINT_COOL_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cool_down_s = cool_down_s
        self._clock = clock
        self._turn: dict[str, int] = {}  # state -> the next round-robin position
        self._cooling: dict[tuple[str, str], float] = {}  # (state, url) -> usable again at

    def order(self, peer: NodeEntry) -> list[str]:
        """The endpoints to try for one request, best first: the ready ones in round-robin
        order from this request's turn, then those cooling down, the soonest usable first (a
        last resort, once every ready one has failed too). The turn goes round the ready ones
        only, so the load of an endpoint that is down spreads evenly over the others."""
        now = self._clock()
        ready: list[str] = []
        cooling: list[tuple[float, int, str]] = []
        for i, url in enumerate(peer.endpoints):
            until = self._cooling.get((peer.state, url))
            if until is None or until <= now:
                self._cooling.pop((peer.state, url), None)
                ready.append(url)
            else:
                cooling.append((until, i, url))
        turn = self._turn.get(peer.state, 0)
        self._turn[peer.state] = (turn + 1) % _TURNS
        if ready:
            start = turn % len(ready)
            ready = ready[start:] + ready[:start]
        return ready + [url for _, _, url in sorted(cooling)]

    def failed(self, peer: NodeEntry, url: str) -> None:
        """``url`` failed at the connection level: pass it over for the cool-down."""
        self._cooling[(peer.state, url)] = self._clock() + self.cool_down_s

    def answered(self, peer: NodeEntry, url: str) -> None:
        """``url`` answered (whatever it said): it is usable again at once."""
        self._cooling.pop((peer.state, url), None)

    def cooling(self, peer: NodeEntry) -> list[str]:
        """The endpoints of ``peer`` now passed over (for tests and diagnostics)."""
        now = self._clock()
        return [u for u in peer.endpoints if self._cooling.get((peer.state, u), 0.0) > now]


@dataclass(frozen=True)
class PeerAnswer:
    """What a peer said about an envelope: a receipt (HTTP 200) or a refusal with its code.

    ``receipt`` is unverified here; the delivery use case verifies it against the directory.
    ``proof``: the consistency proof the peer offered from the head the sender holds (also
    unverified: it proves itself, or fails, against the two signed heads).
    """

    receipt: bytes | None
    refused_code: str | None = None
    proof: ConsistencyProof | None = None

    @classmethod
    def refusal(cls, code: object, receipt: bytes | None) -> PeerAnswer:
        """A refusal as the peer put it, on either endpoint; a code that is not a string (the
        peer's bug, or an older peer's) still refuses the envelope, as ``unknown``."""
        return cls(receipt, code if isinstance(code, str) else "unknown")


@dataclass(frozen=True)
class Outgoing:
    """An envelope going out in a batch, with the request id of the API call that queued it (the
    receiver logs it, so one id names the work on both nodes)."""

    envelope: bytes
    request_id: str | None = None


# One answer per envelope of a batch: the peer's answer, or why there was none for it.
BatchAnswer = PeerAnswer | DeliveryError


class Transport(Protocol):
    async def send(self, peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        """Deliver one envelope. Raises DeliveryError when there was no usable answer."""
        ...  # pragma: no cover

    async def close(self) -> None: ...  # pragma: no cover


@runtime_checkable
class BlobTransport(Protocol):
    """A transport that can also carry encrypted evidence files (transport/blobs.py)."""

    async def push_blob(
        self, peer: NodeEntry, digest: bytes, size: int, path: Path, *, stall_s: float
    ) -> int:
        """Make ``peer`` hold the whole file, resuming what it holds; returns the bytes sent.
        Raises DeliveryError when it could not."""
        ...  # pragma: no cover


@runtime_checkable
class BatchTransport(Protocol):
    """A transport that can carry several envelopes to one peer in one exchange
    (docs/protocol.md §5.2)."""

    async def send_batch(self, peer: NodeEntry, batch: Sequence[Outgoing]) -> list[BatchAnswer]:
        """One answer per envelope of ``batch``, in order. Raises DeliveryError when the exchange
        as a whole had no usable answer."""
        ...  # pragma: no cover


async def one_by_one(
    send: Callable[[NodeEntry, bytes], Awaitable[PeerAnswer]],
    peer: NodeEntry,
    batch: Sequence[Outgoing],
) -> list[BatchAnswer]:
    """A batch's answers from single sends, all at once: for a peer that takes no batches. Each
    send runs in its own task, so each carries its own request id."""

    async def one(item: Outgoing) -> BatchAnswer:
        REQUEST_ID.set(item.request_id)
        try:
            return await send(peer, item.envelope)
        except DeliveryError as exc:
            return exc

    return list(await asyncio.gather(*(one(item) for item in batch)))


Receiver = Callable[[bytes, bytes | None], Awaitable[bytes]]
# The receiving node's proof from a witnessed size to its newest head (service/inbound.log_proof):
# None when it has none to give; it never raises.
LogProofSource = Callable[[int], Awaitable[ConsistencyProof | None]]


class MemoryTransport:
    """Calls the receiving node's use case directly, presenting the sender's certificate as the
    client certificate. States in ``down`` raise DeliveryError, as an unreachable peer would.

    Every node of a test network gets its own instance sharing one ``receivers`` map and one
    ``down`` set, so a test can cut and heal peers in one place; and ``log_proofs`` when the
    receivers answer a witnessed size with a consistency proof, as the HTTP peer endpoint does.
    """

    def __init__(
        self,
        sender_cert_der: bytes,
        receivers: dict[str, Receiver],
        down: set[str],
        log_proofs: dict[str, LogProofSource] | None = None,
    ) -> None:
        self.sender_cert_der = sender_cert_der
        self.receivers = receivers
        self.down = down
        self.log_proofs = log_proofs if log_proofs is not None else {}

    async def send(self, peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        receiver = self.receivers.get(peer.state)
        if receiver is None or peer.state in self.down:
            raise DeliveryError(f"{peer.state} is unreachable")
        try:
            receipt = await receiver(envelope, self.sender_cert_der)
        except EnvelopeError as exc:
            rejection = exc.extra.get("receipt")
            return PeerAnswer(
                rejection if isinstance(rejection, bytes) else None,
                exc.code,
                await self._proof(peer.state),
            )
        return PeerAnswer(receipt, proof=await self._proof(peer.state))

    async def send_batch(self, peer: NodeEntry, batch: Sequence[Outgoing]) -> list[BatchAnswer]:
        if peer.state in self.down:  # the exchange as a whole fails, as over HTTP
            raise DeliveryError(f"{peer.state} is unreachable")
        return await one_by_one(self.send, peer, batch)

    async def _proof(self, state: str) -> ConsistencyProof | None:
        witnessed, source = WITNESSED_SIZE.get(), self.log_proofs.get(state)
        return None if witnessed is None or source is None else await source(witnessed)

    async def close(self) -> None:
        return None
