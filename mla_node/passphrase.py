"""Private key files sealed with a passphrase, and where a node's passphrase comes from.

Key files are always 0600 (``pki.write_private_file``). A node may also seal them, so that a
copied disk or backup gives away no key without the passphrase. A sealed file is::

    b"mla-node sealed key 1\\n"      magic, 22 bytes
    log2(n) | r | p                 scrypt cost, one byte each
    salt                            16 random bytes
    nonce                           12 random bytes
    AES-256-GCM ciphertext + tag    of the file's plain contents, with everything above as AAD

with the AES key ``scrypt(passphrase (UTF-8), salt, n, r, p)``. The plain contents are what the
file holds unsealed (raw Ed25519 or HPKE private bytes, the TLS key's PKCS#8 PEM), so one format
serves every kind of key, and a file without the magic is read as a plain key: sealing is
optional per node and per file. The cost (n = 2**17, r = 8: 128 MiB, ~0.4 s) is in the header,
so it can be raised later without breaking older files; a file asking for more than
``MAX_LOG2_N`` is refused rather than allowed to exhaust memory.

The passphrase comes from ``keys.passphrase_env`` (an environment variable) or
``keys.passphrase_file`` (a 0600 file), read once at start.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mla_node import pki
from mla_node.config import NodeConfig
from mla_node.errors import ConfigError, KeyFileError

__all__ = [
    "MAGIC",
    "configured_passphrase",
    "is_sealed",
    "memory_file",
    "read_key",
    "seal",
    "unseal",
    "write_key",
]

MAGIC = b"mla-node sealed key 1\n"
SCRYPT_LOG2_N = 17
SCRYPT_R = 8
SCRYPT_P = 1
MAX_LOG2_N = 20  # 1 GiB at r = 8: the most a file may ask for
_PARAMS = struct.Struct(">BBB")
_SALT = 16
_NONCE = 12
_HEADER = len(MAGIC) + _PARAMS.size + _SALT + _NONCE


def is_sealed(data: bytes) -> bool:
    return data.startswith(MAGIC)


def seal(plain: bytes, passphrase: bytes) -> bytes:
    """``plain`` sealed under ``passphrase`` (fresh salt and nonce), at ``SCRYPT_LOG2_N``."""
    if not passphrase:
        raise ValueError("an empty passphrase seals nothing")
    header = (
        MAGIC
        + _PARAMS.pack(SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
        + secrets.token_bytes(_SALT)
        + secrets.token_bytes(_NONCE)
    )
    key = _derive(passphrase, header[len(MAGIC) : -_NONCE])
    return header + AESGCM(key).encrypt(header[-_NONCE:], plain, header)


def unseal(data: bytes, passphrase: bytes | None, path: Path) -> bytes:
    """The plain contents of the key file at ``path`` (``data``); errors name the file."""
    if not is_sealed(data):
        return data
    if not passphrase:
        raise KeyFileError(
            f"{path} is sealed with a passphrase and none is configured: set "
            "keys.passphrase_env or keys.passphrase_file in the node's config",
            field=str(path),
        )
    if len(data) < _HEADER + 16:
        raise KeyFileError(f"{path} is a truncated sealed key file", field=str(path))
    log2_n, r, p = _PARAMS.unpack_from(data, len(MAGIC))
    if not (1 <= log2_n <= MAX_LOG2_N and 1 <= r <= 32 and 1 <= p <= 16):
        raise KeyFileError(
            f"{path} asks for scrypt parameters outside what mla_node accepts "
            f"(n = 2**{log2_n}, r = {r}, p = {p})",
            field=str(path),
        )
    header = data[:_HEADER]
    try:
        key = _derive(passphrase, header[len(MAGIC) : -_NONCE])
        return AESGCM(key).decrypt(header[-_NONCE:], data[_HEADER:], header)
    except InvalidTag:
        raise KeyFileError(
            f"cannot open {path}: wrong passphrase, or the file was altered", field=str(path)
        ) from None


# Each file has its own salt, so this caches one derivation per file: reloading the keys folder
# (on every new directory) does not pay ~0.4 s per key again. The cache holds what the loaded
# keys already give away: the process has those in memory anyway.
@functools.lru_cache(maxsize=256)
def _derive(passphrase: bytes, params_and_salt: bytes) -> bytes:
    log2_n, r, p = _PARAMS.unpack_from(params_and_salt)
    salt = params_and_salt[_PARAMS.size :]
    kdf = Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p)
    return kdf.derive(passphrase)


def write_key(path: Path, plain: bytes, passphrase: bytes | None) -> None:
    """Write a private key file, 0600, sealed when there is a passphrase."""
    pki.write_private_file(path, seal(plain, passphrase) if passphrase else plain)


def read_key(path: Path, passphrase: bytes | None) -> bytes:
    """Read a private key file (0600 checked), unsealing it if it is sealed."""
    return unseal(pki.read_private_file(path), passphrase, path)


# --- the TLS key, for OpenSSL -------------------------------------------------------------------

_MEMORY_FILES: dict[bytes, Path] = {}


def memory_file(plain: bytes, name: str) -> Path:
    """A path OpenSSL can read ``plain`` from without it touching a disk.

    ``ssl`` loads a private key only from a path. For an unsealed TLS key that path is an
    anonymous in-memory file (``memfd_create``) of this process, mode 0600, reached through
    ``/proc/self/fd``: readable only by what can already read the process's memory. Kept open for
    the life of the process (the transport opens it again for each new peer session); the same
    contents always get the same file, so reloading the keys does not add one.
    """
    digest = hashlib.sha256(plain).digest()
    known = _MEMORY_FILES.get(digest)
    if known is not None:
        return known
    create = getattr(os, "memfd_create", None)
    if create is None:
        raise KeyFileError(
            "a sealed TLS key needs memfd_create (Linux); keep tls.key unsealed on this system",
            field=name,
        )
    fd = create(f"mla-node-{name}", os.MFD_CLOEXEC)
    os.fchmod(fd, 0o600)
    view = memoryview(plain)
    while view:
        view = view[os.write(fd, view) :]
    path = Path(f"/proc/self/fd/{fd}")
    _MEMORY_FILES[digest] = path
    return path


# --- where the passphrase comes from ------------------------------------------------------------


def configured_passphrase(config: NodeConfig) -> bytes | None:
    """The passphrase the config points at, or None when it names none.

    A source that is named but empty or missing is an error now, at start, rather than a node
    that fails later on the first sealed file.
    """
    keys = config.keys
    if keys.passphrase_env and keys.passphrase_file:
        raise ConfigError(
            "set keys.passphrase_env or keys.passphrase_file, not both",
            field="keys.passphrase_file",
        )
    if keys.passphrase_env:
        value = os.environ.get(keys.passphrase_env, "")
        if not value:
            raise ConfigError(
                f"keys.passphrase_env names the environment variable {keys.passphrase_env}, "
                "which is not set or empty",
                field="keys.passphrase_env",
            )
        return value.encode("utf-8")
    if keys.passphrase_file:
        path = config.path(Path(keys.passphrase_file))
        text = pki.read_private_file(path).split(b"\n", 1)[0].rstrip(b"\r")
        if not text:
            raise ConfigError(
                f"the passphrase file {path} (keys.passphrase_file) is empty",
                field="keys.passphrase_file",
            )
        return text
    return None
