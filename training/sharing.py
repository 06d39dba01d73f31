"""How a run shares the machine: CPU threads for the cores it may use.

The frameworks read them when they start; the CLI and `fit` call this before
anything computes, and it applies what the framework still allows.
"""

import contextlib
import os

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
