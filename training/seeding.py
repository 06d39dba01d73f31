"""One function seeds everything; another asks each backend for deterministic
kernels. Backend-specific flags live here."""

import base64
import os
import sys

import keras
import numpy as np

from training.backends import XLA_DETERMINISM, deterministic_environment
from zoo import ZooError


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and the backend, so a run repeats exactly on one backend.

    Args:
        seed: any non-negative int.
    """
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)  # also seeds tf.data's shuffles
        return
    # Keras' set_random_seed imports TensorFlow where it is installed, to seed
    # tf.data: seconds of start-up and its log lines in a torch or JAX process
    # that has no tf.data pipeline. It is told TensorFlow is not there.
    from keras.src.utils import module_utils, rng_utils

    lazy = getattr(rng_utils, "tf", None)
    if not isinstance(lazy, module_utils.LazyModule):  # not the Keras this was written for
        keras.utils.set_random_seed(seed)
        return
    rng_utils.tf = _NOT_INSTALLED
    try:
        keras.utils.set_random_seed(seed)
    finally:
        rng_utils.tf = lazy


class _NotInstalled:
    available = False


_NOT_INSTALLED = _NotInstalled()


def global_rng_state() -> list[str] | None:
    """The backend's global random state, where layers draw from it.

    On torch, a `Dropout` without a seed draws from torch's global generator
    rather than from its seed generator's state, so resuming a run exactly
    needs that state too. The other backends draw only from seed generators.
    """
    if keras.backend.backend() != "torch":
        return None
    import torch

    states = [torch.get_rng_state()]
    if torch.cuda.is_available():
        states += torch.cuda.get_rng_state_all()
    return [base64.b64encode(state.numpy().tobytes()).decode() for state in states]


def set_global_rng_state(states: list[str] | None) -> None:
    """Restores what `global_rng_state` returned."""
    if not states:
        return
    import torch

    cpu, *cuda = (
        torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy()) for s in states
    )
    torch.set_rng_state(cpu)
    if cuda:
        torch.cuda.set_rng_state_all(list(cuda))


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
