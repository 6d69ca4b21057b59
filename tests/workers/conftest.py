from concurrent.futures import ThreadPoolExecutor

import pytest


@pytest.fixture
def uploader():
    """The storage thread a worker's recordings share."""
    with ThreadPoolExecutor(1) as pool:
        yield pool
