"""One real network per test module: starting nodes costs ~0.3 s each, so modules share one.

Async tests of a module that uses ``net`` run in the module's event loop
(``pytestmark = pytest.mark.asyncio(loop_scope="module")``), the loop the nodes live in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.api.speckit import Api
from tests.netkit import Network, running_network


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Network]:
    """Argentina and Brazil, real nodes over real mutual TLS on 127.0.0.1."""
    async with running_network(tmp_path_factory.mktemp("net"), ("AR", "BR")) as network:
        yield network


@pytest.fixture(scope="module")
def ar(net: Network) -> Api:
    return Api(net["AR"])


@pytest.fixture(scope="module")
def br(net: Network) -> Api:
    return Api(net["BR"])
