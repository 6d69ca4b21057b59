import pytest

from tests.helpers.api import NodeProcess, free_port, free_udp_range


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A real `recnode serve` process on loopback, shared by a module's tests (each uses its own room)."""
    base = tmp_path_factory.mktemp("node")
    process = NodeProcess(base / "data", free_port(), free_udp_range(), base / "node.log").start()
    yield process
    process.stop()
