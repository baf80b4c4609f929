"""Fixtures for every test."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _unfreeze_garbage_collection() -> Iterator[None]:
    yield
    gc.unfreeze()  # what the modules froze is collectable again, by pytest's last collection


@pytest.fixture(scope="module", autouse=True)
def _collect_garbage_after_module(_unfreeze_garbage_collection: None) -> Iterator[None]:
    """A collection after each module (after its module-scoped event loop has closed), so that
    an object it leaked, such as a transport never closed, warns (``ResourceWarning``, an error
    here) at the teardown of the module's last test, not in some later, unrelated test.

    What survives is then frozen (``gc.freeze``): the next collection looks only at what the
    next module made, so this costs ~0.3 s over the whole suite instead of ~12 s."""
    yield
    gc.collect()
    gc.freeze()
