"""`python -m training bench` and `--backend auto`.

Benchmarks are not tests: nothing here checks a speed, only that the commands
run, compare like with like and write what they say.
"""

import importlib
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import training
import zoo
from training import autobackend, backends, bench, cli, performance
from training.bench import worker

BACKEND = keras.backend.backend()


def test_bench_writes_records_in_the_schema(tmp_path, capsys):
    """Every mode, in the precision that is not the default: float32's native
    side trains and predicts in the test below."""
    path = tmp_path / "bench.json"
    tiny = ["--batch-size", "8", "--steps", "2", "--repeats", "1"]
    args = ["--models", "mlp", "--backends", BACKEND, "--precision", "mixed_bfloat16"]
    assert cli.main(["bench", *args, *tiny, "--json", str(path)]) == 0
    records = json.loads(path.read_text())
    assert [(r["model"], r["backend"], r["mode"], r["precision"]) for r in records] == [
        ("mlp", BACKEND, mode, "mixed_bfloat16") for mode in bench.MODES
    ]
    for record in records:
        assert set(bench.FIELDS) <= set(record)
        assert record["zoo_samples_per_s"] > 0 and record["native_samples_per_s"] > 0
        assert record["ratio"] == pytest.approx(
            record["zoo_samples_per_s"] / record["native_samples_per_s"]
        )
        assert record["gflops_per_s"] > 0 and record["peak_gflops_per_s"] > 0
        assert record["native_variant"] in record["native_variants"]
        assert record["zoo_first_s"] > 0 and record["native_first_s"] > 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| model | backend | mode | precision |")
    assert [row.split(" | ")[2] for row in table[2:]] == list(bench.MODES)
    assert table[-1].split(" | ")[4].endswith(" ms")  # latency: milliseconds per call


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "lenet5"], "error: Expected models from mlp, simple_cnn, resnet18"),
        (["--backends", "theano"], "error: Expected installed backends"),
        (["--repeats", "0"], "error: Expected repeats to be a positive int. Received: repeats=0"),
        (["--precision", "mixed_float16"], "error: Expected precisions from float32, mixed_"),
    ],
)
def test_bad_bench_input_is_one_line_and_exit_2(args, message, capsys):
    assert cli.main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize("name", list(bench.MODELS))
def test_native_models_have_the_zoo_models_weights(name):
    """Same architecture: the same weight sizes, trainable and not, as the zoo
    model in the image format `fit` uses here; it trains and predicts, in
    batches and one sample a call, in each precision."""
    native_module = importlib.import_module(f"training.bench._{worker.NATIVE[BACKEND]}_native")
    x, y = worker.synthetic_data(bench.INPUT_SHAPE, 4)
    kwargs = {"input_shape": bench.INPUT_SHAPE, "num_classes": 10, **bench.MODELS[name]}
    natives = {
        variant: native_module.Native(name, kwargs, x, y, bench.NativeLoop(2, 0.1, variant))
        for variant in native_module.VARIANTS
    }
    model = zoo.create_model(
        name, **{**kwargs, "input_shape": worker.in_image_format_shape(bench.INPUT_SHAPE)}
    )
    worker.check_same_weights(model, natives, name)  # raises on a mismatch
    for precision in bench.PRECISIONS:
        loop = bench.NativeLoop(2, 0.1, native_module.VARIANTS[0], precision=precision)
        native = native_module.Native(name, kwargs, x, y, loop)
        native.train_epoch()
        predictions = native.predict_epoch()
        assert predictions.shape == (4, 10) and predictions.dtype == np.float32
        native.predict_calls(2)


def _no_calibration(*args, **kwargs):
    raise AssertionError("calibrated")


def test_one_installed_backend_is_chosen_without_calibrating(monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda: [BACKEND])
    monkeypatch.setattr(autobackend, "calibrate", _no_calibration)
    assert autobackend.choose("mlp", "digits").backend == BACKEND


def _write_cache(root, key, backend):
    path = root / "keras-model-zoo" / "backend-auto.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({key: {"backend": backend, "samples_per_s": {}}}))


def test_a_cached_choice_is_used_without_calibrating(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    installed = list(backends.BACKENDS)
    monkeypatch.setattr(backends, "installed", lambda: installed)
    monkeypatch.setattr(autobackend, "calibrate", _no_calibration)
    _write_cache(tmp_path, autobackend.cache_key("mlp", "digits", 32, {}, installed), "jax")
    choice = autobackend.choose("mlp", "digits", batch_size=32)
    assert choice.backend == "jax" and "cached" in choice.reason
    with pytest.raises(AssertionError, match="calibrated"):  # another batch size: another key
        autobackend.choose("mlp", "digits", batch_size=64)


def test_the_cache_key_holds_the_input_shape_of_arrays():
    x, y = np.zeros((10, 5, 3), "float32"), np.zeros(10, "int32")
    key = json.loads(autobackend.cache_key("mlp", (x, y), 8, {}, [BACKEND]))
    assert key["data"] == {"input_shape": [5, 3], "dtype": "float32"}
    assert key["batch_size"] == 8 and set(key["versions"]) == {"keras", BACKEND}


def test_fit_with_backend_auto_trains_on_the_chosen_backend(tmp_path):
    """In a fresh process, as the choice must come before keras is imported."""
    key = autobackend.cache_key("mlp", "digits", 32, {}, backends.installed())
    _write_cache(tmp_path, key, BACKEND)
    output_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--backend", "auto", "--model", "mlp"]
        + ["--epochs", "1", "--verbose", "0", "--output-dir", str(output_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"Backend auto: {BACKEND}" in result.stderr
    assert json.loads((output_dir / "config.json").read_text())["backend"] == BACKEND


@pytest.mark.cross_backend
def test_calibration_picks_an_installed_backend_and_caches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(autobackend, "CALIBRATION_STEPS", 2)
    choice = autobackend.choose("mlp", "digits", batch_size=64)
    assert choice.backend in backends.installed() and choice.reason.startswith("calibrated")
    [entry] = json.loads(pathlib.Path(autobackend.cache_path()).read_text()).values()
    assert entry["backend"] == choice.backend
    assert set(entry["samples_per_s"]) == set(backends.installed())
    again = autobackend.choose("mlp", "digits", batch_size=64)
    assert again.backend == choice.backend and "cached" in again.reason


def test_fit_speed_settings_stay_out_of_the_saved_model(tmp_path):
    """torch refuses steps_per_execution > 1: a model trained with it on
    TensorFlow must still load and evaluate on torch."""
    result = training.fit("mlp", "digits", epochs=1, output_dir=str(tmp_path), verbose=0)
    assert result.model.steps_per_execution == performance.STEPS_PER_EXECUTION.get(BACKEND, 1)
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        saved = json.loads(archive.read("config.json"))
    assert saved["compile_config"]["steps_per_execution"] == 1


def test_the_callback_list_skips_only_unheard_batch_hooks():
    class Counter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

    model = zoo.create_model("mlp", input_shape=(3,), num_classes=2)
    quiet = performance.callback_list([], model, steps=2, epochs=1)
    assert not any(quiet._listened.values())
    counter = Counter()
    heard = performance.callback_list([counter], model, steps=2, epochs=1)
    assert heard._listened["on_train_batch_end"] and not heard._listened["on_test_batch_end"]
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((8, 3), "float32"), np.zeros(8, "int32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=heard)
    assert counter.batches == 2  # steps_per_execution is fit's, not this compile's


class _Noise(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1)

    def call(self, x):
        return x + keras.random.normal(keras.ops.shape(x), seed=self.seed_generator)


def test_prediction_gives_keras_predicts_outputs():
    """`training.predict`'s path against `model.predict`: a convolution whose
    weights change between calls; a forward pass that draws random numbers,
    whose seed state must end as Keras' does."""
    model = zoo.create_model("simple_cnn", input_shape=(8, 8, 3), num_classes=2)
    x = np.random.default_rng(0).uniform(size=(5, 8, 8, 3)).astype("float32")
    for scale in (1.0, -2.0):
        model.set_weights([w * scale for w in model.get_weights()])
        expected = model.predict(x, batch_size=2, verbose=0)
        np.testing.assert_allclose(performance.predict(model, x, batch_size=2), expected, atol=1e-6)

    inputs = keras.Input((3,))
    model = keras.Model(inputs, _Noise()(keras.layers.Dense(2)(inputs)))
    x = x.reshape(-1, 3)
    [state] = model.non_trainable_variables
    before = keras.ops.convert_to_numpy(state)
    outputs = performance.predict(model, x, batch_size=2)
    after = keras.ops.convert_to_numpy(state)
    state.assign(before)
    np.testing.assert_allclose(outputs, model.predict(x, batch_size=2, verbose=0), atol=1e-6)
    np.testing.assert_array_equal(after, keras.ops.convert_to_numpy(state))
