import pytest_asyncio

from tests.engine.control_plane import start_twins


@pytest_asyncio.fixture
async def twins(tmp_path):
    """A node on in-memory twins (tests.engine.control_plane), stopped afterwards."""
    twins = await start_twins(tmp_path / "data")
    yield twins
    await twins.node.stop(deadline_s=2)
