"""`--backend auto`: the fastest installed backend for a model, measured once
per machine.

A short calibration trains the model with `training.fit` for a few steps on
each installed backend, each in a process of its own (a process holds one
Keras backend), and keeps the fastest. The choice is cached in
`$XDG_CACHE_HOME/keras-model-zoo/backend-auto.json` (`~/.cache/...` without
it), keyed by the model, its arguments, the data, the batch size, the installed
framework versions and the machine's CPU and GPUs; a key seen before is
answered from the cache without measuring.

Nothing here imports keras, so the choice can be made before it is imported:

>>> from training import autobackend, backends
>>> backends.select(autobackend.choose("simple_cnn", "digits", batch_size=32).backend)
"""

import dataclasses
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from training import backends
from training.bench import cpu_name, worker_env, write_json

CACHE_FILE = os.path.join("keras-model-zoo", "backend-auto.json")
CALIBRATION_STEPS = 10
_DISTRIBUTIONS = {"tensorflow": "tensorflow-cpu", "torch": "torch", "jax": "jaxlib"}


@dataclasses.dataclass(frozen=True)
class Choice:
    """The backend `choose` picked, and why."""

    backend: str
    reason: str


def cache_path() -> str:
    """Where choices are cached: under `$XDG_CACHE_HOME`, else `~/.cache`."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, CACHE_FILE)


def choose(model, dataset="digits", *, batch_size=32, model_kwargs=None) -> Choice:
    """Picks the installed backend that trains `model` fastest on `dataset`.

    Args:
        model: a zoo model name.
        dataset: a data set name, or an `(x, y)` pair of arrays.
            Defaults to `"digits"`.
        batch_size: samples per step. Defaults to `32`.
        model_kwargs: extra `zoo.create_model` arguments. Defaults to `{}`.

    Returns:
        A `Choice`. With one backend installed it is that one, unmeasured.

    Raises:
        ValueError: when no backend is installed, or none could train the
            model.
    """
    installed = backends.installed()
    if not installed:
        raise ValueError(
            f"Expected an installed backend, one of {', '.join(backends.BACKENDS)}. "
            "Received: none installed"
        )
    if len(installed) == 1:
        return Choice(installed[0], "the only installed backend")
    model_kwargs = dict(model_kwargs or {})
    key = cache_key(model, dataset, batch_size, model_kwargs, installed)
    path = cache_path()
    cache = _read_cache(path)
    if cache.get(key, {}).get("backend") in installed:
        return Choice(cache[key]["backend"], f"measured before; cached in {path}")
    rates = calibrate(model, dataset, batch_size=batch_size, model_kwargs=model_kwargs)
    measured = {name: rate for name, rate in rates.items() if rate is not None}
    if not measured:
        raise ValueError(
            f"Expected a backend that trains {model!r}. Received: every installed one failed"
        )
    best = max(measured, key=measured.get)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Re-read: another process may have cached a choice meanwhile.
    write_json(path, {**_read_cache(path), key: {"backend": best, "samples_per_s": rates}})
    summary = ", ".join(f"{name} {rate:.0f}" for name, rate in measured.items())
    return Choice(best, f"calibrated, samples/s: {summary}")


def cache_key(model, dataset, batch_size, model_kwargs, installed) -> str:
    """What decides the fastest backend, as one string."""
    if isinstance(dataset, str):
        data = dataset
    else:
        x = np.asarray(dataset[0])
        data = {"input_shape": list(x.shape[1:]), "dtype": str(x.dtype)}
    key = {
        "model": model,
        "model_kwargs": model_kwargs,
        "data": data,
        "batch_size": batch_size,
        "versions": {name: _version(name) for name in ("keras", *installed)},
        "cpu": f"{cpu_name()} x{os.cpu_count()}",
        "gpus": _gpus(),
    }
    return json.dumps(key, sort_keys=True, default=str)


def calibrate(model, dataset, *, batch_size, model_kwargs, steps=None) -> dict:
    """Training samples/s of `model` on each installed backend (`None` where
    it failed), from `steps` steps after one warm-up epoch."""
    rates = {}
    with tempfile.TemporaryDirectory(prefix="zoo-auto-") as tmp:
        config = {
            "model": model,
            "model_kwargs": model_kwargs,
            "batch_size": batch_size,
            "steps": steps or CALIBRATION_STEPS,
            "dataset": dataset if isinstance(dataset, str) else None,
        }
        if config["dataset"] is None:
            config["arrays"] = os.path.join(tmp, "data.npz")
            np.savez(config["arrays"], x=dataset[0], y=dataset[1])
        config_path = os.path.join(tmp, "config.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        for name in backends.installed():
            result_path = os.path.join(tmp, f"{name}.json")
            process = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "training.bench.worker",
                    "calibrate",
                    config_path,
                    result_path,
                ],
                env=worker_env(name),
                capture_output=True,
                text=True,
            )
            if process.returncode != 0:
                reason = (process.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"auto: {name} could not train {model!r}: {reason}", file=sys.stderr)
                rates[name] = None
                continue
            with open(result_path) as f:
                rates[name] = json.load(f)["samples_per_s"]
    return rates


def _read_cache(path) -> dict:
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):  # none yet, or unreadable: measure again
        return {}
    return cache if isinstance(cache, dict) else {}


def _version(name):
    for distribution in (_DISTRIBUTIONS.get(name, name), name):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _gpus():
    if not shutil.which("nvidia-smi"):
        return []
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip().splitlines() if result.returncode == 0 else []
