import os

import keras
import pytest


@pytest.mark.skipif(
    not os.environ.get("ZOO_EXPECT_GPU"), reason="runs in the test-<backend>-gpu sessions"
)
def test_the_backend_sees_the_gpu():
    devices = keras.distribution.list_devices()
    assert any(device.lower().startswith(("gpu", "cuda")) for device in devices), devices
