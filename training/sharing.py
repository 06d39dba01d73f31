"""How a run shares the machine: CPU threads for the cores it may use, and
GPU memory taken as it is needed rather than most of the card at once.

The frameworks read both when they start. The CLI sets the environment
(`training.backends.gpu_memory_environment`) before keras is imported; `fit`
calls these as it starts, which apply what the framework still allows.
"""

import contextlib
import os
import warnings

import keras

from training import backends


def set_threads() -> str:
    """Gives the active backend's framework at most `backends.threads()` CPU
    threads, where the user has not chosen its own; quietly.

    torch's intra- and inter-op threads are lowered to the count (inter-op
    only before its first parallel work), TensorFlow's pools are set to it
    before TensorFlow starts, and JAX reads `XLA_FLAGS` when its backend
    starts. The environment gets `backends.thread_environment`'s variables,
    for the processes this one starts too. Set before anything computes, as
    `fit` and the CLI do, every framework gets the count.

    Returns:
        What was chosen, as the CLI says it: `"threads: 2 (of 2 available
        cores; set OMP_NUM_THREADS to change)"`.
    """
    count, why = backends.threads()
    os.environ.update(backends.thread_environment(count))
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.get_num_threads() > count:
            torch.set_num_threads(count)
        if torch.get_num_interop_threads() > count:
            with contextlib.suppress(RuntimeError):  # fixed at its first parallel work
                torch.set_num_interop_threads(count)
    elif backend == "tensorflow":
        import tensorflow as tf

        pools = tf.config.threading
        for pool, variable in (
            ("intra_op", "TF_NUM_INTRAOP_THREADS"),
            ("inter_op", "TF_NUM_INTEROP_THREADS"),
        ):
            value = os.environ[variable]
            # 0 is TensorFlow's default; another count is the user's.
            if getattr(pools, f"get_{pool}_parallelism_threads")() == 0 and value.isdigit():
                with contextlib.suppress(RuntimeError):  # started: it read the variable
                    getattr(pools, f"set_{pool}_parallelism_threads")(int(value))
    return f"threads: {count} ({why})"


def share_gpu_memory(mode: str) -> None:
    """With `mode="grow"`, has the active backend take GPU memory as it needs
    it, so that two runs or two backends can share a card: TensorFlow's
    memory growth on every GPU, and JAX without preallocating 75% of it.
    torch's caching allocator takes memory as tensors need it either way
    (and keeps it for reuse), so `"all"` reserves nothing up front on torch;
    on TensorFlow and JAX it leaves their own default.

    Where the framework has already started on a GPU without being asked to
    grow, it keeps the memory it took, and a warning says so.

    Args:
        mode: `"grow"` or `"all"`.
    """
    wanted = backends.gpu_memory_environment(mode)
    asked_before = {name for name in wanted if name in os.environ}
    os.environ.update(wanted)
    backend = keras.backend.backend()
    if not wanted or backend == "torch":
        return
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # its GPUs are initialised
            if "TF_FORCE_GPU_ALLOW_GROWTH" not in asked_before:
                _kept_all("TensorFlow", "TF_FORCE_GPU_ALLOW_GROWTH=true")
    elif backend == "jax":
        import jax
        from jax._src import xla_bridge  # no public check of whether XLA started

        if (
            xla_bridge.backends_are_initialized()
            and "XLA_PYTHON_CLIENT_PREALLOCATE" not in asked_before
            and jax.default_backend() == "gpu"
        ):
            _kept_all("JAX", "XLA_PYTHON_CLIENT_PREALLOCATE=false")


def _kept_all(framework, variable):
    warnings.warn(
        f"gpu_memory='grow': {framework} had already started on the GPU and keeps the "
        f"memory it took; set {variable} before it starts (the CLI does) to share the card",
        stacklevel=4,
    )
