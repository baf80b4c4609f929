"""The nodes of a local network as background processes: start, wait until ready, stop.

Each node runs as ``python -m mla_node run --config ... --ready-file ...`` in its own session (so a
Ctrl-C in the terminal that started it does not reach it), with its output appended to its
``node.log``. ``network.json`` (see :mod:`mla_node.localnet`) records every pid, so any later
command can stop or restart a node; every command that rewrites it holds the folder's lock.

A pid in the manifest is trusted only if that process still runs *this node's* command line (read
from ``/proc`` where there is one), so a pid reused by another program is never signalled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import mla_node
from mla_node.errors import ConfigError
from mla_node.localnet import (
    Manifest,
    NodeRecord,
    init_network,
    manifest_lock,
    read_manifest,
    write_manifest,
)

__all__ = [
    "DEFAULT_STATES",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "Stopped",
    "is_running",
    "log_tail",
    "network_down",
    "network_up",
    "start_node",
    "stop_node",
]

DEFAULT_STATES = ("AR", "BR", "US")
START_TIMEOUT_S = 60.0
# A node stopping on SIGTERM gives deliveries delivery.shutdown_grace_s (10 s by default), then
# its HTTP servers up to 2 s each: wait for that before SIGKILL.
STOP_TIMEOUT_S = 15.0
_KILL_WAIT_S = 5.0
_POLL_S = 0.05
_TAIL_LINES = 25
_PROC = Path("/proc")
_START_MARK = "--- mla-node: starting"

Processes = dict[str, "subprocess.Popen[bytes]"]

# Every node process this program started, by pid: kept so that they are reaped when they exit
# (no zombies after a SIGKILL) and so that a long-running caller such as the chaos harness does
# not drop a Popen while its process still runs.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Stopped:
    state: str
    pid: int | None
    how: str  # "stopped" (SIGTERM), "killed" (SIGKILL) or "not running"


# --- one process ---------------------------------------------------------------------------------


def is_running(node: NodeRecord) -> bool:
    """Whether the node's recorded pid is alive, not a zombie, and running this node's config."""
    pid = node.pid
    if pid is None:
        return False
    child = _children.get(pid)
    if child is not None and child.poll() is not None:  # our own child exited: reap it
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: the pid was reused
    if not _PROC.is_dir():
        return True  # no /proc on this system (macOS): trust kill(0)
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        cmdline = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False  # it exited meanwhile
    # A zombie (exited, not yet reaped by a parent that is gone) no longer serves anything.
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    return os.fsencode(str(node.config)) in cmdline


def node_command(node: NodeRecord, log_level: str = "info") -> list[str]:
    return [
        sys.executable, "-m", "mla_node", "run",
        "--config", str(node.config),
        "--ready-file", str(node.ready_file),
        "--log-level", log_level,
    ]  # fmt: skip


def _spawn(
    node: NodeRecord, log_level: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    node.ready_file.unlink(missing_ok=True)
    env = {**os.environ, **(extra_env or {})}
    # Run from a source checkout (not installed), the child must import this very mla_node too.
    root = Path(mla_node.__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    # 0600: a node's log names peers, message ids and errors, for its operator only.
    fd = os.open(node.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "ab") as log:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        log.write(f"{_START_MARK} {node.state} at {stamp} ---\n".encode())
        log.flush()
        proc = subprocess.Popen(
            node_command(node, log_level),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=node.folder,
            env=env,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc


def _ready(node: NodeRecord) -> bool:
    """The node wrote its ready file and its clerk API answers ``GET /readyz`` with 200."""
    try:
        clerk_url = json.loads(node.ready_file.read_bytes())["clerk_url"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    url = urlsplit(clerk_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=2.0)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def log_tail(path: Path, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` of the node's log, from its latest start only."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    latest = text.splitlines()
    starts = [i for i, line in enumerate(latest) if line.startswith(_START_MARK)]
    if starts:
        latest = latest[starts[-1] :]
    return "\n".join(latest[-lines:])


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def _wait_ready(manifest: Manifest, keys: list[str], procs: Processes, timeout: float) -> None:
    """Wait until every process of ``keys`` (see ``Manifest.processes``) is ready."""
    processes = manifest.processes()
    pending = list(keys)
    deadline = time.monotonic() + timeout
    while pending:
        for state in list(pending):
            node = processes[state]
            proc = procs.get(state)
            exited = proc.poll() is not None if proc is not None else not is_running(node)
            if exited:
                code = f" with code {proc.returncode}" if proc is not None else ""
                raise ConfigError(
                    f"node {state} exited{code} before it was ready; the end of {node.log}:\n"
                    + log_tail(node.log),
                    field=state,
                )
            if _ready(node):
                pending.remove(state)
        if pending and time.monotonic() >= deadline:
            tails = "\n".join(
                f"--- {processes[s].log}:\n{log_tail(processes[s].log)}" for s in pending
            )
            raise ConfigError(
                f"{', '.join(pending)} not ready after {timeout:g} s (ready file and GET /readyz "
                f"200 expected)\n{tails}",
                field=pending[0],
            )
        if pending:
            time.sleep(_POLL_S * 2)


def _stop(
    node: NodeRecord,
    *,
    kill: bool,
    timeout: float,
    proc: subprocess.Popen[bytes] | None,
    signalled: bool = False,
) -> Stopped:
    """Signal the node (unless ``signalled`` already) and wait until it is gone."""
    if proc is not None and proc.pid != node.pid:
        proc = None  # a process since replaced by a restart: the manifest's pid is the node
    proc = proc or (_children.get(node.pid) if node.pid is not None else None)

    def gone() -> bool:
        if proc is not None:
            if proc.poll() is None:
                return False
            _children.pop(proc.pid, None)  # reaped by poll()
            return True
        return not is_running(node)

    if node.pid is None or (not signalled and gone()):
        return Stopped(node.state, node.pid, "not running")
    how = "killed" if kill else "stopped"
    if not signalled:
        _signal(node.pid, signal.SIGKILL if kill else signal.SIGTERM)
    if not _wait(gone, _KILL_WAIT_S if kill else timeout):
        how = "killed"
        _signal(node.pid, signal.SIGKILL)
        if not _wait(gone, _KILL_WAIT_S):
            raise ConfigError(f"node {node.state} (pid {node.pid}) survived SIGKILL", field="pid")
    node.ready_file.unlink(missing_ok=True)
    return Stopped(node.state, node.pid, how)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# --- commands on a network folder ----------------------------------------------------------------


def network_up(
    folder: Path,
    states: list[str] | None,
    *,
    timeout: float = START_TIMEOUT_S,
    log_level: str = "info",
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    workers: int = 1,
    database_server: str | None = None,
) -> tuple[Manifest, Processes]:
    """Create the network if ``folder`` holds none, start every node that is not running, and
    wait until all are ready. Returns the manifest and the processes started now.

    An existing network restarts with its own keys, databases, ports and tokens. If a node fails,
    the nodes started by this call are stopped again and a ConfigError with the end of its log is
    raised: what stops a node from starting is its files, ports or environment.
    """
    folder = folder.resolve()
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        if manifest is None:
            manifest = init_network(
                folder,
                list(states or DEFAULT_STATES),
                now=now(),
                workers=workers,
                database_server=database_server,
            )
        elif states is not None and sorted(states) != sorted(manifest.nodes):
            raise ConfigError(
                f"{folder} holds a network of {', '.join(manifest.nodes)}, not of "
                f"{', '.join(states)}; leave out --states or choose another folder",
                field="states",
            )
        procs: Processes = {}
        try:
            for key, node in manifest.processes().items():
                if not is_running(node):
                    procs[key] = _spawn(node, log_level)
                    manifest = manifest.with_pid(key, procs[key].pid)
            # At once, so `network down` finds them even if this command is interrupted.
            write_manifest(manifest)
            _wait_ready(manifest, list(manifest.processes()), procs, timeout)
        except BaseException:
            processes = manifest.processes()
            for key, proc in procs.items():
                _stop(processes[key], kill=False, timeout=STOP_TIMEOUT_S, proc=proc)
                manifest = manifest.with_pid(key, None)
            write_manifest(manifest)
            raise
    return manifest, procs


def network_down(
    folder: Path, *, timeout: float = STOP_TIMEOUT_S, procs: Processes | None = None
) -> list[Stopped]:
    """SIGTERM every node, wait up to ``timeout`` for all of them together, then SIGKILL the rest.

    ``procs`` are the processes this very program started, to reap them.
    """
    folder = folder.resolve()
    procs = procs or {}
    with manifest_lock(folder):
        manifest = _require_manifest(folder)
        processes = manifest.processes()
        running = {k: n for k, n in processes.items() if _alive(n, procs.get(k))}
        for node in running.values():
            assert node.pid is not None
            _signal(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        results = []
        for key, node in processes.items():
            if key not in running:
                results.append(Stopped(node.state, node.pid, "not running"))
                continue
            remaining = max(0.0, deadline - time.monotonic())
            results.append(
                _stop(node, kill=False, timeout=remaining, proc=procs.get(key), signalled=True)
            )
        for key in processes:
            manifest = manifest.with_pid(key, None)
        write_manifest(manifest)
    return results


def _alive(node: NodeRecord, proc: subprocess.Popen[bytes] | None) -> bool:
    # ``proc`` only speaks for the process it started: a node restarted since (by another
    # command) has another pid in the manifest, which must still be stopped.
    if proc is not None and proc.pid == node.pid:
        return proc.poll() is None
    return is_running(node)


def start_node(
    folder: Path,
    state: str,
    *,
    timeout: float = START_TIMEOUT_S,
    log_level: str = "info",
    extra_env: dict[str, str] | None = None,
) -> tuple[NodeRecord, bool]:
    """Start one stopped node of the network and wait until it is ready.

    Returns its record and whether it was started now (False: it was already running).
    ``extra_env`` is for the chaos harness (``MLA_CRASH_AT``).
    """
    folder = folder.resolve()
    with manifest_lock(folder):
        manifest = _require_manifest(folder)
        manifest.node(state)  # a ConfigError naming the states there are
        stopped = {k: n for k, n in manifest.processes([state]).items() if not is_running(n)}
        if not stopped:
            return manifest.nodes[state], False
        procs: Processes = {}
        try:
            for key, node in stopped.items():
                procs[key] = _spawn(node, log_level, extra_env)
                manifest = manifest.with_pid(key, procs[key].pid)
            write_manifest(manifest)
            _wait_ready(manifest, list(procs), procs, timeout)
        except BaseException:
            for key, proc in procs.items():
                _stop(stopped[key], kill=False, timeout=STOP_TIMEOUT_S, proc=proc)
                manifest = manifest.with_pid(key, None)
            write_manifest(manifest)
            raise
    return manifest.nodes[state], True


def stop_node(
    folder: Path, state: str, *, kill: bool = False, timeout: float = STOP_TIMEOUT_S
) -> Stopped:
    """Stop one node: SIGKILL with ``kill``, else SIGTERM and wait (SIGKILL after ``timeout``)."""
    folder = folder.resolve()
    with manifest_lock(folder):
        manifest = _require_manifest(folder)
        manifest.node(state)  # a ConfigError naming the states there are
        results = []
        for key, node in manifest.processes([state]).items():
            results.append(_stop(node, kill=kill, timeout=timeout, proc=None))
            manifest = manifest.with_pid(key, None)
        write_manifest(manifest)
    return results[0]


def _require_manifest(folder: Path) -> Manifest:
    manifest = read_manifest(folder)
    if manifest is None:
        raise ConfigError(
            f"{folder} holds no network ({folder / 'network.json'} is missing); "
            "create one with `mla-node network up`",
            field=str(folder),
        )
    return manifest
