"""Run by test_keras_patches.py in a fresh process (KERAS_BACKEND set):

    python import_worker.py '["keras.src.losses.loss.scale_loss_for_distribution", ...]'

Imports keras, notes every function and class of every Keras module loaded
(methods included), then imports zoo, creates and calls a model and trains a
written-once step model for one batch. Prints JSON: the given paths that were
not among the functions noted, the functions and classes no longer the
objects they were, and the `training` modules that were loaded.
"""

import inspect
import json
import sys

import keras


def keras_functions():
    """`{dotted path: object}` for the functions and classes of every loaded
    Keras module, and the methods of the classes each defines."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name != "keras" and not name.startswith("keras."):
            continue
        for attr, value in list(vars(module).items()):
            if inspect.isfunction(value) or inspect.isclass(value):
                found[f"{name}.{attr}"] = value
            if inspect.isclass(value) and value.__module__ == name:
                for key, member in vars(value).items():
                    if inspect.isfunction(member):
                        found[f"{name}.{attr}.{key}"] = member
    return found


def use_zoo():
    import numpy as np

    import zoo

    mlp = zoo.create_model("mlp", input_shape=(4,), num_classes=2, hidden_units=(4,))
    mlp(np.zeros((2, 4), "float32"))
    vae = zoo.create_model("vae", input_shape=(4, 4, 1), latent_dim=2, hidden_units=4)
    vae.compile(optimizer=keras.optimizers.SGD(0.1))
    vae.train_on_batch(np.zeros((2, 4, 4, 1), "float32"))


if __name__ == "__main__":
    before = keras_functions()
    use_zoo()
    after = keras_functions()
    print(
        json.dumps(
            {
                "missing": [path for path in json.loads(sys.argv[1]) if path not in before],
                "changed": sorted(
                    path for path, value in before.items() if after[path] is not value
                ),
                "training": sorted(
                    name for name in sys.modules if name.split(".")[0] == "training"
                ),
            }
        )
    )
