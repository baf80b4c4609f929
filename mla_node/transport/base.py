"""The tiny interface delivery needs from a transport, and an in-memory one for fast tests.

Besides the envelope and the receipt, an exchange carries two unsigned hints about log heads
(docs/protocol.md §5.1): the sender says the size of the receiver's newest head it holds
(``WITNESSED_SIZE``), and the receiver answers with the consistency proof from that head to the
one in its receipt (``PeerAnswer.proof``). The size is a context variable, set by the delivery
loop around ``send``, so that it reaches the transport through any wrapper around it (tests and
fault injectors wrap ``send(peer, envelope)``) without each having to pass it on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from mla_node.errors import DeliveryError, EnvelopeError
from mla_node.protocol.directory import NodeEntry
from mla_node.protocol.witness import ConsistencyProof

# The size of the newest head of the receiver that the sender holds, for the send in progress.
WITNESSED_SIZE: ContextVar[int | None] = ContextVar("mla_node_witnessed_size", default=None)


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

    async def _proof(self, state: str) -> ConsistencyProof | None:
        witnessed, source = WITNESSED_SIZE.get(), self.log_proofs.get(state)
        return None if witnessed is None or source is None else await source(witnessed)

    async def close(self) -> None:
        return None
