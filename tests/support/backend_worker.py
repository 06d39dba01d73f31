"""Run by test_cross_backend.py in a subprocess per backend (KERAS_BACKEND set).

python backend_worker.py save DIR   # saves every model, an input and its predictions
python backend_worker.py load DIR   # loads what every backend saved; prints JSON
"""

import json
import pathlib
import sys

import keras
import numpy as np
from harness import sample_batch
from tiny import TINY_KWARGS

import zoo


def save(root):
    folder = root / keras.backend.backend()
    folder.mkdir(parents=True)
    keras.utils.set_random_seed(0)
    for name, kwargs in TINY_KWARGS.items():
        model = zoo.create_model(name, **kwargs)
        x, _ = sample_batch(model, zoo.model_task(name))
        model.save(folder / f"{name}.keras")
        np.savez(folder / f"{name}.npz", x=x, predictions=model.predict(x, verbose=0))


def load(root):
    """Returns {saved_on: {model: max abs difference of the predictions}}."""
    report = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        report[folder.name] = {}
        for name in TINY_KWARGS:
            model = zoo.load_model(folder / f"{name}.keras")
            saved = np.load(folder / f"{name}.npz")
            predictions = model.predict(saved["x"], verbose=0)
            report[folder.name][name] = float(np.abs(predictions - saved["predictions"]).max())
    return report


if __name__ == "__main__":
    command, root = sys.argv[1], pathlib.Path(sys.argv[2])
    if command == "save":
        save(root)
    else:
        print(json.dumps({"loaded_on": keras.backend.backend(), "report": load(root)}))
