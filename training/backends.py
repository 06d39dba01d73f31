"""Choosing the Keras backend, and starting its framework quietly. Keras reads
`KERAS_BACKEND` once, when it is first imported, so nothing here imports keras."""

import contextlib
import importlib.util
import json
import os
import sys
import tempfile

BACKENDS = ("tensorflow", "torch", "jax")
XLA_DETERMINISM = "--xla_gpu_deterministic_ops=true"
# XLA has no thread count: on CPU it computes on every available core, or on
# one for its Eigen operations with this.
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"
# What sets each framework's CPU threads when it starts: OpenMP's and MKL's
# (torch, oneDNN) and TensorFlow's intra- and inter-op pools.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
# `gpu_memory`'s values: take GPU memory as needed, or as the framework does.
GPU_MEMORY = ("grow", "all")
# Lines TensorFlow prints whenever it starts, before its own log level applies,
# which say nothing about the run.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)


def installed() -> list[str]:
    """Returns the backends whose framework can be imported here."""
    return [name for name in BACKENDS if importlib.util.find_spec(name) is not None]


def default() -> tuple[str, str]:
    """The backend to use where neither a flag nor `KERAS_BACKEND` names one,
    and why: Keras' configured backend (its `keras.json`) where it is
    installed, else the one installed backend, else the first installed of
    `BACKENDS`.

    Raises:
        ValueError: no backend is installed.
    """
    available = installed()
    configured, path = _configured()
    if configured in available:
        return configured, f"Keras' configured backend, in {path}"
    if not available:
        raise ValueError(
            f"Expected an installed backend, one of {', '.join(BACKENDS)}; install one with "
            "pip install 'keras-model-zoo[torch]' (or [tensorflow], [jax]). "
            "Received: none installed"
        )
    not_there = f"; {configured!r} in {path} is not installed" if configured else ""
    if len(available) == 1:
        return available[0], f"the only one installed{not_there}"
    return available[0], f"the first installed of {', '.join(available)}{not_there}"


def _configured() -> tuple[str | None, str]:
    """The backend Keras' `keras.json` names, and the file's path; where
    Keras looks: `$KERAS_HOME`, else `~/.keras`, else `/tmp/.keras`."""
    home = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    if "KERAS_HOME" not in os.environ and not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    path = os.path.join(home, "keras.json")
    try:
        with open(path) as f:
            backend = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None, path
    return (backend if isinstance(backend, str) else None), path


def select(name: str | None = None) -> str:
    """Makes `name` (or else `$KERAS_BACKEND`, or else `default()`) the
    backend Keras will use.

    Must run before keras is first imported; afterwards it only confirms that the
    active backend is the one asked for.

    Args:
        name: one of `BACKENDS`, or `None` for `$KERAS_BACKEND`, else the
            `default()`.

    Returns:
        The backend name.

    Raises:
        ValueError: for an unknown or uninstalled backend, or when keras is
            already running another one.
    """
    source = "backend" if name else "KERAS_BACKEND"
    name = name or os.environ.get("KERAS_BACKEND") or default()[0]
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
    return _kept({"tensorflow": {"TF_ENABLE_ONEDNN_OPTS": "1"}}.get(name, {}))


def _kept(wanted):
    """`wanted`, but the values already in the environment: the user's choice wins."""
    return {key: os.environ.get(key, value) for key, value in wanted.items()}


@contextlib.contextmanager
def quiet_startup():
    """Starts the framework of the enclosed first `import keras` without the
    lines TensorFlow prints whenever it starts (absl's, oneDNN's, its CPU
    features), and with TensorFlow's INFO log off (`TF_CPP_MIN_LOG_LEVEL=1`).

    Every other line the block writes to stderr is passed on, warnings and
    errors included. Where the user set `TF_CPP_MIN_LOG_LEVEL` (`0` shows
    everything), nothing is hidden.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        # TensorFlow writes from C++, to file descriptor 2 itself.
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _is_noise(line)))
            sys.stderr.flush()


def _is_noise(line):
    return any(noise in line for noise in STARTUP_NOISE)


def deterministic_environment() -> dict[str, str]:
    """The environment variables the frameworks read at start-up for
    deterministic GPU kernels; the CLI sets them before keras is imported."""
    return {
        # cuBLAS reuses workspaces nondeterministically unless given a fixed one.
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "TF_DETERMINISTIC_OPS": "1",
        "XLA_FLAGS": _xla_flags_with(XLA_DETERMINISM, unless=XLA_DETERMINISM),
    }


def _xla_flags_with(flag, *, unless):
    """`$XLA_FLAGS` with `flag` added, or as it is where it already holds
    `unless` (the flag, or the user's own value of it)."""
    xla_flags = os.environ.get("XLA_FLAGS", "")
    return xla_flags if unless in xla_flags else f"{xla_flags} {flag}".strip()


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity (as `taskset`,
    cpusets and job schedulers set it) where the system has one, else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def threads() -> tuple[int, str]:
    """How many CPU threads the frameworks compute with, and why:
    `$OMP_NUM_THREADS` where the user set it, else every available core.

    On a machine busy with other work fewer threads can be much faster, which
    is why the CLI says the count and how to change it.
    """
    cores = available_cores()
    asked = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if asked.isdigit() and int(asked) > 0:
        return int(asked), f"OMP_NUM_THREADS={asked}, of {cores} available cores"
    return cores, f"of {cores} available cores; set OMP_NUM_THREADS to change"


def thread_environment(count: int) -> dict[str, str]:
    """The environment variables that start every framework with `count` CPU
    threads (`THREAD_VARIABLES`, and for JAX `XLA_ONE_THREAD` when `count`
    is fewer than the available cores); values already set are kept.
    `tests/conftest.py` gives each test worker its share of the cores with it."""
    environment = _kept(dict.fromkeys(THREAD_VARIABLES, str(count)))
    if count < available_cores():
        environment["XLA_FLAGS"] = _xla_flags_with(
            XLA_ONE_THREAD, unless="xla_cpu_multi_thread_eigen"
        )
    return environment


def gpu_memory_environment(mode: str) -> dict[str, str]:
    """The environment variables that have TensorFlow and JAX take GPU memory
    as they need it (`mode="grow"`) instead of most of the card when they
    start, so that runs can share it; the CLI sets them before keras is
    imported. Values already set are kept; `"all"` sets none.

    TensorFlow grows with `TF_FORCE_GPU_ALLOW_GROWTH=true`; JAX otherwise
    preallocates 75% of the card. torch's caching allocator always grows.
    """
    if mode != "grow":
        return {}
    return _kept({"TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
