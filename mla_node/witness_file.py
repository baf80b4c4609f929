"""Reading a split-view evidence file for ``mla-node audit verify-split-view`` (docs/audit.md).

The check itself is pure (``protocol.witness.verify_split_view``); this reads the file and words
the result for a person.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mla_node.errors import ClientError
from mla_node.protocol.checkpoint import Checkpoint
from mla_node.protocol.directory import Directory
from mla_node.protocol.witness import MAX_SPLIT_VIEW_FILE, SplitReason, SplitView, verify_split_view


def check_split_view_file(path: Path, directory: Directory) -> SplitView:
    """Verify the split-view evidence file at ``path`` against ``directory`` (already verified
    against the trust root).

    Returns the split view it proves. Raises ClientError when the file cannot be read or is not
    an ``mla-node-split-view/1`` file; CheckpointInvalid when a checkpoint in it does not verify;
    LogProofInvalid when it does not show a split view (same head twice, a proof that holds, or
    no proof between heads of two sizes). Each names why.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SPLIT_VIEW_FILE + 1)
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from exc
    return verify_split_view(data, directory)


def summary_lines(view: SplitView) -> list[str]:
    """What the command prints on success: who, the two heads, and what they prove."""
    if view.reason is SplitReason.SAME_SIZE:
        meaning = "one node signed two different logs of the same size (irrefutable)"
    else:
        meaning = (
            "the proof offered does not show the smaller head a prefix of the larger; "
            f"{view.node} can only answer this with a valid consistency proof between them"
        )
    return [
        f"Split view verified: {view.node} signed two histories of its evidence log.",
        f"  {'node':<12}{view.node}",
        f"  {'reason':<12}{view.reason.value}",
        f"  {'head 1':<12}{_head(view.first)}",
        f"  {'head 2':<12}{_head(view.second)}",
        f"  {'detail':<12}{view.detail}",
        f"  {'meaning':<12}{meaning}",
    ]


def _head(c: Checkpoint) -> str:
    at = dt.datetime.fromtimestamp(c.at / 1000, dt.UTC).isoformat(timespec="seconds")
    return f"size {c.size}, root {c.root.hex()[:16]}…, signed {at} with key {c.kid}"
