import importlib.util
import os

from training.backends import BACKENDS, startup_environment

# Before tiny imports keras and with it the backend: this process and the ones
# it starts run TensorFlow as `training` starts it.
os.environ.update(startup_environment("tensorflow"))

import pytest  # noqa: E402
from tiny import LARGE  # noqa: E402

MISSING = [name for name in BACKENDS if importlib.util.find_spec(name) is None]


def pytest_addoption(parser):
    parser.addoption(
        "--run-large", action="store_true", help=f"also test the large models: {', '.join(LARGE)}"
    )


def pytest_collection_modifyitems(config, items):
    # Cross-backend tests need every framework; per-backend sessions have one.
    missing = pytest.mark.skip(reason=f"needs every backend; missing {', '.join(MISSING)}")
    large = pytest.mark.skip(reason="a large model: run with --run-large")
    for item in items:
        if MISSING and "cross_backend" in item.keywords:
            item.add_marker(missing)
        params = getattr(item, "callspec", None)
        is_large = "large" in item.keywords or (params and params.params.get("name") in LARGE)
        if is_large and not config.getoption("--run-large"):
            item.add_marker(large)
