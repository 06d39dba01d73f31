"""Choosing the Keras backend. Keras reads `KERAS_BACKEND` once, when it is first
imported, so nothing here imports keras."""

import importlib.util
import os
import sys

BACKENDS = ("tensorflow", "torch", "jax")
XLA_DETERMINISM = "--xla_gpu_deterministic_ops=true"


def installed() -> list[str]:
    """Returns the backends whose framework can be imported here."""
    return [name for name in BACKENDS if importlib.util.find_spec(name) is not None]


def select(name: str | None = None) -> str:
    """Makes `name` (or else `$KERAS_BACKEND`) the backend Keras will use.

    Must run before keras is first imported; afterwards it only confirms that the
    active backend is the one asked for.

    Args:
        name: one of `BACKENDS`, or `None` for `$KERAS_BACKEND`, defaulting to
            Keras' own default, `"tensorflow"`.

    Returns:
        The backend name.

    Raises:
        ValueError: for an unknown or uninstalled backend, or when keras is
            already running another one.
    """
    source = "backend" if name else "KERAS_BACKEND"
    name = name or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if name not in BACKENDS:
        raise ValueError(
            f"Expected a backend from {', '.join(BACKENDS)}. Received: {source}={name!r}"
        )
    if importlib.util.find_spec(name) is None:
        raise ValueError(
            f"Backend {name!r} is not installed (installed: "
            f"{', '.join(installed()) or 'none'}); install it with "
            f"pip install 'keras-model-zoo[{name}]'"
        )
    if "keras" in sys.modules:
        active = sys.modules["keras"].backend.backend()
        if active != name:
            raise ValueError(
                f"Keras is already running on {active!r}; the backend is fixed at "
                f"the first keras import. Received: {source}={name!r}"
            )
    os.environ.update(startup_environment(name))
    os.environ["KERAS_BACKEND"] = name
    return name


def startup_environment(name: str) -> dict[str, str]:
    """The environment variables backend `name`'s framework must see when it
    starts for every zoo model to run; values already set are kept.

    TensorFlow's CPU convolutions take channels_first images only through
    oneDNN, which TensorFlow turns on by itself only on CPUs with AVX-512.
    """
    wanted = {"tensorflow": {"TF_ENABLE_ONEDNN_OPTS": "1"}}.get(name, {})
    return {key: os.environ.get(key, value) for key, value in wanted.items()}


def deterministic_environment() -> dict[str, str]:
    """The environment variables the frameworks read at start-up for
    deterministic GPU kernels; the CLI sets them before keras is imported."""
    xla_flags = os.environ.get("XLA_FLAGS", "")
    return {
        # cuBLAS reuses workspaces nondeterministically unless given a fixed one.
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "TF_DETERMINISTIC_OPS": "1",
        "XLA_FLAGS": xla_flags
        if XLA_DETERMINISM in xla_flags
        else f"{xla_flags} {XLA_DETERMINISM}".strip(),
    }
