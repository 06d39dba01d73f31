"""One function seeds everything; another asks each backend for deterministic
kernels. Backend-specific flags live here."""

import os

import keras

from training.backends import XLA_DETERMINISM, deterministic_environment
from zoo import ZooError


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and the backend, so a run repeats exactly on one backend.

    Args:
        seed: any non-negative int.
    """
    keras.utils.set_random_seed(seed)


def make_deterministic() -> None:
    """Makes the active backend pick deterministic kernels on GPU.

    TensorFlow: op determinism. PyTorch: deterministic algorithms (an op with
    none raises), cuDNN without autotuning, and a fixed cuBLAS workspace. JAX:
    XLA's deterministic GPU ops, which XLA reads when JAX starts its backend,
    so this must run before the first JAX computation (the CLI's
    `--deterministic` does). On CPU, runs already repeat exactly.

    Raises:
        ZooError: JAX has already started without the flag.
    """
    xla_had_flag = XLA_DETERMINISM in os.environ.get("XLA_FLAGS", "")
    os.environ.update(deterministic_environment())
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif backend == "jax":
        from jax._src import xla_bridge  # no public check of whether XLA started

        if xla_bridge.backends_are_initialized() and not xla_had_flag:
            raise ZooError(
                "Expected deterministic mode before JAX's first computation; set "
                f"XLA_FLAGS={XLA_DETERMINISM} or use the CLI's --deterministic. "
                "Received: a JAX backend already running"
            )
