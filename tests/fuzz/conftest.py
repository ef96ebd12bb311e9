"""What the fuzzer's tests share: the shares and files an input runs on."""
import pytest

import smbfuzz_world


@pytest.fixture(scope="module")
def world():
    """The shares (files bounded as while fuzzing); the writable one is reset per input."""
    w = smbfuzz_world.World()
    with smbfuzz_world.bounded_files():
        yield w
    w.close()
