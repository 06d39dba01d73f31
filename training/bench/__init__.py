"""How fast the zoo trains and predicts against the same network written natively
in each backend's framework: `python -m training bench`.

The zoo side is `training.fit` as it runs by default (the data format,
compilation, callbacks and data feeding it chooses; `verbose=0`, as in any
scripted run) and `training.predict`'s path (`performance.predict`). The
native side is the same architecture (the same weight sizes, checked), batch
size, synthetic data, SGD and precision, written as that framework's users
write it:

- torch: an `nn.Module` and a plain loop, eager and under `torch.compile`;
- tensorflow: a `tf.Module`, `GradientTape` under `tf.function`, with XLA and
  without;
- jax: pure functions, a `jax.jit` step and a hand-written SGD update.

Modes: `train` and `predict` time epochs of `steps` batches; `predict_latency`
times single-sample calls (`batch_size` 1), as an application serving one
request at a time makes them. Precisions: `float32`, and `mixed_bfloat16`
(`training.fit(precision=...)`: float32 weights, bfloat16 compute), which the
native side matches with `torch.autocast`, and with weights and inputs cast
to bfloat16 in TensorFlow and JAX (batch normalisation in float32 on both
sides, as Keras computes it).

The fastest native variant is the one compared against. Each backend runs in a
process of its own (`training.bench.worker`); epochs of the two sides alternate,
so both see the same load; the first of each warms up and is not counted, and
a rate is the median over `repeats` epochs.

Nothing here imports keras: the backends are chosen per worker process.

>>> records = run(["simple_cnn"], ["torch"], steps=10, repeats=3)
>>> print(table(records))
"""

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from training import backends as backends_module

# Model -> `zoo.create_model` arguments besides the input shape and class count.
MODELS = {"mlp": {}, "simple_cnn": {}, "resnet18": {"stem": "small"}}
INPUT_SHAPE = (32, 32, 3)
# Steps per timed epoch: at least a second's work on a 2-core CPU, most of a
# minute for all of a model's epochs on one backend.
DEFAULT_STEPS = {"mlp": 100, "simple_cnn": 30, "resnet18": 2}
DEFAULT_BATCH_SIZE = 128
DEFAULT_REPEATS = 5
MODES = ("train", "predict", "predict_latency")
# Those with a native counterpart; mixed_float16 would need the native side to
# scale its losses as Keras does.
PRECISIONS = ("float32", "mixed_bfloat16")
# Single-sample calls per timed repeat of `predict_latency`: about a second's.
LATENCY_CALLS = {"mlp": 200, "simple_cnn": 100, "resnet18": 10}
# Every record holds these; `native_variant(s)` and `parameters` add detail.
FIELDS = (
    "model",
    "backend",
    "mode",
    "precision",
    "zoo_samples_per_s",
    "native_samples_per_s",
    "ratio",
    "gflops_per_s",
    "peak_gflops_per_s",
    # Seconds of the first, untimed epoch (or latency repeat): with tracing,
    # compiling and warming up, the one-off cost of each side.
    "zoo_first_s",
    "native_first_s",
)


@dataclasses.dataclass(frozen=True)
class NativeLoop:
    """How a native implementation (`_torch_native.Native`, ...) trains and
    predicts, besides its model and data.

    Args:
        batch_size: samples per step.
        learning_rate: SGD's learning rate.
        variant: one of the implementation's `VARIANTS`.
        seed: seeds the weights and the shuffling. Defaults to `0`.
        precision: from `PRECISIONS`. Defaults to `"float32"`.
    """

    batch_size: int
    learning_rate: float
    variant: str
    seed: int = 0
    precision: str = "float32"


def run(
    models=None,
    backends=None,
    *,
    modes=MODES,
    precisions=("float32",),
    batch_size=DEFAULT_BATCH_SIZE,
    steps=None,
    repeats=DEFAULT_REPEATS,
    log=sys.stderr,
) -> list[dict]:
    """Measures every model on every backend; returns one record per model,
    backend, precision and mode.

    Args:
        models: names from `MODELS`. Defaults to all of them.
        backends: Keras backends. Defaults to every installed one.
        modes: from `MODES`. Defaults to all of them.
        precisions: from `PRECISIONS`. Defaults to `("float32",)`.
        batch_size: samples per step, on both sides. Defaults to `128`.
        steps: steps per timed epoch. Defaults to `DEFAULT_STEPS` per model.
        repeats: timed epochs; the rate is their median. Defaults to `5`.
        log: where progress lines go. Defaults to `sys.stderr`.

    Raises:
        ValueError: for an unknown model, mode or precision, a backend not
            installed, or a non-positive `batch_size`, `steps` or `repeats`.
        RuntimeError: when a backend's worker fails.
    """
    models = list(models or MODELS)
    backends = list(backends or backends_module.installed())
    modes, precisions = list(modes), list(precisions)
    _check(models, backends, batch_size=batch_size, steps=steps, repeats=repeats)
    _check_choices(mode=(modes, MODES), precision=(precisions, PRECISIONS))
    config = {
        "models": {name: MODELS[name] for name in models},
        "modes": modes,
        "precisions": precisions,
        "latency_calls": {name: LATENCY_CALLS[name] for name in models},
        "input_shape": INPUT_SHAPE,
        "batch_size": batch_size,
        "steps": {name: steps or DEFAULT_STEPS[name] for name in models},
        "repeats": repeats,
    }
    records, peaks = [], [numpy_matmul_peak()]
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        config_path = os.path.join(tmp, "config.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        for backend in backends:
            # Others' load, before this worker adds its own.
            load = os.getloadavg()[0]
            result = _run_worker(backend, config_path, os.path.join(tmp, f"{backend}.json"), log)
            records += [{**record, "load_average": load} for record in result["records"]]
            peaks.append(result["matmul_gflops_per_s"])
    for record in records:
        record["peak_gflops_per_s"] = max(peaks)
        record["batch_size"] = batch_size
    return records


def _check(models, backends, **counts):
    unknown = [name for name in models if name not in MODELS]
    if unknown:
        raise ValueError(
            f"Expected models from {', '.join(MODELS)} (those with a native implementation). "
            f"Received: {', '.join(unknown)}"
        )
    installed = backends_module.installed()
    missing = [name for name in backends if name not in installed]
    if missing:
        raise ValueError(
            f"Expected installed backends ({', '.join(installed) or 'none'}). "
            f"Received: {', '.join(missing)}"
        )
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"Expected {name} to be a positive int. Received: {name}={value!r}")


def _check_choices(**choices):
    for name, (chosen, allowed) in choices.items():
        unknown = [value for value in chosen if value not in allowed]
        if unknown or not chosen:
            raise ValueError(
                f"Expected {name}s from {', '.join(allowed)}. "
                f"Received: {', '.join(unknown) or 'none'}"
            )


def worker_env(backend) -> dict:
    """The environment of a worker process: `backend` and this very copy of
    the `training` package, wherever the worker starts."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        **backends_module.startup_environment(backend),
        "KERAS_BACKEND": backend,
        "PYTHONPATH": path,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def _run_worker(backend, config_path, records_path, log):
    env = worker_env(backend)
    command = [sys.executable, "-m", "training.bench.worker", config_path, records_path]
    print(f"bench: measuring {backend}", file=log, flush=True)
    process = subprocess.run(command, env=env, capture_output=True, text=True)
    progress = [line for line in process.stderr.splitlines() if line.startswith("bench: ")]
    if progress:
        print("\n".join(progress), file=log, flush=True)
    if process.returncode != 0:
        tail = "\n".join(process.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"The {backend} benchmark failed (exit {process.returncode}):\n{tail}")
    with open(records_path) as f:
        return json.load(f)


def write_json(path, obj) -> None:
    """Writes `obj` as JSON to `path` atomically, without importing keras (as
    `training.outputs` does)."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def numpy_matmul_peak(size=2048, repeats=5) -> float:
    """The best float32 matmul rate NumPy reaches here, in GFLOP/s."""
    a = np.random.default_rng(0).uniform(size=(size, size)).astype("float32")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def table(records) -> str:
    """The records as a Markdown table, one row per model, backend, mode and
    precision. A `predict_latency` row gives milliseconds per call where the
    others give samples/s."""
    rows = [
        "| model | backend | mode | precision | zoo samples/s | native samples/s (variant) "
        "| ratio | zoo GFLOP/s (% of peak) | first epoch s, zoo / native |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        rate = _latency if r["mode"] == "predict_latency" else _rate
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}"
        gflops = (
            "–"
            if r["gflops_per_s"] is None
            else f"{r['gflops_per_s']:.1f} ({r['gflops_per_s'] / r['peak_gflops_per_s']:.0%})"
        )
        first = f"{r['zoo_first_s']:.2f} / " + (
            "–" if r["native_first_s"] is None else f"{r['native_first_s']:.2f}"
        )
        rows.append(
            f"| {r['model']} | {r['backend']} | {r['mode']} | {r['precision']} "
            f"| {rate(r['zoo_samples_per_s'])} "
            f"| {rate(r['native_samples_per_s'])} ({r['native_variant']}) | {ratio} | {gflops} "
            f"| {first} |"
        )
    return "\n".join(rows)


def _rate(samples_per_s):
    return "–" if samples_per_s is None else f"{samples_per_s:,.0f}"


def _latency(samples_per_s):
    return "–" if samples_per_s is None else f"{1000 / samples_per_s:.2f} ms"


def cpu_name() -> str:
    """The CPU's model name."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
