import pytest

from testkit.node import NodeProcess
from testkit.ports import free_port, free_udp_range
from tests.helpers.callback_receiver import CallbackReceiver

CALLBACK_SECRET = "e2e-callbacks-71aa"  # nodes that send callbacks get it as RECNODE_CALLBACK_SECRET


@pytest.fixture(scope="module")
def receiver():
    """A real HTTP receiver of callbacks signed with CALLBACK_SECRET."""
    server = CallbackReceiver(CALLBACK_SECRET)
    yield server
    server.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A real `recnode serve` process on loopback, shared by a module's tests (each uses its own room)."""
    base = tmp_path_factory.mktemp("node")
    process = NodeProcess(base / "data", free_port(), free_udp_range(), base / "node.log").start()
    yield process
    process.stop()
