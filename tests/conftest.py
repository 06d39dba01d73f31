import importlib.util

import pytest

from training.backends import BACKENDS

MISSING = [name for name in BACKENDS if importlib.util.find_spec(name) is None]


def pytest_collection_modifyitems(config, items):
    # Cross-backend tests need every framework; per-backend sessions have one.
    if not MISSING:
        return
    skip = pytest.mark.skip(reason=f"needs every backend; missing {', '.join(MISSING)}")
    for item in items:
        if "cross_backend" in item.keywords:
            item.add_marker(skip)
