"""A node's config file as people read it: every setting with its description, and the table of
settings for ``config/README.md``.

``mla-node node init`` and ``mla-node network up`` write :func:`commented_config`; the examples in
``config/`` are the same text for AR, BR and US (``scripts/write_config_examples.py`` regenerates
them and the README table, and ``tests/test_config_docs.py`` fails when they drift). The
descriptions come from :mod:`mla_node.config`, the single source of truth.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mla_node.config import NodeConfig, parse_config

__all__ = [
    "EXAMPLE_STATES",
    "SECTION_HELP",
    "commented_config",
    "default_value",
    "example_config",
    "example_endpoint",
    "example_path",
    "node_init_config",
    "node_init_title",
    "readme_with_table",
    "settings_table",
    "toml_value",
]

SECTION_HELP = {
    "node": "Who this node is.",
    "clerk_api": "The local HTTP API for clerks, approvers, auditors and admins (bearer tokens). "
    "Keep it on a local or internal address: it is plain HTTP.",
    "peer": "The mutual-TLS endpoint other states' nodes deliver to. The URL peers use is the "
    "endpoint in the signed directory; this is only where the node listens.",
    "keys": "Trust material. Relative paths are resolved against this file's folder.",
    "delivery": "Sending to peers and accepting from them.",
    "audit": "The transparency log of evidence records: signed checkpoints for auditors.",
}

_WIDTH = 98
_PREAMBLE = (
    "Every setting is listed with its description; a setting left out takes its default. The "
    "table of all settings is in config/README.md. A wrong key or value stops the node at "
    "start-up with the dotted name of the setting at fault (e.g. delivery.max_backoff_s)."
)


def toml_value(value: object) -> str:
    """A TOML literal for a setting's value. Strings use JSON escapes, which TOML shares."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def default_value(section: str, key: str) -> Any:
    """The default of ``section.key``, or ``PydanticUndefined`` when the setting is required."""
    return _section_model(section).model_fields[key].default


def _section_model(section: str) -> type[BaseModel]:
    model = NodeConfig.model_fields[section].annotation
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model


def _comment(text: str, indent: str = "") -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(indent) + 2 + len(line) + 1 + len(word) > _WIDTH:
            lines.append(f"{indent}# {line}")
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(f"{indent}# {line}")
    return lines


def commented_config(config: NodeConfig, *, title: str) -> str:
    """TOML text for ``config`` with every setting, its description and its default."""
    out = [
        *_comment(title),
        "#",
        *_comment(_PREAMBLE),
        "",
    ]
    for section_name, section in config:
        if not isinstance(section, BaseModel):
            continue
        out.extend(_comment(SECTION_HELP.get(section_name, "")))
        out.append(f"[{section_name}]")
        fields = type(section).model_fields
        for key, value in section:
            field = fields[key]
            note = ""
            if field.default is PydanticUndefined:
                note = " Required."
            elif field.default != value:
                note = f" Default: {toml_value(field.default)}."
            out.extend(_comment((field.description or "") + note))
            out.append(f"{key} = {toml_value(value)}")
        out.append("")
    return "\n".join(out)


def settings_table() -> str:
    """The Markdown table of every setting: name, default, description."""
    rows = ["| Setting | Default | Description |", "| --- | --- | --- |"]
    for section_name in NodeConfig.model_fields:
        if NodeConfig.model_fields[section_name].exclude:
            continue
        for key, field in _section_model(section_name).model_fields.items():
            default = (
                "*required*"
                if field.default is PydanticUndefined
                else f"`{toml_value(field.default)}`"
            )
            description = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{section_name}.{key}` | {default} | {description} |")
    return "\n".join(rows) + "\n"


def node_init_config(
    state: str,
    authority_name: str,
    endpoint: str,
    *,
    clerk_port: int = 8080,
    peer_port: int | None = None,
    base_dir: Path = Path("."),
) -> NodeConfig:
    """The config ``mla-node node init`` writes for a node reachable at ``endpoint``.

    The peer endpoint listens on every address unless the endpoint is a loopback one, and on
    ``peer_port`` if given, else on the endpoint's explicit port, else on 8443 (the endpoint's 443
    then being forwarded by a firewall or proxy). The clerk API stays on 127.0.0.1: it is plain
    HTTP with bearer tokens.
    """
    url = urlsplit(endpoint)
    host = (url.hostname or "").strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    # parse_config: a bad value is a ConfigError naming the setting, as for a config file.
    return parse_config(
        {
            "node": {"state": state, "authority_name": authority_name},
            "clerk_api": {"port": clerk_port},
            "peer": {
                "host": "127.0.0.1" if loopback else "0.0.0.0",  # noqa: S104 - public endpoint
                "port": peer_port if peer_port is not None else (url.port or 8443),
            },
        },
        base_dir,
    )


def node_init_title(state: str) -> str:
    return f"mla-node configuration of {state}'s node (written by mla-node node init)"


# --- the examples in config/ ---------------------------------------------------------------------

EXAMPLE_STATES = ("AR", "BR", "US")
README_START = "<!-- settings table: generated by scripts/write_config_examples.py -->"
README_END = "<!-- end of settings table -->"


def example_endpoint(state: str) -> str:
    return f"https://mla-node.{state.lower()}.example:8443"


def example_path(folder: Path, state: str) -> Path:
    return folder / f"{state}.example.toml"


def example_config(state: str, authority_name: str) -> str:
    """What ``mla-node node init --state STATE --endpoint <example_endpoint(STATE)>`` writes."""
    config = node_init_config(state, authority_name, example_endpoint(state))
    return commented_config(config, title=node_init_title(state))


def readme_with_table(readme: str) -> str:
    """``readme`` with the text between the two markers replaced by :func:`settings_table`."""
    head, start, rest = readme.partition(README_START)
    _, end, tail = rest.partition(README_END)
    if not start or not end:
        raise ValueError(f"the README lacks the markers {README_START!r} and {README_END!r}")
    return f"{head}{README_START}\n{settings_table()}{README_END}{tail}"
