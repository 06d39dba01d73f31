"""One function seeds everything."""

import keras


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and the backend, so a run repeats exactly on one backend.

    Args:
        seed: any non-negative int.
    """
    keras.utils.set_random_seed(seed)
