"""The competitors' codec cycle: Peppol AS4 (``as4``) and AS2 (``pyas2lib``), in one process.

Runs only in the competitors' own virtual environment (``python -m bench --setup-competitors``):
``as4`` pins ``cryptography<47`` and mla_node needs ``cryptography>=48``, so the two cannot share
one. That is also why the libraries are imported by name at run time: neither mypy nor the main
environment has them, and their APIs are untyped anyway.

Each cycle is the same as mla_node's: the sender signs and encrypts, the receiver decrypts and
verifies and answers with a signed receipt, the sender verifies the receipt and checks that it
acknowledges what was sent. Both keep their library's defaults except where named below, with
RSA-2048 self-signed certificates pinned on each side (what a point-to-point agreement does):

- as4 0.2.0, Peppol profile: SBDH envelope, gzip, AES-128-GCM under RSA-OAEP, RSA-SHA256 XML
  signature (exc-c14n) over the ebMS header, the SOAP body and the payload, signed
  non-repudiation receipt checked against the sent references.
- pyas2lib 1.4.4: S/MIME signed (RSA PKCS#1 v1.5, SHA-256) then encrypted (AES-256-CBC, the
  strongest it offers, instead of its default 3DES; the key under RSA PKCS#1 v1.5), synchronous
  signed MDN (SHA-256) whose MIC is compared with the sent one.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

Cycle = Callable[[], bytes]

# --- oscrypto and OpenSSL 3.0.10+ -----------------------------------------------------------------
#
# pyas2lib needs oscrypto, whose last release (1.3.0) reads the OpenSSL version with
# r"\b(\d\.\d\.\d[a-z]*)\b": one digit per part, so "OpenSSL 3.0.19" does not match and importing
# it raises "Error detecting the version of libcrypto". The fix (upstream, unreleased) takes
# several digits per part. Rather than edit files in site-packages, this importer compiles the two
# modules that hold the pattern from their own source with the pattern replaced, for this process
# only. It refuses to run if the source no longer holds the old pattern (a fixed oscrypto).

_OSCRYPTO_OLD = r"'\\b(\\d\\.\\d\\.\\d[a-z]*)\\b'"
_OSCRYPTO_NEW = r"'\\b(\\d+\\.\\d+\\.\\d+[a-z]*)\\b'"
_OSCRYPTO_MODULES = frozenset(
    {"oscrypto._openssl._libcrypto_cffi", "oscrypto._openssl._libcrypto_ctypes"}
)


class _PatchedLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname: str) -> types.CodeType:
        # Always from source: the cached bytecode is of the unpatched file.
        source = self.get_data(self.path).decode("utf-8")
        if _OSCRYPTO_OLD not in source:
            raise ImportError(f"{self.path} no longer holds the version pattern the bench patches")
        return compile(source.replace(_OSCRYPTO_OLD, _OSCRYPTO_NEW), self.path, "exec")


class _OscryptoVersionFix(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _OSCRYPTO_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _PatchedLoader(fullname, spec.origin)
        return spec


def patch_oscrypto() -> None:
    if not any(isinstance(f, _OscryptoVersionFix) for f in sys.meta_path):
        sys.meta_path.insert(0, _OscryptoVersionFix())


# --- keys -----------------------------------------------------------------------------------------


def _self_signed(name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


# --- as4 ------------------------------------------------------------------------------------------

_PEPPOL_DOCUMENT = (
    "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice"
    "##urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0::2.1"
)
_PEPPOL_PROCESS = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"


def as4_cycle(payload: bytes) -> Cycle:
    as4 = importlib.import_module("as4")
    peppol = importlib.import_module("as4.peppol")
    key_a, cert_a = _self_signed("POP000001")
    key_b, cert_b = _self_signed("POP000002")
    sender = peppol.create_peppol_internal_party("POP000001", cert_a, as4.AS4LocalPrivateKey(key_a))
    receiver = peppol.create_peppol_internal_party(
        "POP000002", cert_b, as4.AS4LocalPrivateKey(key_b)
    )
    receiver_at_sender = peppol.create_peppol_external_party("POP000002", cert_b)
    # The receiver trusts exactly the sender's certificate (no Peppol PKI here).
    policy = as4.SecurityPolicy(signer_resolver=as4.pinned_certificates(cert_a))
    args = peppol.PeppolAS4MessageBuilderArgs(
        sender="9932:0000000001",
        recipient="9932:0000000002",
        document_type_identifier=peppol.BusdoxDocidQnsDocumentIdentifier.from_identifier_value(
            _PEPPOL_DOCUMENT
        ),
        document_identification_instance_identifier="bench",
        process_identifier=_PEPPOL_PROCESS,
        c1_country_id="AR",
    )

    def cycle() -> bytes:
        sending = peppol.PeppolSendingExchange(
            profile=peppol.PeppolAS4Profile, local_party=sender, remote_party=receiver_at_sender
        )
        headers, body = sending.build(payload, args)
        receiving = peppol.parse_peppol_message(headers, body, receiver, security_policy=policy)
        if not receiving.successful:
            raise AssertionError(f"as4 refused its own message: {receiving.message.parse_error}")
        received: bytes = next(iter(receiving.message.decrypted_data.values()))
        _, signal = receiving.build_signal()
        sending.receive_signal(signal)  # verifies the receipt's signature and references
        if not sending.successful:
            raise AssertionError(f"as4 receipt not accepted: {sending.state}")
        return received

    return cycle


# --- pyas2lib -------------------------------------------------------------------------------------


def _pem_pair(name: str) -> tuple[bytes, bytes]:
    """(private key + certificate, certificate), PEM, as pyas2lib loads them."""
    key, cert = _self_signed(name)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem + cert_pem, cert_pem


def pyas2lib_cycle(payload: bytes) -> Cycle:
    patch_oscrypto()
    as2 = importlib.import_module("pyas2lib.as2")
    pair_a, cert_a = _pem_pair("AR")
    pair_b, cert_b = _pem_pair("BR")
    org_a = as2.Organization(as2_name="AR", sign_key=pair_a, decrypt_key=pair_a, domain="ar.bench")
    org_b = as2.Organization(as2_name="BR", sign_key=pair_b, decrypt_key=pair_b, domain="br.bench")
    settings: dict[str, Any] = {"sign": True, "encrypt": True, "enc_alg": "aes_256_cbc"}
    b_at_a = as2.Partner(
        as2_name="BR",
        verify_cert=cert_b,
        encrypt_cert=cert_b,
        mdn_mode=as2.SYNCHRONOUS_MDN,
        mdn_digest_alg="sha256",
        **settings,
    )
    a_at_b = as2.Partner(as2_name="AR", verify_cert=cert_a, encrypt_cert=cert_a, **settings)

    def cycle() -> bytes:
        out = as2.Message(org_a, b_at_a)
        out.build(payload, content_type="application/xml")
        received_message = as2.Message()
        status, error, mdn = received_message.parse(
            out.headers_str + b"\r\n" + out.content,
            find_org_cb=lambda _name: org_b,
            find_partner_cb=lambda _name: a_at_b,
        )
        if status != "processed":
            raise AssertionError(f"pyas2lib refused its own message: {error}")
        mdn_status, detail = as2.Mdn().parse(
            mdn.headers_str + b"\r\n" + mdn.content, find_message_cb=lambda _mid, _to: out
        )
        if mdn_status != "processed":  # "processed/warning" is a MIC mismatch
            raise AssertionError(f"pyas2lib MDN not accepted: {mdn_status} {detail}")
        received: bytes = received_message.content
        return received

    return cycle


CONTENDERS: dict[str, Callable[[bytes], Cycle]] = {
    "as4": as4_cycle,
    "pyas2lib": pyas2lib_cycle,
}
