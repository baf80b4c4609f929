"""Delivering the outbox: one loop per peer, exponential backoff with jitter, verified receipts.

Delivery state lives in the database (the ``outbox`` table), never only in memory, so a restart
resumes exactly where it stopped: an envelope leaves the outbox in the same transaction that
records a verified receipt for it. Sending the same envelope twice is harmless by design, since
the receiver answers a repeat with its original receipt.

While a peer fails, only one envelope at a time probes it; the first success makes everything
queued for it due at once, so a peer that was down for hours receives its backlog as soon as it
is back, not at each envelope's own backoff time.

The loop keeps up to ``delivery.max_in_flight`` attempts running to a healthy peer and tops them up
as each one ends or new work is queued, instead of sending in rounds that wait for their slowest
attempt: under load an envelope queued mid-round would otherwise wait for the whole round, and
then for the next round's reads.

What is due to a peer at the same moment goes in batches (``delivery.batch_max`` envelopes per
HTTP exchange, docs/protocol.md §5.2) when the transport can carry them: under load that takes a
quarter or so off both nodes' work per envelope. Each envelope of a batch is settled on its own
answer, exactly as if it had gone alone; a message with evidence files, and the one envelope that
probes a failing peer, go alone.

The loop settles deadlines (``dead_letters``) at least every ``DEADLINE_CHECK_S``: an envelope past
its delivery deadline leaves the outbox as ``undeliverable``, with signed evidence, instead of being
retried for ever. ``stop(grace)`` lets the attempts in flight finish and record their receipts; what
is cancelled after the grace stays in the outbox and is sent again after a restart.

Each send names the size of the peer's newest log head stored here, and each receipt recorded
has its head judged afterwards (service/witness.py), so a peer showing two histories is caught.
Witnessing comes after the commit and swallows its own errors: it never costs a delivery.

Workers sharing a PostgreSQL database (issue 9) claim what they send: a round's envelopes are
leased to this worker in one write, the lease is renewed while attempts run and cleared when the
attempt is recorded or rescheduled, so no two workers send the same envelope at once; a dead
worker's leases lapse after ``delivery.lease_s`` and the others take its envelopes over. A node
alone on its SQLite file (storage/node_lock.py) needs no claim, and makes none.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging

from mla_node.crashpoints import crash_point
from mla_node.errors import DeliveryError, MlaError, ReceiptError, TrustError
from mla_node.ids import ulid_ms
from mla_node.logs import REQUEST_ID
from mla_node.protocol.directory import NodeEntry
from mla_node.protocol.envelope import MAX_ENVELOPE
from mla_node.protocol.evidence import Event
from mla_node.protocol.receipts import DELIVERED, REJECTED, Receipt, verify_receipt
from mla_node.protocol.witness import ConsistencyProof
from mla_node.service import blob_transfer, dead_letters, witness
from mla_node.service.context import NodeContext
from mla_node.service.counters import DeliveryMetrics
from mla_node.storage import repo
from mla_node.storage.db import Transaction
from mla_node.transport.base import (
    WITNESSED_SIZE,
    BatchAnswer,
    BatchTransport,
    BlobTransport,
    Outgoing,
    PeerAnswer,
    Transport,
)
from mla_node.transport.batches import ENTRY_OVERHEAD

log = logging.getLogger(__name__)

# Refusals that a retry cannot cure. Others (an unknown key or sender, a time in the future)
# can be a directory or clock that has not caught up yet, so they are retried until stale.
PERMANENT_REFUSALS = frozenset(
    {
        "envelope_malformed",
        "envelope_too_large",
        "envelope_unsupported_version",
        "envelope_unsupported_suite",
        "envelope_bad_signature",
        "envelope_wrong_recipient",
        "envelope_stale",
        "envelope_undecryptable",
        "envelope_revoked_key",
        "message_id_conflict",
        "attachment_invalid",  # a file is not what the signed envelope says of it
    }
)
IDLE_POLL_S = 5.0
# How stale the deadline check may get while a busy loop tops up its attempts (it ran before every
# round, hundreds of reads a second under load, for deadlines of hours).
DEADLINE_CHECK_S = 0.5


class Deliverer:
    def __init__(self, ctx: NodeContext, transport: Transport) -> None:
        self.ctx = ctx
        self.transport = transport
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        # peer -> message id -> its attempt, running now (the loop's, not deliver_round's)
        self._attempts: dict[str, dict[str, asyncio.Task[bool]]] = {}
        self._deadlines_checked: dict[str, float] = {}  # peer -> loop time of the last check
        self._failing: dict[str, int] = {}
        self.running = False
        self._stopping = False
        self.metrics = DeliveryMetrics()  # counted here, written out by GET /metrics
        self._renewer: asyncio.Task[None] | None = None
        self._in_flight = 0  # attempts running now: their leases are renewed

    async def start(self) -> None:
        d = self.ctx.config.delivery
        deadline_ms = d.deadline_s * 1000
        warn_ms = int(deadline_ms * d.deadline_warning_fraction)
        await self.ctx.db.write(lambda tx: repo.assign_missing_deadlines(tx, deadline_ms, warn_ms))
        self.running = True
        self._stopping = False
        self.ctx.wake_sender = self.wake
        if self.ctx.db.shared:
            self._renewer = asyncio.create_task(self._renew_leases(), name="outbox-leases")
        for peer in await repo.outbox_summary(self.ctx.db):
            self.wake(peer)

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop sending. Attempts in flight get ``grace_s`` to finish and record their receipts;
        then the loops are cancelled. Whatever was not recorded stays in the outbox."""
        self.running = False
        self._stopping = True
        attempts = [t for running in self._attempts.values() for t in running.values()]
        loops = [*self._loops.values(), *attempts]
        for event in self._wake.values():
            event.set()  # a loop waiting for its next round ends now
        if loops and grace_s > 0:
            _, pending = await asyncio.wait(loops, timeout=grace_s)
            if pending:
                log.warning(
                    "%d delivery loop(s) still busy after %.1f s; cancelling them (what they "
                    "were sending stays queued)",
                    len(pending),
                    grace_s,
                )
        renewer, self._renewer = self._renewer, None
        for task in [*loops, *([renewer] if renewer else [])]:
            task.cancel()
        for task in [*loops, *([renewer] if renewer else [])]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        self._attempts.clear()
        if self.ctx.db.shared:  # the other workers need not wait for these claims to lapse
            with contextlib.suppress(MlaError):
                await self.ctx.db.write(lambda tx: repo.release_leases(tx, self.ctx.worker))

    def wake(self, peer: str) -> None:
        if not self.running:
            return
        self._wake.setdefault(peer, asyncio.Event()).set()
        task = self._loops.get(peer)
        if task is None or task.done():
            self._loops[peer] = asyncio.create_task(self._run(peer), name=f"deliver-{peer}")

    async def _run(self, peer: str) -> None:
        wake = self._wake.setdefault(peer, asyncio.Event())
        running = self._attempts.setdefault(peer, {})
        while self.running:
            wake.clear()
            try:
                pause = await self._top_up(peer, running)
            except Exception:  # a bug must not end delivery to this peer for good
                log.exception("delivery round to %s failed", peer)
                pause = IDLE_POLL_S
            if pause > 0:
                # Woken by new work, by an attempt that ended, or by the next due time.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), pause)

    async def _top_up(self, peer: str, running: dict[str, asyncio.Task[bool]]) -> float:
        """Start attempts for what is due to ``peer``, up to the limit with those running; how
        long to wait before looking again (0: at once)."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._deadlines_checked.get(peer, -DEADLINE_CHECK_S) >= DEADLINE_CHECK_S:
            self._deadlines_checked[peer] = loop.time()
            await self._settle_deadlines(peer)
        started, pause = await self._start_due(peer, running)
        for item, attempt in started:
            running[item.message_id] = attempt
            attempt.add_done_callback(functools.partial(self._ended, peer, item.message_id))
        return pause

    def _ended(self, peer: str, message_id: str, attempt: asyncio.Task[bool]) -> None:
        self._attempts.get(peer, {}).pop(message_id, None)
        if not attempt.cancelled() and (exc := attempt.exception()) is not None:
            # What stays in the outbox is tried again: a bug costs a retry, not the envelope.
            log.error("delivery of %s to %s failed", message_id, peer, exc_info=exc)
        if (event := self._wake.get(peer)) is not None:
            event.set()

    async def deliver_round(self, peer: str) -> float:
        """One round: settle deadlines, send what is due to ``peer`` and wait for those attempts;
        how long to wait before the next round."""
        await self._settle_deadlines(peer)
        started, pause = await self._start_due(peer, {})
        if not started:
            return pause
        results = await asyncio.gather(*(attempt for _, attempt in started))
        return 0.0 if any(results) else self._backoff_s(self._failing.get(peer, 1)) / 4

    async def _settle_deadlines(self, peer: str) -> None:
        # Deadlines pass whether or not the directory or the peer can be used.
        now = self.ctx.clock()
        await dead_letters.expire_overdue(self.ctx, peer, now)
        await dead_letters.warn_approaching(self.ctx, peer, now)

    async def _start_due(
        self, peer: str, running: dict[str, asyncio.Task[bool]]
    ) -> tuple[list[tuple[repo.OutboxItem, asyncio.Task[bool]]], float]:
        """Attempts started for what is due to ``peer`` beyond those ``running``, and the pause
        before the next look (the longest while attempts run: the end of one wakes the loop)."""
        try:
            directory = self.ctx.directory()
        except TrustError as exc:
            log.warning("not sending to %s: %s", peer, exc.detail)
            return [], IDLE_POLL_S
        entry = directory.node(peer)
        if entry is None:
            log.warning("not sending to %s: it is not in the directory", peer)
            return [], IDLE_POLL_S
        now = self.ctx.clock()
        probing = self._failing.get(peer, 0) > 0
        room = (1 if probing else self.ctx.config.delivery.max_in_flight) - len(running)
        if room <= 0 or self._stopping:
            return [], 0.0 if self._stopping else IDLE_POLL_S
        # Those running are still queued: ask for as many more, and leave them out, as they were
        # when the read began: one that records its receipt while the read runs can be in its
        # answer (read before that commit) yet no longer be running. Only this loop starts
        # attempts to ``peer``, so none is added meanwhile.
        busy = set(running)
        limit, worker = room + len(busy), self.ctx.worker
        due = await repo.due_for_peer(self.ctx.db, peer, now, limit, worker)
        if due and self.ctx.db.shared:
            lease_until = now + int(self.ctx.config.delivery.lease_s * 1000)
            due = await self.ctx.db.write(
                lambda tx: repo.claim_due(tx, peer, now, limit, worker, lease_until)
            )
        due = [item for item in due if item.message_id not in busy][:room]
        if self._stopping:
            return [], 0.0  # start nothing new once stop() was called
        if due:
            started = []
            for group in self._exchanges(due, probing):
                attempt = asyncio.create_task(
                    self._attempt(entry, group[0])
                    if len(group) == 1
                    else self._attempt_batch(entry, group)
                )
                started += [(item, attempt) for item in group]
            return started, IDLE_POLL_S
        summary = None if running else (await repo.outbox_summary(self.ctx.db)).get(peer)
        if summary is None:
            return [], IDLE_POLL_S
        return [], max(0.0, min((summary[2] or now) - now, IDLE_POLL_S * 1000) / 1000)

    def _exchanges(self, due: list[repo.OutboxItem], probing: bool) -> list[list[repo.OutboxItem]]:
        """``due`` as the HTTP exchanges that carry it: batches of up to ``delivery.batch_max``
        envelopes within the peer's size limit; a message with files, and any envelope while the
        peer is probed, alone."""
        batch_max = self.ctx.config.delivery.batch_max
        if probing or batch_max == 1 or not isinstance(self.transport, BatchTransport):
            return [[item] for item in due]
        exchanges: list[list[repo.OutboxItem]] = []
        batch: list[repo.OutboxItem] = []
        size = 0
        for item in due:
            if item.has_attachments:
                exchanges.append([item])
                continue
            item_size = len(item.envelope) + ENTRY_OVERHEAD
            if batch and (len(batch) == batch_max or size + item_size > MAX_ENVELOPE):
                exchanges.append(batch)
                batch, size = [], 0
            batch.append(item)
            size += item_size
        return exchanges + ([batch] if batch else [])

    async def _attempt(self, entry: NodeEntry, item: repo.OutboxItem) -> bool:
        """One delivery attempt; True when the envelope left the outbox."""
        # Every line logged about the attempt, here and at the peer (the transport sends it),
        # names the request id of the API call that queued the envelope (mla_node/logs.py).
        request_id = REQUEST_ID.set(item.request_id)
        self._in_flight += 1
        try:
            return await self._attempt_once(entry, item)
        finally:
            self._in_flight -= 1
            REQUEST_ID.reset(request_id)

    async def _renew_leases(self) -> None:
        """Keep this worker's claims alive while its attempts run (a large file takes long)."""
        lease_ms = int(self.ctx.config.delivery.lease_s * 1000)
        while True:
            await asyncio.sleep(self.ctx.config.delivery.lease_s / 3)
            if self._in_flight == 0:
                continue
            try:
                await self.ctx.db.write(
                    functools.partial(
                        repo.renew_leases,
                        worker=self.ctx.worker,
                        lease_until=self.ctx.clock() + lease_ms,
                    )
                )
            except MlaError as exc:  # the next renewal tries again; a lapse costs a duplicate try
                log.warning("could not renew the outbox leases: %s", exc.detail)

    async def _attempt_once(self, entry: NodeEntry, item: repo.OutboxItem) -> bool:
        crash_point("deliver.before_send")
        self.metrics.attempt(entry.state)
        # A context variable, so the transport sees it through any wrapper (wait_for's task
        # copies the context); reset after, so it never outlives this attempt.
        witnessed = WITNESSED_SIZE.set(await self._witnessed_size(entry.state))
        answer: PeerAnswer | MlaError | TimeoutError
        try:
            if item.has_attachments:
                await self._push_files(entry, item)
            answer = await asyncio.wait_for(
                self.transport.send(entry, item.envelope),
                self.ctx.config.delivery.request_timeout_s,
            )
        except (DeliveryError, TimeoutError) as exc:
            answer = exc
        finally:
            WITNESSED_SIZE.reset(witnessed)
        return await self._settle(entry, item, answer)

    async def _attempt_batch(self, entry: NodeEntry, items: list[repo.OutboxItem]) -> bool:
        """Several envelopes in one exchange; each settled on its own answer. True when any
        left the outbox."""
        assert isinstance(self.transport, BatchTransport)
        self._in_flight += len(items)
        try:
            crash_point("deliver.before_send")
            self.metrics.attempt(entry.state, len(items))
            witnessed = WITNESSED_SIZE.set(await self._witnessed_size(entry.state))
            answers: list[BatchAnswer] | list[DeliveryError | TimeoutError]
            try:
                answers = await asyncio.wait_for(
                    self.transport.send_batch(
                        entry, [Outgoing(item.envelope, item.request_id) for item in items]
                    ),
                    self.ctx.config.delivery.request_timeout_s,
                )
            except (DeliveryError, TimeoutError) as exc:
                answers = [exc] * len(items)
            finally:
                WITNESSED_SIZE.reset(witnessed)
            # All at once, each in its own task (its request id): the records share a commit.
            settled = await asyncio.gather(
                *(self._settle(entry, item, a) for item, a in zip(items, answers, strict=True))
            )
            return any(settled)
        finally:
            self._in_flight -= len(items)

    async def _settle(
        self,
        entry: NodeEntry,
        item: repo.OutboxItem,
        answer: PeerAnswer | MlaError | TimeoutError,
    ) -> bool:
        """Record the peer's verified receipt, or reschedule; True when the envelope left the
        outbox."""
        request_id = REQUEST_ID.set(item.request_id)
        try:
            receipt = None
            if isinstance(answer, PeerAnswer):
                try:
                    receipt = self._verified_receipt(entry, item, answer)
                except ReceiptError as exc:
                    answer = exc
            if not isinstance(answer, PeerAnswer):
                detail = answer.detail if isinstance(answer, MlaError) else "timed out"
                code = answer.code if isinstance(answer, MlaError) else "timeout"
                self.metrics.failed(entry.state, code)
                await self._retry_later(entry.state, item, detail)
                return False
            if receipt is None:
                self.metrics.failed(entry.state, answer.refused_code or "refused")
                await self._retry_later(entry.state, item, f"refused: {answer.refused_code}")
                return False
            crash_point("deliver.before_record")
            await self._record(entry.state, item, receipt)
            crash_point("deliver.after_record")
            await self._witness(entry.state, receipt, answer.proof)
            return True
        finally:
            REQUEST_ID.reset(request_id)

    async def _push_files(self, entry: NodeEntry, item: repo.OutboxItem) -> None:
        """The message's files go first, so the receiver can check them before it signs a
        receipt. Each resumes from what the peer already holds; none has an overall deadline,
        only a stall timeout (a large file on a slow link takes as long as it takes)."""
        if not isinstance(self.transport, BlobTransport):
            raise DeliveryError("this transport cannot carry evidence files")
        for blob in await blob_transfer.outgoing(self.ctx, item.message_id):
            sent = await self.transport.push_blob(
                entry,
                blob.digest,
                blob.size,
                blob.path,
                stall_s=self.ctx.config.delivery.request_timeout_s,
            )
            if sent:
                log.info("sent %d bytes of file %s to %s", sent, blob.digest.hex(), entry.state)

    async def _witnessed_size(self, peer: str) -> int | None:
        try:
            return await witness.witnessed_size(self.ctx, peer)
        except Exception:  # a hint only: without it the peer sends no proof, nothing more
            log.exception("could not read the witnessed head of %s", peer)
            return None

    async def _witness(self, peer: str, receipt: Receipt, proof: ConsistencyProof | None) -> None:
        """Judge the head the recorded receipt carries; whatever goes wrong is only logged."""
        try:
            await witness.observe(self.ctx, peer, receipt.head, proof)
        except Exception:
            log.exception("witnessing the log head of %s failed", peer)

    def _verified_receipt(
        self, entry: NodeEntry, item: repo.OutboxItem, answer: PeerAnswer
    ) -> Receipt | None:
        """The receipt when it settles the envelope's fate; None when a retry may still help."""
        if answer.receipt is None:
            return None
        receipt = verify_receipt(
            answer.receipt,
            self.ctx.directory(),
            expect_message_id=item.message_id,
            expect_envelope_digest=item.envelope_sha256,
            expect_signer=entry.state,
        )
        if receipt.status == DELIVERED:
            return receipt
        if receipt.status == REJECTED and receipt.code in PERMANENT_REFUSALS:
            return receipt
        return None

    async def _record(self, peer: str, item: repo.OutboxItem, receipt: Receipt) -> None:
        now = self.ctx.clock()
        was_failing = self._failing.pop(peer, 0) > 0
        delivered = receipt.status == DELIVERED

        async def job(tx: Transaction) -> None:
            if not await repo.dequeue(tx, item.message_id):
                return  # recorded already by a concurrent attempt
            receipt_digest = hashlib.sha256(receipt.raw).digest()
            await repo.insert_receipt(
                tx,
                repo.ReceiptRow(
                    item.message_id,
                    "received",
                    receipt.status,
                    receipt.code,
                    receipt.raw,
                    receipt_digest,
                    receipt.at,
                ),
            )
            case_id = await repo.case_of(tx, item.message_id)
            assert case_id is not None  # the outbox row names a stored message
            await self.ctx.record_evidence(
                tx,
                event=Event.DELIVERED if delivered else Event.NOT_DELIVERED,
                message_id=item.message_id,
                case_id=case_id,
                at=now,
                envelope_digest=item.envelope_sha256,
                peer=peer,
                detail=receipt.code,
                receipt_digest=receipt_digest,
            )
            await repo.set_status(
                tx, item.message_id, "delivered" if delivered else "rejected", now
            )
            await repo.record_peer_result(tx, peer, now, None)
            if was_failing:
                await repo.wake_peer(tx, peer, now)

        await self.ctx.db.write(job)
        # Submitted -> verified receipt: the message id (a ULID) carries its creation time.
        self.metrics.recorded(peer, receipt.status, now - ulid_ms(item.message_id))
        if delivered:
            log.info("%s took %s: receipt verified and recorded", peer, item.message_id)
        else:
            log.warning("%s refused %s for good: %s", peer, item.message_id, receipt.code)

    async def _retry_later(self, peer: str, item: repo.OutboxItem, error: str) -> None:
        crash_point("deliver.before_reschedule")
        now = self.ctx.clock()
        self._failing[peer] = self._failing.get(peer, 0) + 1
        attempts = item.attempts + 1
        delay_ms = int(self._backoff_s(attempts) * 1000)

        async def job(tx: Transaction) -> None:
            await repo.reschedule(tx, item.message_id, attempts, now + delay_ms, error)
            await repo.record_peer_result(tx, peer, now, error)

        await self.ctx.db.write(job)
        log.info(
            "delivery of %s to %s failed (%s); retry in %d ms",
            item.message_id,
            peer,
            error,
            delay_ms,
        )

    def _backoff_s(self, attempts: int) -> float:
        """Exponential backoff, capped, with jitter so that recovering peers are not stampeded."""
        d = self.ctx.config.delivery
        base = min(d.max_backoff_s, d.initial_backoff_s * 2 ** min(attempts - 1, 30))
        return float(base * (0.5 + self.ctx.rng.random() / 2))
