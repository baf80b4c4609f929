"""The one configuration object of a node, read from TOML.

Every setting is documented here (its ``description``) and in config/README.md; a test keeps
the two in step. A bad file fails at start-up with the dotted path of the bad key. Relative paths
are resolved against the directory holding the config file, so a node's folder can be moved whole.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from mla_node.errors import ConfigError
from mla_node.protocol.directory import MAX_AUTHORITY_NAME


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Section):
    state: str = Field(
        description="ISO 3166 alpha-2 code of the state this node serves, e.g. AR.",
        pattern=r"^[A-Z]{2}$",
    )
    authority_name: str = Field(
        description="Name of the central authority that runs the node.",
        max_length=MAX_AUTHORITY_NAME,
    )
    database: str = Field(
        "node.db",
        min_length=1,
        description="Where the node keeps its state: a SQLite database file (the embedded "
        "default; relative to this file's folder), or a PostgreSQL URL "
        "(postgresql://USER@HOST:PORT/DBNAME, with the postgresql extra installed), which several "
        "mla-node run workers of this state may share (docs/high-availability.md).",
    )
    files: str = Field(
        "",
        description="Folder of the encrypted evidence files and split-view evidence. Empty: "
        "beside the SQLite database file; with PostgreSQL, this file's folder. Workers sharing "
        "a PostgreSQL database must share this folder too.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="How mla-node run writes its log to standard error: text lines, or one "
        "JSON object a line (ts, level, logger, msg, request_id, alert) for a log collector. "
        "mla-node run --log-format overrides it.",
    )


class ClerkApiSection(_Section):
    host: str = Field("127.0.0.1", description="Address the clerk API and web pages listen on.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the clerk API (0: any free).")
    max_body_bytes: int = Field(
        1 << 20, ge=1024, description="Largest request body the clerk API reads (bytes)."
    )
    max_attachment_bytes: int = Field(
        64 << 30,
        ge=0,
        le=1 << 50,
        description="Largest evidence file a clerk may upload (POST /api/v1/attachments, "
        "bytes); it is streamed to disk, so memory does not grow with it.",
    )
    unsubmitted_upload_s: int = Field(
        7 * 24 * 3600,
        ge=60,
        description="An uploaded evidence file that no submission names is deleted (its row and "
        "its encrypted file) this long after its upload (seconds), so abandoned uploads do not "
        "fill the disk. Checked every hour and at start.",
    )


class PeerSection(_Section):
    host: str = Field("127.0.0.1", description="Address the mutual-TLS peer endpoint listens on.")
    port: int = Field(8443, ge=0, le=65535, description="Port of the peer endpoint.")
    max_blob_bytes: int = Field(
        (64 << 30) + (1 << 30),
        ge=1 << 20,
        le=1 << 51,
        description="Largest encrypted evidence file accepted from a peer node (bytes).",
    )
    max_partial_bytes: int = Field(
        128 << 30,
        ge=1 << 20,
        description="Disk space one peer's incomplete file transfers may take at once (bytes); "
        "a transfer past it is refused (507) until earlier ones complete.",
    )


class KeysSection(_Section):
    dir: Path = Field(
        Path("keys"),
        description="Folder with this node's private keys (mode 0600) and TLS certificate.",
    )
    passphrase_env: str = Field(
        "",
        pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$",
        description="Name of the environment variable holding the passphrase the private key "
        "files are sealed with (mla-node node init --passphrase-env), read at start. Empty: no "
        "passphrase from the environment. Keys not sealed are read as they are.",
    )
    passphrase_file: str = Field(
        "",
        description="File (mode 0600) whose first line is that passphrase, instead of "
        "keys.passphrase_env. Empty: none.",
    )
    trust_root: Path = Field(
        Path("trust-root.json"), description="The network's trust root (root keys and TLS CA)."
    )
    directory: Path = Field(
        Path("directory.bin"),
        description="The signed directory file; a newer version placed here is picked up live.",
    )
    directory_url: str = Field(
        "",
        description="HTTPS URL of the network authority's directory service (mla-node authority "
        "serve), e.g. https://authority.example:8444/directory.bin. Polled every "
        "keys.directory_fetch_s; a newer directory is verified against the trust root, applied "
        "live and written to keys.directory. Empty: only the keys.directory file is read.",
    )
    directory_ca: str = Field(
        "",
        description="PEM file of the CA that certifies the directory service's TLS certificate. "
        "Empty: the network CA of keys.trust_root, which issues the certificate mla-node "
        "authority serve presents.",
    )
    directory_fetch_s: float = Field(
        60.0,
        gt=0,
        description="How often the directory service is asked for a newer version (seconds).",
    )
    directory_alert_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Log ALERT directory_stale (WARNING, ERROR once expired) when the directory "
        "in use has less than this fraction of its lifetime left: 0.2 of a 30-day directory is "
        "its last 6 days.",
    )

    @field_validator("directory_url")
    @classmethod
    def _https_only(cls, value: str) -> str:
        url = urlsplit(value)
        if value and (url.scheme != "https" or not url.hostname):
            # Plain HTTP would let anyone on the path withhold newer directories unnoticed until
            # the stale alert; the signature protects the content, TLS the freshness.
            raise ValueError("must be an https:// URL with a host name, or empty")
        return value


class DeliverySection(_Section):
    initial_backoff_s: float = Field(
        0.5, gt=0, description="First retry delay after a failed delivery (seconds)."
    )
    max_backoff_s: float = Field(
        300.0, gt=0, description="Longest delay between two delivery attempts (seconds)."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="Time allowed for one delivery attempt (seconds)."
    )
    max_in_flight: int = Field(
        16, ge=1, le=256, description="Envelopes sent to one peer at the same time."
    )
    batch_max: int = Field(
        16,
        ge=1,
        le=64,
        description="Most envelopes sent to one peer in one HTTP exchange, when several are due "
        "at once (1: each in its own).",
    )
    max_age_s: int = Field(
        7 * 24 * 3600,
        ge=60,
        description="Oldest envelope accepted (seconds since its creation); replays of older "
        "ones are refused as stale.",
    )
    max_future_skew_s: int = Field(
        300, ge=0, description="How far in the future an envelope's creation time may be."
    )
    directory_poll_s: float = Field(
        5.0, gt=0, description="How often the directory file is checked for a newer version."
    )
    deadline_s: int = Field(
        72 * 3600,
        ge=60,
        description="Delivery deadline of an outbound message (seconds after it is queued): "
        "past it the node stops trying, records signed not_delivered evidence (deadline_passed) "
        "and marks the message undeliverable until an admin resends it. Must be shorter than "
        "max_age_s.",
    )
    deadline_warning_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Fraction of deadline_s after which a message still queued logs a warning, "
        "once.",
    )
    lease_s: float = Field(
        15.0,
        gt=0,
        description="Workers sharing a PostgreSQL database: how long a worker's claim on the "
        "envelopes it is sending lasts unless renewed (it renews every third of it). A worker "
        "that dies leaves its envelopes to the others after at most this long.",
    )
    shutdown_grace_s: float = Field(
        10.0,
        ge=0,
        description="On SIGTERM, time in-flight deliveries get to finish and record their "
        "receipts before they are cancelled (they stay queued and are sent again after restart).",
    )

    @field_validator("deadline_s")
    @classmethod
    def _deadline_before_stale(cls, value: int, info: ValidationInfo) -> int:
        max_age = info.data.get("max_age_s")
        if isinstance(max_age, int) and value >= max_age:
            # Past max_age_s every receiver refuses the envelope as stale: a sender trying longer
            # would turn "could not reach" into a signed refusal.
            raise ValueError(f"must be shorter than delivery.max_age_s ({max_age})")
        return value


class AuditSection(_Section):
    checkpoint_interval_s: float = Field(
        300.0,
        gt=0,
        description="How often the node signs a checkpoint (tree head) of its evidence log when "
        "the log grew (seconds); one is also made at start and on demand (docs/audit.md).",
    )
    auditors_see_content: bool = Field(
        False,
        description="Whether the auditor role sees the content of requests (the form) in the "
        "clerk API and in evidence bundles. Off by default: auditors check what was sent, when "
        "and to whom, from signatures and digests, without reading the personal data inside.",
    )


class OpsSection(_Section):
    expiry_alert_days: int = Field(
        30,
        ge=1,
        description="Raise ALERT certificate_expiring or key_expiring when this node's TLS "
        "certificate, its CA or its newest key of a kind ends within this many days.",
    )
    peer_unreachable_alert_s: int = Field(
        3600,
        ge=60,
        description="Raise ALERT peer_unreachable when deliveries to a peer have failed for "
        "this long (seconds).",
    )
    alert_check_s: float = Field(
        60.0, gt=0, description="How often the alerts are computed and logged (seconds)."
    )
    alert_repeat_s: float = Field(
        3600.0,
        gt=0,
        description="How often an alert that stands is logged again (seconds); a new or "
        "worse one is logged at once.",
    )


class NodeConfig(_Section):
    node: NodeSection
    clerk_api: ClerkApiSection = ClerkApiSection()
    peer: PeerSection = PeerSection()
    keys: KeysSection = KeysSection()
    delivery: DeliverySection = DeliverySection()
    audit: AuditSection = AuditSection()
    ops: OpsSection = OpsSection()
    base_dir: Path = Field(
        Path("."), exclude=True, description="Folder relative paths are resolved against."
    )

    def path(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else self.base_dir / relative

    @property
    def database_url(self) -> str | None:
        """The PostgreSQL URL, or None when the node runs on its embedded SQLite file."""
        url = self.node.database
        return url if url.startswith(("postgresql://", "postgres://")) else None

    @property
    def database_location(self) -> str:
        """What storage.db.open_database takes: the PostgreSQL URL or the SQLite file's path."""
        return self.database_url or str(self.database_path)

    @property
    def database_path(self) -> Path:
        """The SQLite file; a ConfigError for a node on PostgreSQL (no file to back up, lock...)."""
        if self.database_url is not None:
            raise ConfigError(
                "this needs the node's SQLite file, and node.database is a PostgreSQL URL "
                "(use PostgreSQL's own tools: docs/high-availability.md)",
                field="node.database",
            )
        return self.path(Path(self.node.database))

    @property
    def files_dir(self) -> Path:
        """The evidence files' folder (``node.files``)."""
        if self.node.files:
            return self.path(Path(self.node.files))
        return self.base_dir if self.database_url is not None else self.database_path.parent

    @property
    def keys_dir(self) -> Path:
        return self.path(self.keys.dir)

    @property
    def trust_root_path(self) -> Path:
        return self.path(self.keys.trust_root)

    @property
    def directory_path(self) -> Path:
        return self.path(self.keys.directory)

    @property
    def directory_ca_path(self) -> Path | None:
        return self.path(Path(self.keys.directory_ca)) if self.keys.directory_ca else None


def parse_config(data: dict[str, Any], base_dir: Path) -> NodeConfig:
    try:
        return NodeConfig.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {first['msg']}", field=where) from exc


def load_config(path: Path) -> NodeConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}", field=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", field=str(path)) from exc
    return parse_config(data, path.resolve().parent)


def documented_settings() -> dict[str, str]:
    """Every setting's dotted name and description, for the docs test."""
    out: dict[str, str] = {}
    for section_name, field in NodeConfig.model_fields.items():
        if field.exclude:
            continue
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for key, sub in model.model_fields.items():
            out[f"{section_name}.{key}"] = sub.description or ""
    return out
