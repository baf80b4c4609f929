"""``mla-node client``: a clerk's command line for requests with evidence files.

It talks to a node's clerk API like any program would (docs/api.md), with the token taken from
an environment variable (never a command-line argument, which other users can see in ``ps``).
Uploads and downloads stream from and to disk with a progress bar, so a file of any size costs
this process no more memory than one chunk.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import click

from mla_node.cli_common import DIR_OPTION, FILE_OPTION, read_file
from mla_node.errors import ClientError, DeliveryError
from mla_node.protocol import forms
from mla_node.protocol.attachments import sanitise_name

CHUNK = 1 << 20
TIMEOUT_S = 300.0


class Clerk:
    """One node's clerk API, one connection per call (simple; the files dwarf the handshakes)."""

    def __init__(self, url: str, token: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"--url must be http:// or https:// with a host, not {url!r}")
        self.parts = parts
        self.token = token

    @contextmanager
    def _request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Iterator[http.client.HTTPResponse]:
        https = self.parts.scheme == "https"
        cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
        conn = cls(self.parts.hostname or "", self.parts.port, timeout=TIMEOUT_S, blocksize=CHUNK)
        try:
            try:
                conn.request(
                    method,
                    self.parts.path.rstrip("/") + path,
                    body=body,
                    headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
                )
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise DeliveryError(f"{self.parts.netloc}: {type(exc).__name__}: {exc}") from exc
            if response.status >= 400:
                raise _problem(response)
            yield response
        finally:
            conn.close()

    def json(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        with self._request(method, path, body, headers) as response:
            return json.loads(response.read())

    def upload(self, path: Path) -> dict[str, Any]:
        size = path.stat().st_size
        name = urllib.parse.quote(path.name, safe="")
        with (
            path.open("rb") as f,
            click.progressbar(length=size, label=f"upload {path.name}") as bar,
        ):
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
                "X-File-Name": f"UTF-8''{name}",
            }
            with self._request("POST", "/api/v1/attachments", _Counting(f, bar), headers) as r:
                result: dict[str, Any] = json.loads(r.read())
                return result

    def download(self, message_id: str, n: int, target: Path, size: int, sha256: str) -> None:
        """Into a temporary file beside ``target``, checked, then renamed: a cut download never
        leaves a file that looks whole."""
        partial = target.with_name(target.name + ".part")
        digest, got = hashlib.sha256(), 0
        path = f"/api/v1/requests/{message_id}/attachments/{n}"
        with (
            self._request("GET", path) as response,
            partial.open("xb") as out,
            click.progressbar(length=size, label=f"download {target.name}") as bar,
        ):
            try:
                while piece := response.read(CHUNK):
                    out.write(piece)
                    digest.update(piece)
                    got += len(piece)
                    bar.update(len(piece))
            except (OSError, http.client.HTTPException) as exc:
                partial.unlink()
                raise DeliveryError(f"{target.name}: {type(exc).__name__}: {exc}") from exc
        if got != size or digest.hexdigest() != sha256:
            partial.unlink()
            raise ClientError(f"{target.name}: the file received is not the one the node lists")
        partial.rename(target)


class _Counting:
    """A file whose reads move the progress bar (http.client reads the body through it)."""

    def __init__(self, f: BinaryIO, bar: Any) -> None:
        self.f = f
        self.bar = bar

    def read(self, n: int = CHUNK) -> bytes:
        data = self.f.read(max(n, CHUNK))
        self.bar.update(len(data))
        return data


def _problem(response: http.client.HTTPResponse) -> ClientError:
    try:
        problem = json.loads(response.read(64 << 10))
        text = f"{problem.get('code')}: {problem.get('detail')}"
        fields = [e.get("field") for e in problem.get("errors", [])] or [problem.get("field")]
        text += "".join(f" [{f}]" for f in fields if f)
    except (ValueError, AttributeError):
        text = response.reason
    return ClientError(f"the node answered HTTP {response.status}: {text}")


def _clerk(url: str, token_env: str) -> Clerk:
    token = os.environ.get(token_env)
    if not token:
        raise ClientError(f"the environment variable {token_env} holds no token")
    return Clerk(url, token)


def _free_name(folder: Path, name: str) -> Path:
    """``name`` sanitised again here (whatever the node sent), never over an existing file."""
    safe = sanitise_name(name)
    stem, dot, ext = safe.rpartition(".")
    if not dot or not stem:
        stem, ext = safe, ""
    candidate, i = folder / safe, 1
    while candidate.exists() or candidate.with_name(candidate.name + ".part").exists():
        candidate = folder / (f"{stem} ({i}).{ext}" if ext else f"{stem} ({i})")
        i += 1
    return candidate


_URL = click.option(
    "--url", required=True, help="The node's clerk API, e.g. http://127.0.0.1:8080."
)
_TOKEN_ENV = click.option(
    "--token-env",
    required=True,
    metavar="VAR",
    help="Name of the environment variable holding a clerk token (mla-node token create).",
)


@click.group("client")
def client_group() -> None:
    """A clerk's requests with evidence files, from the command line."""


@client_group.command("submit")
@_URL
@_TOKEN_ENV
@click.option("--type", "form_type", required=True, type=click.Choice(sorted(forms.REQUEST_TYPES)))
@click.option("--to", "to", required=True, help="The requested state, e.g. BR.")
@click.option("--form", "form_path", required=True, type=FILE_OPTION, help="The form, JSON.")
@click.option(
    "--attach",
    "files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="An evidence file (repeat for more).",
)
def submit(
    url: str, token_env: str, form_type: str, to: str, form_path: Path, files: tuple[Path, ...]
) -> None:
    """Upload each --attach file, then submit the request naming them; print its id."""
    clerk = _clerk(url, token_env)
    try:
        form = json.loads(read_file(form_path))
    except ValueError as exc:
        raise ClientError(f"{form_path} is not JSON: {exc}") from exc
    ids = [clerk.upload(path)["id"] for path in files]
    created = clerk.json(
        "POST",
        "/api/v1/requests",
        {"type": form_type, "to": to, "form": form, "attachments": ids},
    )
    click.echo(created["id"])


@client_group.command("download")
@_URL
@_TOKEN_ENV
@click.option("--id", "message_id", required=True, help="The request's id.")
@click.option("--out", "folder", required=True, type=DIR_OPTION, help="Folder to write into.")
def download(url: str, token_env: str, message_id: str, folder: Path) -> None:
    """Download every evidence file of a request into --out, each checked against its SHA-256;
    print the paths written. Names are the node's display names, sanitised again; an existing
    file is never overwritten."""
    clerk = _clerk(url, token_env)
    view = clerk.json("GET", f"/api/v1/requests/{urllib.parse.quote(message_id, safe='')}")
    folder.mkdir(parents=True, exist_ok=True)
    for item in view.get("attachments", []):
        target = _free_name(folder, item["name"] or f"attachment-{item['n']}")
        clerk.download(message_id, item["n"], target, item["size"], item["sha256"])
        click.echo(str(target))
