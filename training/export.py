"""`export`: a saved zoo model as an artifact for serving, written by Keras'
own `model.export` except for ONNX from torch (see `_export_onnx_torch`).

| format           | tensorflow | torch                  | jax                       |
|------------------|------------|------------------------|---------------------------|
| `onnx`           | tf2onnx    | torch.onnx, onnxscript | jax2onnx                  |
| `tf_saved_model` | built in   | not supported          | jax2tf, needs tensorflow  |
| `torch`          | -          | torch.export (`.pt2`)  | -                         |

Every artifact takes any batch size, and any length along the axes the model
leaves open (`mini_gpt`'s sequence). Before an artifact goes under its final
name, it runs in its own runtime (ONNX Runtime, `tf.saved_model.load`,
`torch.export.load`) on random batches of 1 and 3, and must give the Keras
model's outputs: a converter that writes something its runtime rejects, or
that computes something else, is a one-line error and writes nothing.
"""

import contextlib
import importlib.util
import os
import shutil
import tempfile

import keras
import numpy as np

import zoo
from training.formats import FORMATS, REQUIREMENTS
from zoo import ZooError
from zoo.safety import first_line


def export(model_path, format, output, overwrite=False) -> str:
    """Exports a saved zoo model for inference outside Keras.

    Load the artifact with `onnxruntime.InferenceSession(output)` (`"onnx"`),
    `tf.saved_model.load(output).serve` (`"tf_saved_model"`) or
    `torch.export.load(output).module()` (`"torch"`). Which formats a backend
    writes is in `REQUIREMENTS`.

    Args:
        model_path: a `.keras` file.
        format: one of `FORMATS`.
        output: the file (`"onnx"`; `"torch"`, ending in `.pt2`) or directory
            (`"tf_saved_model"`) to write. It is written beside its final name
            and moved into place when complete.
        overwrite: replace an existing `output`. Defaults to `False`.

    Returns:
        `output`.

    Raises:
        ZooError: for a format the current backend cannot write or whose
            converter is not installed, an existing `output` without
            `overwrite`, an unwritable location, an unloadable model, or a
            converter that fails or writes an artifact that does not run as
            the model does.

    Example:

    >>> export("runs/digits/model.keras", "onnx", "digits.onnx")
    'digits.onnx'
    """
    output = os.fspath(output)
    check_supported(format)
    _check_suffix(format, output)
    if os.path.lexists(output) and not overwrite:
        raise ZooError(
            f"Expected a new output path; {output!r} exists (pass overwrite=True, --overwrite)"
        )
    with _staged(output) as staging_path:
        model = zoo.load_model(model_path)
        try:
            _export_model(model, format, staging_path)
        except ZooError:
            raise
        except Exception as exc:  # a converter's own failure, deep in its stack
            raise ZooError(
                f"Expected {model.name!r} to export to {format!r} on the "
                f"{keras.backend.backend()} backend. Received: {_one_line(exc)}"
            ) from exc
        _verify(model, format, staging_path)
    return output


# What an artifact's name ends in, per format; a SavedModel is a directory,
# whose name must not claim another format.
SUFFIXES = {"onnx": ".onnx", "torch": ".pt2"}


def _check_suffix(format, output):
    suffix = os.path.splitext(output.rstrip(os.sep))[1]
    if format in SUFFIXES and suffix != SUFFIXES[format]:
        raise ZooError(
            f"Expected an output path ending in {SUFFIXES[format]} for format {format!r}. "
            f"Received: {output!r}"
        )
    if format == "tf_saved_model" and suffix in (*SUFFIXES.values(), ".keras", ".h5"):
        raise ZooError(
            "Expected a directory name without a file suffix for format 'tf_saved_model' "
            f"(a SavedModel is a directory). Received: {output!r}"
        )


def check_supported(format) -> None:
    """Raises a `ZooError` unless the current backend can export to `format`."""
    if format not in REQUIREMENTS:
        raise ZooError(f"Expected format to be one of {FORMATS}. Received: format={format!r}")
    backend = keras.backend.backend()
    by_backend = REQUIREMENTS[format]
    if backend not in by_backend:
        raise ZooError(
            f"Exporting to {format!r} needs {_describe(by_backend)}. Received: backend={backend!r}"
        )
    missing = [name for name in by_backend[backend] if importlib.util.find_spec(name) is None]
    if missing:
        raise ZooError(
            f"Exporting to {format!r} on the {backend} backend needs {' and '.join(missing)} "
            f"(pip install {' '.join(missing)}). Received: backend={backend!r} without "
            f"{' and '.join(missing)}"
        )


def _describe(by_backend):
    options = [
        f"the {backend} backend" + (f" with {' and '.join(needs)} installed" if needs else "")
        for backend, needs in by_backend.items()
    ]
    return " or ".join(options)


def _export_model(model, format, path):
    spec = _input_spec(model)
    sample = keras.ops.zeros([2 if dim is None else dim for dim in spec.shape], spec.dtype)
    # Keras' exporters want a model that has been called at least once.
    model(sample, training=False)
    if keras.backend.backend() != "torch":
        model.export(path, format=format, verbose=False, input_signature=[spec])
    elif format == "onnx":
        _export_onnx_torch(model, path, spec, sample)
    else:
        # Keras exports a fixed batch of 1 unless told which axes are dynamic.
        model.export(
            path,
            format=format,
            verbose=False,
            input_signature=[spec],
            dynamic_shapes=_torch_dynamic_shapes(spec),
        )
    if format == "onnx":
        _inline_external_data(path)


# Per format, the runtime that runs its artifacts.
RUNTIMES = {"onnx": "ONNX Runtime", "tf_saved_model": "TensorFlow", "torch": "torch.export"}


def _verify(model, format, path, atol=1e-4):
    """Raises a `ZooError` unless the artifact at `path` gives `model`'s
    outputs (within `atol`) on random batches of 1 and 3."""
    spec = _input_spec(model)
    rng = np.random.default_rng(0)
    run = None
    for batch_size in (1, 3):
        shape = (batch_size, *(2 if dim is None else dim for dim in spec.shape[1:]))
        x = (
            rng.integers(0, 2, shape) if "int" in str(spec.dtype) else rng.uniform(0, 1, shape)
        ).astype(str(spec.dtype))
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        try:
            run = run or load_artifact(format, path)
            got = run(x)
        except Exception as exc:  # the runtime's own error about the artifact
            raise ZooError(
                f"Expected the {format} artifact of {model.name!r} to run in "
                f"{RUNTIMES[format]}. Received: {_one_line(exc)}"
            ) from exc
        if got.shape != expected.shape:
            raise ZooError(
                f"Expected the {format} artifact of {model.name!r} to give outputs of "
                f"shape {expected.shape}. Received: {got.shape}"
            )
        error = float(np.max(np.abs(got - expected)))
        if not error <= atol:
            raise ZooError(
                f"Expected the {format} artifact of {model.name!r} to give the model's "
                f"outputs within {atol}. Received: outputs off by up to {error:.3g}"
            )


def load_artifact(format, path):
    """An exported artifact in its own runtime, as a function of a NumPy array.

    Args:
        format: one of `FORMATS`.
        path: what `export` wrote.

    Example:

    >>> run = load_artifact("onnx", "digits.onnx")
    >>> logits = run(x_test[:7])
    """
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if format == "tf_saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # held by the closure: its variables
        return lambda x: loaded.serve(tf.constant(x)).numpy()
    import torch

    module = torch.export.load(path).module()
    device = next(iter(module.state_dict().values())).device
    return lambda x: module(torch.as_tensor(x, device=device)).detach().cpu().numpy()


def _one_line(exc):
    return f"{type(exc).__name__}: {first_line(exc)}"


def _inline_external_data(path):
    """jax2onnx may write weights to a `.data` file beside the model; folding
    them in keeps the artifact one file, moved into place in one step."""
    import onnx

    onnx.save_model(onnx.load(path), path)


def _input_spec(model):
    """The model's one input as a `keras.InputSpec`, batch axis open."""
    if zoo.model_style(model) != "subclassed":
        inputs = model.inputs
        if len(inputs) != 1:
            raise ZooError(
                f"Expected a model with one input. Received: {model.name!r} with {len(inputs)}"
            )
        tensor = inputs[0]
        return keras.InputSpec(shape=tensor.shape, dtype=tensor.dtype, name=tensor.name)
    # Subclassed zoo models keep their builder's `input_shape` in their config.
    shape = model.get_config().get("input_shape")
    if shape is None:
        raise ZooError(
            f"Expected a Functional or Sequential model, or one whose config holds its "
            f"input_shape. Received: {model.name!r} ({type(model).__name__})"
        )
    return keras.InputSpec(shape=(None, *shape), dtype=model.input_dtype)


def _torch_dynamic_shapes(spec):
    import torch

    # AUTO lets torch.export find each open axis' range (a sequence no longer
    # than a position embedding) instead of failing on a guessed one.
    return {axis: torch.export.Dim.AUTO for axis, dim in enumerate(spec.shape) if dim is None}


def _export_onnx_torch(model, path, spec, sample):
    """ONNX through torch.export (the "dynamo" exporter).

    Keras' own torch route falls back to the TorchScript exporter whenever an
    axis is dynamic, and that exporter cannot trace LayerNormalization.
    """
    import torch

    model.eval()
    program = torch.onnx.export(
        model,
        (sample,),
        dynamo=True,
        dynamic_shapes=[(_torch_dynamic_shapes(spec),)],
        input_names=[spec.name or "inputs"],
        verbose=False,
    )
    program.optimize()
    program.save(path)


@contextlib.contextmanager
def _staged(output):
    """Yields a path beside `output` to write an artifact (a file or a
    directory) to, and moves it to `output` when the block completes."""
    parent, name = os.path.split(os.path.abspath(output))
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(dir=parent, prefix=f".{name}.")
    except OSError as exc:
        raise ZooError(
            f"Expected a writable location for the output. Received: {output!r} ({exc.strerror})"
        ) from exc
    try:
        # The final name, in a private directory: Keras checks the suffix.
        path = os.path.join(staging, name)
        yield path
        if os.path.lexists(output):
            # os.replace cannot put a directory over a file or a non-empty
            # directory, so the old artifact moves aside and is removed below.
            os.replace(output, os.path.join(staging, "previous"))
        os.replace(path, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
