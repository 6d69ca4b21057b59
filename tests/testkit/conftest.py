import pytest

from testkit.media import TestMedia, make_test_media


@pytest.fixture(scope="module")
def media() -> TestMedia:
    return make_test_media()
