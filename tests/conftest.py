import importlib.util
import os

from training.backends import (
    BACKENDS,
    _xla_flags_with,
    available_cores,
    startup_environment,
    thread_environment,
)

# Before tiny imports keras and with it the backend: this process and the ones
# it starts run TensorFlow as `training` starts it.
os.environ.update(startup_environment("tensorflow"))

# XLA compiles with LLVM at -O1 instead of -O3, in this process and the ones it
# starts: compiling was 570 of the JAX session's 1000 CPU seconds (430 on a warm
# compilation cache), and -O1 compiles in about 40% less time (25 initialiser
# shapes: 8.6 -> 5.1 s) for a little more run time. The programs, and what the
# tests assert of them, are the same; runs outside the tests keep XLA's -O3.
os.environ["XLA_FLAGS"] = _xla_flags_with(
    "--xla_backend_optimization_level=1", unless="xla_backend_optimization_level"
)


def _share_the_cores():
    """Under pytest-xdist, gives each worker's frameworks (and the processes
    its tests start) an equal share of the cores, as `training` gives a run
    the threads a user asks for, so that workers do not oversubscribe them.
    Set before any framework starts; values already set are kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers == 1:
        return
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.update(thread_environment(max(1, available_cores() // workers)))


_share_the_cores()

import pytest  # noqa: E402
from tiny import LARGE  # noqa: E402

MISSING = [name for name in BACKENDS if importlib.util.find_spec(name) is None]


def pytest_addoption(parser):
    parser.addoption(
        "--run-large", action="store_true", help=f"also test the large models: {', '.join(LARGE)}"
    )


def pytest_configure(config):
    # JAX compiles every new model's steps; the same program (the same model
    # and shapes, in another test or a test's subprocess) is read back from a
    # cache in the pytest cache dir instead of compiled again.
    if getattr(config, "cache", None) is not None:
        os.environ.setdefault(
            "JAX_COMPILATION_CACHE_DIR", str(config.cache.mkdir("jax-compilation"))
        )
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


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
