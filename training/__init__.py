"""Runs zoo models on TensorFlow, PyTorch or JAX: `training.fit(...)` and the
`python -m training` CLI on top of it.

Importing `training` does not import keras, so a backend can still be chosen
with `training.backends.select(name)` first; the names below load on first use.
With neither chosen nor `KERAS_BACKEND` set, that is `backends.default()`:
Keras' configured backend where it is installed, else an installed one.

>>> import training
>>> result = training.fit("simple_cnn", "digits", epochs=2)
>>> result.metrics["test_accuracy"]
"""

import importlib
import os
import sys

_EXPORTS = {
    "fit": "training.loop",
    "evaluate": "training.evaluation",
    "predict": "training.evaluation",
    "FitConfig": "training.config",
    "FitResult": "training.loop",
    "Dataset": "training.data",
    "load_dataset": "training.data",
    "seed_everything": "training.seeding",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    if "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
        # Keras would start the backend its keras.json names, TensorFlow by
        # default, even where only another one is installed.
        from training import backends

        backends.select()
    return getattr(importlib.import_module(_EXPORTS[name]), name)
