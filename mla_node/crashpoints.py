"""Named places on the delivery path where a node can be made to die on purpose.

The chaos harness starts a node with ``MLA_CRASH_AT=<point>`` (die the first time the point is
reached) or ``MLA_CRASH_AT=<point>:<n>`` (die the n-th time) and checks that whatever the node
had acknowledged survives, and that nothing is lost or delivered twice after the restart. The
node dies with SIGKILL, as in a power cut or an OOM kill: no cleanup, no flush, no goodbye.

Without the variable a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "MLA_CRASH_AT"

POINTS = {
    "submit.after_commit": "the clerk's request is committed, the 201 not yet sent",
    "deliver.before_send": "an envelope was taken from the outbox, nothing sent yet",
    "deliver.before_record": "a verified receipt is in hand, not yet recorded",
    "deliver.after_record": "the receipt is recorded and the outbox row gone",
    "deliver.before_reschedule": "an attempt failed, its retry not yet scheduled",
    "inbound.before_commit": "an envelope is verified and decrypted, not yet stored",
    "inbound.after_commit": "the envelope is stored, the receipt not yet sent",
    "inbound.after_response": "the receipt was sent to the peer",
    "db.mid_batch": "in a group commit, after a job ran, before the COMMIT",
    "directory.before_accept": "a newer directory verified, not yet recorded as accepted",
}


def parse(spec: str) -> tuple[str, int] | None:
    """``point`` or ``point:n`` → (point, n); None for an empty spec; ValueError otherwise."""
    spec = spec.strip()
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r} (known: {', '.join(POINTS)})")
    if nth and (not nth.isdigit() or int(nth) < 1):
        raise ValueError(f"{spec!r}: the count after ':' must be a whole number from 1")
    return name, int(nth or "1")


def check_environment() -> None:
    """Called at start-up, so a typo in the variable fails loudly instead of never crashing."""
    parse(os.environ.get(ENV_VAR, ""))


try:
    _ARMED = parse(os.environ.get(ENV_VAR, ""))
except ValueError:
    _ARMED = None  # check_environment() reports it when the node starts
_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here if this is the armed point and it has been reached the armed number of times."""
    if _ARMED is None or _ARMED[0] != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
