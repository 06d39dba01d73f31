"""`python -m training export`: one model per family exported on the current
backend, run in the format's own runtime and compared with Keras."""

import importlib.util
import os

import keras
import numpy as np
import pytest
from data_format import image_data_format
from tiny import LARGE, TINY_KWARGS

import zoo
from training import cli
from training.export import FORMATS, REQUIREMENTS, check_supported, export, load_artifact

BACKEND = keras.backend.backend()
SUFFIXES = {"onnx": ".onnx", "tf_saved_model": "", "torch": ".pt2"}
# What Keras writes from each backend, given the converters (REQUIREMENTS).
WRITES = {
    "tensorflow": ("onnx", "tf_saved_model"),
    "torch": ("onnx", "torch"),
    "jax": ("onnx", "tf_saved_model"),
}
# Beyond one model per family, the layers that trip exporters.
EXTRA_MODELS = (
    "simple_cnn",  # MaxPooling2D
    "transformer_classifier",  # attention, LayerNormalization
    "mini_gpt",  # sequences of any length
)
# Exporter bugs that zoo models run into: (model, backend, format) -> why.
_ARANGE = "ops.arange in TokenAndPositionEmbedding"
_TORCH_ARANGE = f"Keras' torch backend cannot take a symbolic sequence length in {_ARANGE}"
KNOWN_FAILURES = {
    ("simple_cnn", "jax", "onnx"): "jax2onnx writes MaxPooling2D as a MaxPool ONNX Runtime rejects",
    ("unet_small", "jax", "onnx"): "jax2onnx writes MaxPooling2D as a MaxPool ONNX Runtime rejects",
    ("vit_tiny", "tensorflow", "onnx"): "tf2onnx writes GELU as Erfc, which ONNX Runtime lacks",
    ("mini_gpt", "jax", "onnx"): f"jax2onnx cannot trace {_ARANGE}",
}


def _one_model_per_family():
    first = {}
    for name in zoo.list_models(exclude=[*LARGE, "distiller"]):
        first.setdefault(zoo.model_family(name), name)
    return first.values()


def _cases():
    for name in sorted({*_one_model_per_family(), *EXTRA_MODELS}):
        for format in FORMATS:
            yield pytest.param(name, format, id=f"{name}-{format}")


def _supported(format):
    needs = REQUIREMENTS[format].get(BACKEND, ())
    return format in WRITES[BACKEND] and all(importlib.util.find_spec(n) for n in needs)


def _save(name, tmp_path, **overrides):
    keras.utils.set_random_seed(0)
    model = zoo.create_model(name, **{**TINY_KWARGS[name], **overrides})
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return zoo.load_model(path), str(path)


def _inputs(model, input_shape, batch_size, vocab_size=None, seed=0):
    """A random batch; where the model takes any sequence length, a batch of
    more than one is shorter than `input_shape`."""
    shape = tuple(input_shape)
    if (
        batch_size > 1
        and zoo.model_style(model) != "subclassed"
        and None in model.inputs[0].shape[1:]
    ):
        shape = (shape[0] - 2, *shape[1:])
    rng = np.random.default_rng(seed)
    if vocab_size:
        return rng.integers(0, vocab_size, size=(batch_size, *shape)).astype("int32")
    return rng.uniform(0, 1, size=(batch_size, *shape)).astype("float32")


def _check_matches_keras(model, format, output, input_shape, vocab_size=None):
    run = load_artifact(format, output)
    for batch_size in (1, 7):
        x = _inputs(model, input_shape, batch_size, vocab_size, seed=batch_size)
        expected = model.predict(x, verbose=0)
        np.testing.assert_allclose(run(x), expected, atol=1e-4, err_msg=f"batch {batch_size}")


def _run_cli(capsys, *args):
    code = cli.main(["export", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("name", "format"), _cases())
def test_export_runs_in_its_runtime_as_in_keras(name, format, tmp_path, capsys):
    model, model_path = _save(name, tmp_path)
    output = str(tmp_path / f"exported{SUFFIXES[format]}")
    args = ["--model-path", model_path, "--format", format, "--output", output]
    code, err = _run_cli(capsys, *args)
    known_failure = KNOWN_FAILURES.get((name, BACKEND, format))
    if not _supported(format) or known_failure:
        # The artifact was refused before it reached its name: one line, nothing written.
        assert code == 2
        expected = "error: Exporting to" if not _supported(format) else "error: Expected"
        assert err.startswith(expected) and err.count("\n") == 1, err
        assert sorted(os.listdir(tmp_path)) == [f"{name}.keras"]
        pytest.xfail(f"{known_failure or 'not supported'}: {err.strip()}")
    assert code == 0, err
    assert f"Wrote {output}" in err
    kwargs = TINY_KWARGS[name]
    _check_matches_keras(model, format, output, kwargs["input_shape"], kwargs.get("vocab_size"))


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's unsupported format")
def test_tf_saved_model_from_torch_is_refused_in_one_line():
    with pytest.raises(zoo.ZooError) as info:
        check_supported("tf_saved_model")
    assert str(info.value) == (
        "Exporting to 'tf_saved_model' needs the tensorflow backend or the jax backend "
        "with tensorflow installed. Received: backend='torch'"
    )


def test_a_missing_converter_is_named(monkeypatch):
    needs = REQUIREMENTS["onnx"][BACKEND]
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == needs[0] else find_spec(name)
    )
    with pytest.raises(zoo.ZooError, match=f"needs {needs[0]} .*Received: backend='{BACKEND}'"):
        check_supported("onnx")


def test_an_unknown_format_is_refused():
    with pytest.raises(zoo.ZooError, match=r"Received: format='tflite'"):
        export("model.keras", "tflite", "model.tflite")


@pytest.mark.parametrize("format", FORMATS)
def test_an_existing_output_is_kept_unless_overwrite(format, tmp_path):
    if not _supported(format):
        pytest.skip(f"{BACKEND} cannot export to {format} here")
    model, model_path = _save("mlp", tmp_path)
    output = tmp_path / f"exported{SUFFIXES[format]}"
    # A directory where a file goes and the reverse: both are replaced whole.
    if format == "tf_saved_model":
        output.write_text("old")
    else:
        (output / "old").mkdir(parents=True)
    with pytest.raises(zoo.ZooError, match="exists"):
        export(model_path, format, output)
    assert output.is_file() if format == "tf_saved_model" else (output / "old").is_dir()

    assert export(model_path, format, output, overwrite=True) == str(output)
    _check_matches_keras(model, format, str(output), TINY_KWARGS["mlp"]["input_shape"])
    assert sorted(os.listdir(tmp_path)) == sorted(["mlp.keras", output.name])


def test_an_unwritable_output_fails_before_the_model_loads(tmp_path):
    (tmp_path / "a_file").write_text("")
    format = next(f for f in FORMATS if _supported(f))
    output = tmp_path / "a_file" / f"model{SUFFIXES[format]}"
    # No model file either: the location is checked first.
    with pytest.raises(zoo.ZooError, match=r"writable location.*a_file"):
        export(tmp_path / "missing.keras", format, output)


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    from training import export as export_module

    def fail_halfway(model, format, path):
        with open(path, "w") as f:
            f.write("half an artifact")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export_module, "_export_model", fail_halfway)
    format = next(f for f in FORMATS if _supported(f))
    _, model_path = _save("mlp", tmp_path)
    with pytest.raises(zoo.ZooError, match="Received: RuntimeError: exporter crashed$"):
        export(model_path, format, tmp_path / f"exported{SUFFIXES[format]}")
    assert os.listdir(tmp_path) == ["mlp.keras"]


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda y: y + 1e-3, r"within 0.0001. Received: outputs off by up to 0.001$"),
        (lambda y: y[:, :1], r"outputs of shape \(1, \d+\). Received: \(1, 1\)$"),
    ],
    ids=["values", "shape"],
)
def test_an_artifact_that_computes_something_else_is_refused(
    tamper, message, tmp_path, monkeypatch
):
    from training import export as export_module

    runtime = export_module.load_artifact
    monkeypatch.setattr(
        export_module, "load_artifact", lambda *args: lambda x: tamper(runtime(*args)(x))
    )
    format = next(f for f in FORMATS if _supported(f))
    _, model_path = _save("mlp", tmp_path)
    with pytest.raises(zoo.ZooError, match=message):
        export(model_path, format, tmp_path / f"exported{SUFFIXES[format]}")
    assert os.listdir(tmp_path) == ["mlp.keras"]


def test_a_model_without_known_inputs_is_refused_in_one_line(tmp_path):
    format = next(f for f in FORMATS if _supported(f))
    _, model_path = _save("distiller", tmp_path)
    with pytest.raises(zoo.ZooError, match=r"input_shape. Received: 'distiller' \(Distiller\)"):
        export(model_path, format, tmp_path / f"exported{SUFFIXES[format]}")
    assert os.listdir(tmp_path) == ["distiller.keras"]


@pytest.mark.skipif(BACKEND != "torch", reason="the torch format is written from torch")
def test_the_torch_format_needs_a_pt2_path(tmp_path):
    with pytest.raises(zoo.ZooError, match=r"ending in .pt2.*model\.pth"):
        export(tmp_path / "mlp.keras", "torch", tmp_path / "model.pth")


@pytest.mark.parametrize(
    "format, output, expected",
    [
        ("onnx", "m.pt2", "ending in .onnx for format 'onnx'"),
        ("torch", "m.onnx", "ending in .pt2 for format 'torch'"),
        ("tf_saved_model", "m.onnx", "a directory name without a file suffix"),
    ],
)
def test_an_output_named_for_another_format_is_refused(format, output, expected, tmp_path):
    if not _supported(format):
        pytest.skip(f"{format} is not written on {BACKEND} here")
    with pytest.raises(zoo.ZooError, match=expected):
        export(tmp_path / "mlp.keras", format, tmp_path / output)
    assert not os.listdir(tmp_path)


@pytest.mark.skipif(BACKEND != "torch", reason="channels_first convolutions run on torch")
@pytest.mark.parametrize("format", ["onnx", "torch"])
def test_a_channels_first_model_exports(format, tmp_path):
    if not _supported(format):
        pytest.skip(f"the {format} converter is not installed")
    with image_data_format("channels_first"):
        model, model_path = _save("lenet5", tmp_path, input_shape=(1, 12, 12))
    output = export(model_path, format, tmp_path / f"exported{SUFFIXES[format]}")
    _check_matches_keras(model, format, output, (1, 12, 12))
