"""The one error tree of mla_node.

Errors are grouped by who is at fault, because that decides what happens next:

- ``ClientError``: the clerk, auditor or admin sent something wrong (4xx, fix the input);
- ``PeerError``: a remote node sent something we refuse (envelope, receipt): never retried as is;
- ``TrustError``: the network's trust material (directory, keys, certificates) is not acceptable;
- ``DeliveryError``: the network or the peer is unavailable right now: retry later;
- ``ConfigError``: the operator's configuration or files are wrong: refuse to start;
- ``StorageError``: the database is not usable;
- ``ShuttingDown``: the node is stopping (SIGTERM) and takes no new writes.

Every error has a stable ``code`` (documented in docs/errors.md; a test keeps the two in step)
and an HTTP status hint. Codes never change meaning once released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One bad field of an input, as a JSON pointer-like dotted path (``form.person.name``)."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


class MlaError(Exception):
    """Base of every error mla_node raises on purpose."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        field: str | None = None,
        problems: list[FieldProblem] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.field = field
        self.problems = problems or []
        self.extra = extra or {}
        super().__init__(self.detail)

    def problem(self) -> dict[str, Any]:
        """RFC 9457 problem details, with our stable ``code`` and the field at fault."""
        body: dict[str, Any] = {
            "type": f"/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        # The field at fault: named outright, or the first of several bad fields.
        field = self.field or (self.problems[0].field if self.problems else None)
        if field is not None:
            body["field"] = field
        if self.problems:
            body["errors"] = [p.as_dict() for p in self.problems]
        body.update(self.extra)
        return body


# --- the caller of our local API is at fault ---------------------------------------------------


class ClientError(MlaError):
    code = "bad_request"
    status = 400
    title = "Bad request"


class MalformedBody(ClientError):
    code = "malformed_body"
    title = "The request body is not valid JSON of the expected shape"


class FormInvalid(ClientError):
    code = "form_invalid"
    status = 422
    title = "The form has invalid or missing fields"


class UnknownFormType(ClientError):
    code = "unknown_form_type"
    status = 422
    title = "Unknown form type or version"


class IdempotencyKeyReused(ClientError):
    code = "idempotency_key_reused"
    status = 422
    title = "This Idempotency-Key was already used with a different request body"


class InvalidParameter(ClientError):
    code = "invalid_parameter"
    status = 400
    title = "A query or path parameter is invalid"


class Unauthenticated(ClientError):
    code = "unauthenticated"
    status = 401
    title = "A valid bearer token is required"


class Forbidden(ClientError):
    code = "forbidden"
    status = 403
    title = "This role may not do this"


class NotFound(ClientError):
    code = "not_found"
    status = 404
    title = "No such resource"


class InvalidStateForAction(ClientError):
    code = "invalid_state"
    status = 409
    title = "The request is not in a state that allows this action"


class PayloadTooLarge(ClientError):
    code = "payload_too_large"
    status = 413
    title = "The request body is larger than allowed"


class UnsupportedMediaType(ClientError):
    code = "unsupported_media_type"
    status = 415
    title = "Unsupported content type"


class UnknownState(ClientError):
    code = "unknown_state"
    status = 422
    title = "The requested state has no node in the directory"


# --- a remote node sent something we refuse ---------------------------------------------------


class PeerError(MlaError):
    code = "peer_error"
    status = 400
    title = "Refused input from a peer node"


class BatchMalformed(PeerError):
    """A batch of envelopes is not the array of entries docs/protocol.md §5.2 describes; none of
    its envelopes was looked at."""

    code = "batch_malformed"
    title = "The batch is not an array of envelope entries"


class EnvelopeError(PeerError):
    """An envelope is refused. Subclasses name why; nothing of it is stored as delivered."""

    code = "envelope_invalid"
    title = "Envelope refused"


class EnvelopeMalformed(EnvelopeError):
    code = "envelope_malformed"
    title = "The envelope is not well-formed msgpack of the expected shape"


class EnvelopeTooLarge(EnvelopeError):
    code = "envelope_too_large"
    status = 413
    title = "The envelope is larger than allowed"


class EnvelopeUnsupportedVersion(EnvelopeError):
    code = "envelope_unsupported_version"
    title = "Unsupported protocol version"


class EnvelopeUnsupportedSuite(EnvelopeError):
    code = "envelope_unsupported_suite"
    title = "Unsupported or not accepted encryption suite"


class EnvelopeUnknownSender(EnvelopeError):
    code = "envelope_unknown_sender"
    status = 403
    title = "The sender is not in the directory"


class EnvelopeUnknownKey(EnvelopeError):
    code = "envelope_unknown_key"
    status = 403
    title = "The key id is not in the directory"


class EnvelopeKeyNotValid(EnvelopeError):
    code = "envelope_key_not_valid"
    status = 403
    title = "The key is outside its validity window"


class EnvelopeRevokedKey(EnvelopeError):
    code = "envelope_revoked_key"
    status = 403
    title = "The key has been revoked"


class EnvelopeBadSignature(EnvelopeError):
    code = "envelope_bad_signature"
    status = 403
    title = "The envelope signature does not verify"


class EnvelopeWrongRecipient(EnvelopeError):
    code = "envelope_wrong_recipient"
    status = 403
    title = "The envelope is addressed to another node"


class EnvelopeStale(EnvelopeError):
    code = "envelope_stale"
    title = "The envelope is older than the maximum age"


class EnvelopeFromFuture(EnvelopeError):
    code = "envelope_from_future"
    title = "The envelope's creation time is too far in the future"


class EnvelopeUndecryptable(EnvelopeError):
    """Every decryption failure collapses into this one opaque error, on purpose."""

    code = "envelope_undecryptable"
    title = "The envelope cannot be decrypted"


class EnvelopeSenderMismatch(EnvelopeError):
    code = "envelope_sender_mismatch"
    status = 403
    title = "The TLS client certificate does not belong to the envelope's sender"


class MessageIdConflict(EnvelopeError):
    code = "message_id_conflict"
    status = 409
    title = "This message id was already delivered with different content"


class AttachmentMissing(EnvelopeError):
    """Transient: the sender pushes the file (again) and sends the envelope after it."""

    code = "attachment_missing"
    status = 409
    title = "A file the envelope names has not been received completely"


class AttachmentInvalid(EnvelopeError):
    """The sender's file does not match what its signed envelope says: permanent."""

    code = "attachment_invalid"
    title = "A file the envelope names does not decrypt, or its size or SHA-256 differ"


class BlobError(PeerError):
    """A transfer of an encrypted file between nodes (``/peer/v1/blobs``) is refused."""

    code = "blob_invalid"
    title = "The file transfer is refused"


class BlobOffsetMismatch(BlobError):
    code = "blob_offset_mismatch"
    status = 409
    title = "Upload-Offset is not the number of bytes this node holds of the file"


class BlobTooLarge(BlobError):
    code = "blob_too_large"
    status = 413
    title = "The file is larger than this node accepts from a peer"


class BlobQuotaExceeded(BlobError):
    code = "blob_quota_exceeded"
    status = 507
    title = "This peer's incomplete transfers already take the space allowed to it"


class BlobSenderUnknown(BlobError):
    code = "blob_sender_unknown"
    status = 403
    title = "The TLS client certificate is not one the directory lists"


class ReceiptError(PeerError):
    code = "receipt_invalid"
    title = "The receipt does not verify"


# --- the network's trust material is not acceptable -------------------------------------------


class TrustError(MlaError):
    code = "trust_error"
    status = 503
    title = "Trust material refused"


class DirectoryMalformed(TrustError):
    code = "directory_malformed"
    title = "The directory is not well-formed"


class DirectoryBadSignature(TrustError):
    code = "directory_bad_signature"
    title = "The directory is not signed by the network's trust root"


class DirectoryRollback(TrustError):
    code = "directory_rollback"
    title = "The directory is older than the one already accepted"


class DirectoryExpired(TrustError):
    code = "directory_expired"
    title = "The directory has expired"


class EvidenceInvalid(TrustError):
    code = "evidence_invalid"
    title = "An evidence record does not verify"


class CheckpointInvalid(TrustError):
    code = "checkpoint_invalid"
    title = "A signed tree head (checkpoint) of an evidence log does not verify"


class LogProofInvalid(TrustError):
    code = "log_proof_invalid"
    title = "A Merkle inclusion or consistency proof of an evidence log does not verify"


class BundleInvalid(TrustError):
    code = "bundle_invalid"
    title = "An evidence bundle does not verify"


# --- the network or the peer is unavailable right now ----------------------------------------


class DeliveryError(MlaError):
    """Transient: the sender keeps the envelope and retries with backoff."""

    code = "delivery_failed"
    status = 502
    title = "The peer could not be reached or did not answer"


class DirectoryUnavailable(DeliveryError):
    """Transient: the node keeps the directory it has and asks the authority again later."""

    code = "directory_unavailable"
    title = "The network authority's directory service could not be reached or answered badly"


# --- the operator's configuration -------------------------------------------------------------


class ConfigError(MlaError):
    code = "config_invalid"
    status = 500
    title = "Invalid configuration"


class KeyFileError(ConfigError):
    code = "key_file_invalid"
    title = "A key file is missing, unreadable or too widely readable"


# --- the database -----------------------------------------------------------------------------


class StorageError(MlaError):
    code = "storage_error"
    status = 503
    title = "The database is not usable"


class DatabaseNewerThanProgram(StorageError):
    code = "database_too_new"
    title = "The database was written by a newer version of mla_node"


class DatabaseInUse(StorageError):
    """A node runs on the database (it holds ``<database>.lock``): a restore would pull the file
    out from under it, and a second node would break the single-writer rule."""

    code = "database_in_use"
    status = 409
    title = "A running node holds this database"


class BackupInvalid(StorageError):
    code = "backup_invalid"
    status = 422
    title = "The file is not a consistent backup of a node database"


class BlobCorrupt(StorageError):
    code = "blob_corrupt"
    title = "A stored file does not decrypt or does not match its recorded digest"


# --- the node is stopping -------------------------------------------------------------------


class ShuttingDown(MlaError):
    """The node received SIGTERM: it finishes what is in flight and takes no new writes."""

    code = "shutting_down"
    status = 503
    title = "The node is shutting down"


def all_error_classes() -> list[type[MlaError]]:
    """Every error class, for the documentation test and the OpenAPI spec."""
    seen: list[type[MlaError]] = []
    stack: list[type[MlaError]] = [MlaError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
