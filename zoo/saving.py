"""Loading saved zoo models."""

import os

import keras

from zoo.errors import ZooError


def load_model(path) -> keras.Model:
    """Loads a `.keras` file saved from a zoo model, with safe mode on.

    Safe mode refuses archives that would run arbitrary code (such as `Lambda`
    layers holding bytecode). Importing `zoo` registers every zoo layer, so no
    `custom_objects` are needed.

    Args:
        path: path to a `.keras` file.

    Example:

    >>> model = zoo.load_model("runs/digits/model.keras")
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ZooError(f"Expected a path to a .keras file. Received: path={path!r}")
    if not os.path.isfile(path):
        raise ZooError(f"No model file at {path!r}: expected an existing .keras file")
    return keras.saving.load_model(path, safe_mode=True)
