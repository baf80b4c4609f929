"""Fixtures for every test."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

from mla_node import logs


@pytest.fixture(scope="session", autouse=True)
def _unfreeze_garbage_collection() -> Iterator[None]:
    yield
    gc.unfreeze()  # what the modules froze is collectable again, by pytest's last collection


def _collect_garbage() -> None:
    """A collection, so that an object leaked since the last one, such as a transport never
    closed, warns now (``ResourceWarning``, an error here) and fails the test or module that
    leaked it, not some later, unrelated test that happened to trigger a collection.

    What survives is then frozen (``gc.freeze``): the next collection looks only at what was made
    since, so collecting this often costs no measurable time (a full collection each time would
    cost ~12 s over the suite)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="module", autouse=True)
def _collect_garbage_after_module(_unfreeze_garbage_collection: None) -> Iterator[None]:
    """After the module's own fixtures, its event loop included, have been torn down."""
    yield
    _collect_garbage()


@pytest.fixture(autouse=True)
def _collect_garbage_after_test(_collect_garbage_after_module: None) -> Iterator[None]:
    yield
    _collect_garbage()


@pytest.fixture
def request_id_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """``caplog`` at INFO, each record carrying its request id (``record.request_id``) as
    ``logs.configure`` gives every handler."""
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(logs.RequestIdFilter())
    return caplog
