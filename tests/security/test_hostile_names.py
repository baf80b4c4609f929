"""Hostile attachment names (issue 5 item 4): 200+ of them through the clerk API of a real node.

Path traversal, absolute paths, NUL and other controls, Windows separators and device names,
right-to-left overrides, over-long names, empty and dots-only names, percent-encoding tricks.
What must hold: no file is written outside the node's store, every stored file is named by a
digest the node computed, every display name is sanitised, and the download's
Content-Disposition is a safe header naming exactly the sanitised name.
"""

from __future__ import annotations

import io
import unicodedata
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mla_node.protocol import forms
from mla_node.protocol.attachments import (
    MAX_NAME_BYTES,
    content_disposition,
    decode_name_header,
    sanitise_name,
)
from tests.netkit import RunningNode, running_network, wait_for

BASES = [
    "../../../../etc/passwd",
    "..\\..\\..\\Windows\\System32\\drivers\\etc\\hosts",
    "/etc/shadow",
    "/",
    "C:\\boot.ini",
    "\\\\server\\share\\evil.exe",
    "file:///etc/passwd",
    "..",
    ".",
    "...",
    "",
    " ",
    ". .",
    ".bashrc",
    "~/.ssh/authorized_keys",
    "a/../../b",
    "CON",
    "con.txt",
    "NUL",
    "nul.tar.gz",
    "PRN",
    "AUX.pdf",
    "COM1",
    "com9.doc",
    "LPT1",
    "lpt3.txt",
    "COM¹",
    "CONIN$",
    "CONOUT$.log",
    "invoice\u202efdp.exe",  # right-to-left override: shows as "invoiceexe.pdf"
    "\u2066photo\u2069.jpg.exe",
    "report\u200b.pdf",  # zero-width space
    "\ufeffbom.txt",
    "a\x00b.pdf",
    "evil\x00.pdf.exe",
    "line\r\nContent-Type: text/html",
    "tab\there",
    "bell\x07",
    "esc\x1b[31mred",
    "del\x7f",
    "c1\x85next",
    "x" * 300,
    "y" * 10_000 + ".pdf",
    "é" * 300 + ".docx",
    "名前" * 200 + ".txt",
    "😀" * 100,
    "name.",
    "name ",
    " name",
    "name...",
    "a:b",
    "stream.txt:hidden:$DATA",
    'quote"inside',
    "star*and?q",
    "pipe|gt>lt<",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f",
    "..%2f..%2f",
    "%c0%ae%c0%ae/",  # overlong UTF-8 dots
    "%ff%fe",
    "%00",
    "%0d%0aSet-Cookie: x=1",
    "normal name.pdf",
    "Extrato bancário 2025.pdf",
    "Ｃ：＼ｆｕｌｌｗｉｄｔｈ",
    "a\u0301\u0301\u0301combining",
    "\ud800lone surrogate",
]
PREFIXES = ["", "../", "..\\", "/tmp/", "./"]


def hostile_names() -> list[str]:
    names = list(BASES)
    for prefix in PREFIXES[1:]:
        names += [prefix + b for b in BASES[:40]]
    return names


def on_the_wire(name: str) -> str:
    """Every name percent-encoded (raw controls cannot go in a header), half of them as RFC 8187
    ext-values; surrogates as the bytes a non-UTF-8 client would send."""
    raw = name.encode("utf-8", "surrogatepass")
    quoted = urllib.parse.quote_from_bytes(raw, safe="")
    return ("UTF-8''" + quoted) if len(name) % 2 else quoted


def assert_safe(name: str) -> None:
    assert name and len(name.encode()) <= MAX_NAME_BYTES
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name), repr(name)
    assert not set(name) & set('/\\:*?"<>|'), repr(name)
    assert name == name.strip(" .") and name not in (".", "..")
    stem = name.split(".")[0].upper()
    assert stem not in {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}, name
    assert not (stem[:3] in ("COM", "LPT") and len(stem) == 4), name


def assert_safe_disposition(header: str, name: str) -> None:
    assert "\r" not in header and "\n" not in header and "\x00" not in header
    assert header.isascii()
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert "/" not in fallback and "\\" not in fallback
    encoded = header.split("filename*=UTF-8''", 1)[1]
    assert urllib.parse.unquote(encoded, errors="strict") == name


def tree(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@given(st.text(max_size=400))
def test_sanitising_is_safe_and_idempotent(raw: str) -> None:
    name = sanitise_name(raw)
    assert_safe(name)
    assert sanitise_name(name) == name
    assert_safe_disposition(content_disposition(name), name)


@pytest.mark.parametrize("name", hostile_names()[:80])
def test_each_name_decodes_to_a_safe_display_name(name: str) -> None:
    shown = decode_name_header(on_the_wire(name))
    assert_safe(shown)
    assert_safe_disposition(content_disposition(shown), shown)


async def test_hostile_names_through_the_api_write_nothing_outside_the_store(
    tmp_path: Path,
) -> None:
    names = hostile_names()
    assert len(names) >= 200
    async with running_network(tmp_path / "net", ("AR", "BR")) as net:
        ar: RunningNode = net["AR"]
        store = ar.runtime.ctx.blobs.root
        before = tree(tmp_path)
        ids, shown, contents = [], [], []
        for i, name in enumerate(names):
            async with ar.http.post(
                ar.runtime.clerk_url + "/api/v1/attachments",
                data=io.BytesIO(f"file {i}".encode()),
                headers=ar.headers(
                    **{"Content-Type": "application/octet-stream", "X-File-Name": on_the_wire(name)}
                ),
            ) as resp:
                if len(on_the_wire(name)) > 8190:
                    # Over aiohttp's header line limit: its HTTP layer refuses it, unread.
                    assert resp.status == 400
                    continue
                body = await resp.json()
                assert resp.status == 201, (name, body)
            assert body["name"] == decode_name_header(on_the_wire(name))
            assert_safe(body["name"])
            ids.append(body["id"])
            shown.append(body["name"])
            contents.append(f"file {i}".encode())
        # Two raw (not percent-encoded) headers too: aiohttp refuses to send CR, LF or NUL.
        for raw in ("../../etc/passwd", "C:\\Windows\\win.ini"):
            status, body = await ar.call(
                "POST", "/api/v1/attachments", headers={"X-File-Name": raw}
            )
            assert status == 201 and "/" not in body["name"] and "\\" not in body["name"]

        # Written: only files named by a digest in the store (and the database's own files).
        new = tree(tmp_path) - before
        for path in new - {store, store / "tmp"}:
            assert path.is_relative_to(store), path
            assert path.parent == store and len(path.name) == 64, path
            assert int(path.name, 16) >= 0
        assert list((store / "tmp").iterdir()) == []

        # Downloaded with a safe Content-Disposition naming exactly the sanitised name: the
        # files go with requests (100 at most each) to BR, and come back out of AR's own store.
        for start in range(0, len(ids), 100):
            status, created = await ar.call(
                "POST",
                "/api/v1/requests",
                json={
                    "type": "mla_request",
                    "to": "BR",
                    "form": forms.example("mla_request"),
                    "attachments": ids[start : start + 100],
                },
            )
            assert status == 201, created
            message_id = created["id"]

            async def delivered(message_id: str = message_id) -> bool:
                _, view = await ar.call("GET", f"/api/v1/requests/{message_id}", role="auditor")
                return bool(view["status"] == "delivered")

            await wait_for(delivered)
            br = net["BR"]
            for n, name in enumerate(shown[start : start + 100]):
                async with br.http.get(
                    f"{br.runtime.clerk_url}/api/v1/requests/{message_id}/attachments/{n}",
                    headers=br.headers(),
                ) as resp:
                    assert resp.status == 200
                    assert await resp.read() == contents[start + n]
                    assert_safe_disposition(resp.headers["Content-Disposition"], name)
        # The receiving node, too, wrote nothing but digests into its store.
        br_store = net["BR"].runtime.ctx.blobs.root
        for path in tree(tmp_path) - before:
            assert path.is_relative_to(store) or path.is_relative_to(br_store), path
            assert len(path.name) == 64 or path.name in ("blobs", "partial", "AR", "tmp"), path
