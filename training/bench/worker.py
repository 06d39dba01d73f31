"""Measures one backend, the one `KERAS_BACKEND` names; `training.bench` and
`training.autobackend` run it in a process of its own, as a process can hold
only one Keras backend.

    python -m training.bench.worker CONFIG.json RECORDS.json        # the benchmark
    python -m training.bench.worker calibrate CONFIG.json RATE.json  # for --backend auto

The zoo side is `training.fit` itself, timed per epoch by a callback, and
`training.predict`'s path; the native loop runs one epoch after each zoo epoch,
so both see the same load on a shared machine. The first epoch of each
compiles and is not counted; its seconds are reported as the one-off cost.
"""

import dataclasses
import importlib
import json
import statistics
import sys
import time

import keras
import numpy as np

import training
from training import performance
from training.bench import NativeLoop
from training.data import Dataset, from_arrays
from training.outputs import write_json
from zoo.flops import count_flops

# Keras backend -> the file holding its native implementations.
NATIVE = {"torch": "torch", "tensorflow": "tf", "jax": "jax"}
LEARNING_RATE = 0.01
NUM_CLASSES = 10


class EpochTimer(keras.callbacks.Callback):
    """Records the seconds each epoch spends training (validation excluded),
    and calls `after_epoch()` once each epoch is over."""

    def __init__(self, after_epoch=None, on_model=None):
        super().__init__()
        self.seconds = []
        self._after_epoch = after_epoch
        self._on_model = on_model
        self._start = None

    def on_train_begin(self, logs=None):
        if self._on_model:
            self._on_model(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        if self._start is not None:  # validation starts: the epoch's training is done
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        if self._start is not None:
            self._stop()
        if self._after_epoch:
            self._after_epoch()

    def _stop(self):
        # Reading a weight waits for the last step, where dispatch is asynchronous.
        keras.ops.convert_to_numpy(self.model.trainable_weights[0])
        self.seconds.append(time.perf_counter() - self._start)
        self._start = None


def synthetic_data(input_shape, samples, seed=0):
    """Uniform images `(samples, *input_shape)` (channels last) and labels."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (samples, *input_shape)).astype("float32")
    return x, rng.integers(0, NUM_CLASSES, samples).astype("int32")


def in_image_format(x):
    """Channels-last images in `keras.config.image_data_format()`."""
    if x.ndim == 4 and keras.config.image_data_format() == "channels_first":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def in_image_format_shape(shape):
    if len(shape) == 3 and keras.config.image_data_format() == "channels_first":
        return (shape[2], shape[0], shape[1])
    return tuple(shape)


def measure_fit(
    model,
    x,
    y,
    *,
    batch_size,
    epochs,
    model_kwargs,
    precision="float32",
    after_epoch=None,
    on_model=None,
):
    """Trains with `training.fit` and returns `(model, seconds per epoch)`.

    `x` holds whole batches only, so every step has the same shape; one batch
    each is held out for validation and test, as `fit` requires.
    """
    x, x_val = in_image_format(x), in_image_format(x[:batch_size])
    data = Dataset("bench", x, y, x_val, y[:batch_size], x_val, y[:batch_size], NUM_CLASSES)
    timer = EpochTimer(after_epoch, on_model)
    result = training.fit(
        model,
        data,
        keras_callbacks=[timer],
        epochs=epochs,
        batch_size=batch_size,
        optimizer="sgd",
        learning_rate=LEARNING_RATE,
        model_kwargs=model_kwargs,
        precision=precision,
        verbose=0,
    )
    return result.model, timer.seconds


def matmul_peak(size=2048, repeats=5):
    """The best float32 matmul rate of this backend, in GFLOP/s."""
    a = keras.random.uniform((size, size), seed=0)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, a)[0, 0])
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


class _Paired:
    """Runs each native variant once per call, timing it; a variant that
    fails (say `torch.compile` without a compiler) is dropped with a note."""

    def __init__(self, natives, method, *args):
        self.natives, self.method, self.args = natives, method, args
        self.seconds = {variant: [] for variant in natives}
        self.errors = {}

    def __call__(self):
        for variant, native in list(self.natives.items()):
            start = time.perf_counter()
            try:
                getattr(native, self.method)(*self.args)
            except Exception as exc:  # a variant that cannot run here is reported
                self.errors[variant] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                del self.natives[variant]
                continue
            self.seconds[variant].append(time.perf_counter() - start)


def check_same_weights(zoo_model, natives, model):
    def sizes(weights):
        return sorted(int(np.prod(w.shape)) for w in weights)

    zoo_sizes = (sizes(zoo_model.trainable_weights), sizes(zoo_model.non_trainable_weights))
    for variant, native in natives.items():
        if native.weight_sizes() != zoo_sizes:
            raise RuntimeError(
                f"The native {model} ({variant}) has weights of other sizes than the zoo's: "
                f"{native.weight_sizes()} vs {zoo_sizes}"
            )


def measure_model(
    model,
    model_kwargs,
    *,
    input_shape,
    batch_size,
    steps,
    repeats,
    modes=("train", "predict"),
    precision="float32",
    latency_calls=10,
    seed=0,
):
    """One record per mode in `modes` for one model on this backend."""
    backend = keras.backend.backend()
    native_module = importlib.import_module(f"training.bench._{NATIVE[backend]}_native")
    x, y = synthetic_data(input_shape, steps * batch_size, seed)
    native_kwargs = {"input_shape": tuple(input_shape), "num_classes": NUM_CLASSES, **model_kwargs}
    natives = {
        variant: native_module.Native(
            model,
            native_kwargs,
            x,
            y,
            NativeLoop(batch_size, LEARNING_RATE, variant, seed, precision),
        )
        for variant in native_module.VARIANTS
    }
    samples = steps * batch_size
    records = []

    # Without timing training, one untimed epoch builds the model as `fit` does.
    train = _Paired(natives, "train_epoch")
    net, seconds = measure_fit(
        model,
        x,
        y,
        batch_size=batch_size,
        epochs=1 + repeats if "train" in modes else 1,
        model_kwargs=model_kwargs,
        precision=precision,
        after_epoch=train if "train" in modes else None,
        on_model=lambda net: check_same_weights(net, natives, model),
    )
    if "train" in modes:
        records.append(_record(model, backend, "train", samples, seconds, train))

    x_zoo = in_image_format(x)
    if "predict" in modes:
        predict = _Paired(dict(train.natives), "predict_epoch")
        zoo_seconds = _alternate(
            lambda: performance.predict(net, x_zoo, batch_size=batch_size), predict, repeats
        )
        records.append(_record(model, backend, "predict", samples, zoo_seconds, predict))
    if "predict_latency" in modes:
        calls = min(latency_calls, len(x))

        def zoo_calls():
            for i in range(calls):
                performance.predict(net, x_zoo[i : i + 1], batch_size=1)

        latency = _Paired(dict(train.natives), "predict_calls", calls)
        zoo_seconds = _alternate(zoo_calls, latency, repeats)
        records.append(_record(model, backend, "predict_latency", calls, zoo_seconds, latency))

    flops = count_flops(net)
    for record in records:
        per_sample = flops * (3 if record["mode"] == "train" else 1) if flops else None
        record["gflops_per_s"] = per_sample and per_sample * record["zoo_samples_per_s"] / 1e9
        record["parameters"] = int(sum(np.prod(w.shape) for w in net.trainable_weights))
        record["precision"] = precision
    return records


def _alternate(zoo, paired, repeats):
    """Runs `zoo()` and then the native variants, `1 + repeats` times; returns
    the seconds of each `zoo()`."""
    seconds = []
    for _ in range(1 + repeats):
        start = time.perf_counter()
        zoo()
        seconds.append(time.perf_counter() - start)
        paired()
    return seconds


def _record(model, backend, mode, samples, zoo_seconds, paired):
    """A record from the timed epochs (the first of each side left out)."""
    zoo_rate = samples / statistics.median(zoo_seconds[1:])
    native_rates = {
        variant: None if variant in paired.errors else samples / statistics.median(seconds[1:])
        for variant, seconds in paired.seconds.items()
    }
    available = {v: rate for v, rate in native_rates.items() if rate is not None}
    best = max(available, key=available.get) if available else None
    native_rate = available.get(best)
    return {
        "model": model,
        "backend": backend,
        "mode": mode,
        "zoo_samples_per_s": zoo_rate,
        "native_samples_per_s": native_rate,
        "ratio": zoo_rate / native_rate if native_rate else None,
        "native_variant": best,
        "native_variants": native_rates,
        "native_errors": paired.errors,
        "zoo_first_s": zoo_seconds[0],
        "native_first_s": paired.seconds[best][0] if best else None,
        "image_data_format": keras.config.image_data_format(),
    }


def calibrate(config) -> float:
    """Training samples/s of `training.fit` on the configured model and data,
    over a few steps after a warm-up epoch."""
    if config["dataset"] is None:
        with np.load(config["arrays"], allow_pickle=False) as f:
            data = from_arrays(f["x"], f["y"])
    else:
        data = training.load_dataset(config["dataset"])
    batch_size = config["batch_size"]
    steps = max(1, min(config["steps"], len(data.x_train) // batch_size))
    # Whole batches, and validation and test a batch each: only training is timed.
    n = steps * batch_size
    subset = dataclasses.replace(
        data,
        x_train=data.x_train[:n],
        y_train=data.y_train[:n],
        x_val=data.x_val[:batch_size],
        y_val=data.y_val[:batch_size],
        x_test=data.x_test[:batch_size],
        y_test=data.y_test[:batch_size],
    )
    timer = EpochTimer()
    training.fit(
        config["model"],
        subset,
        keras_callbacks=[timer],
        epochs=3,
        batch_size=batch_size,
        model_kwargs=config["model_kwargs"],
        verbose=0,
    )
    return n / statistics.median(timer.seconds[1:])


def main(argv):
    if argv[0] == "calibrate":
        _, config_path, result_path = argv
        with open(config_path) as f:
            write_json(result_path, {"samples_per_s": calibrate(json.load(f))})
        return 0
    config_path, records_path = argv
    with open(config_path) as f:
        config = json.load(f)
    records = []
    for precision in config["precisions"]:
        for model, model_kwargs in config["models"].items():
            measured = measure_model(
                model,
                model_kwargs,
                input_shape=config["input_shape"],
                batch_size=config["batch_size"],
                steps=config["steps"][model],
                repeats=config["repeats"],
                modes=config["modes"],
                precision=precision,
                latency_calls=config["latency_calls"][model],
            )
            for record in measured:
                print(
                    f"bench: {keras.backend.backend()} {model} {precision} {record['mode']}: "
                    f"zoo {record['zoo_samples_per_s']:.0f}/s, "
                    f"native {record['native_samples_per_s']:.0f}/s "
                    f"({record['native_variant']})",
                    file=sys.stderr,
                    flush=True,
                )
            records += measured
    write_json(records_path, {"records": records, "matmul_gflops_per_s": matmul_peak()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
