"""The tiny interface delivery needs from a transport, and an in-memory one for fast tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from mla_node.errors import DeliveryError, EnvelopeError
from mla_node.protocol.directory import NodeEntry


@dataclass(frozen=True)
class PeerAnswer:
    """What a peer said about an envelope: a receipt (HTTP 200) or a refusal with its code.

    ``receipt`` is unverified here; the delivery use case verifies it against the directory.
    """

    receipt: bytes | None
    refused_code: str | None = None


class Transport(Protocol):
    async def send(self, peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        """Deliver one envelope. Raises DeliveryError when there was no usable answer."""
        ...  # pragma: no cover

    async def close(self) -> None: ...  # pragma: no cover


Receiver = Callable[[bytes, bytes | None], Awaitable[bytes]]


class MemoryTransport:
    """Calls the receiving node's use case directly, presenting the sender's certificate as the
    client certificate. States in ``down`` raise DeliveryError, as an unreachable peer would.

    Every node of a test network gets its own instance sharing one ``receivers`` map and one
    ``down`` set, so a test can cut and heal peers in one place.
    """

    def __init__(
        self, sender_cert_der: bytes, receivers: dict[str, Receiver], down: set[str]
    ) -> None:
        self.sender_cert_der = sender_cert_der
        self.receivers = receivers
        self.down = down

    async def send(self, peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        receiver = self.receivers.get(peer.state)
        if receiver is None or peer.state in self.down:
            raise DeliveryError(f"{peer.state} is unreachable")
        try:
            return PeerAnswer(await receiver(envelope, self.sender_cert_der))
        except EnvelopeError as exc:
            receipt = exc.extra.get("receipt")
            return PeerAnswer(receipt if isinstance(receipt, bytes) else None, exc.code)

    async def close(self) -> None:
        return None
