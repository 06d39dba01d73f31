"""Weights from PyTorch checkpoints, read without importing torch.

`torch.save` writes a zip of raw tensor bytes and a pickle describing them. A
pickle can name any Python callable, so the reader here is an unpickler that
admits only what a state_dict of tensors needs (an `OrderedDict`, torch's tensor
rebuild function and its storage types) and refuses anything else, as
`torch.load(..., weights_only=True)` does. `.safetensors` files hold no code.
Every tensor copied is counted, so that many views of one storage are refused
as a bomb (`safety.is_bomb`) before they are copied, and a file that is not a state_dict of numeric
arrays, or whose arrays do not fit the model, is a one-line `ZooError` that
leaves the model unchanged.
"""

import collections
import math
import os
import pickle
import zipfile

import keras
import numpy as np

from zoo import safety, saving
from zoo.errors import ZooError

_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _Storage:
    def __init__(self, name):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _check_view(storage, offset, size, stride):
    """Refuses a view that addresses any element outside its storage, as
    `torch.load(..., weights_only=True)` does: `as_strided` would read whatever
    memory lies there, or crash."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise ValueError(
            f"Expected a storage as a tensor's first argument. Received: {type(storage).__name__}"
        )
    integers = (
        isinstance(size, (tuple, list))
        and isinstance(stride, (tuple, list))
        and len(size) == len(stride)
        and all(isinstance(n, int) and n >= 0 for n in (offset, *size, *stride))
    )
    # With no negative strides, the view's last element is its furthest; a view
    # with no elements addresses none. A view of more elements than its storage
    # (stride 0) is no weight torch saves, and would be a memory bomb to copy.
    if not integers or (
        0 not in size
        and (
            offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= len(storage)
            or math.prod(size) > len(storage)
        )
    ):
        raise ValueError(
            f"Expected a tensor view inside its storage of {len(storage)} elements "
            "(non-negative integers, offset + sum((size - 1) * stride) < elements, "
            "no more elements than the storage). "
            f"Received: offset={offset!r}, size={size!r}, stride={stride!r}"
        )


def _rebuild_parameter(data, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, archive, prefix, path):
        super().__init__(archive.open(f"{prefix}data.pkl"))
        self.archive, self.prefix, self.path = archive, prefix, path
        # Storages by key, each read once, as torch.load does: a pickle that
        # names one large record many times must not read it many times.
        self.storages = {}
        # What the tensors copied so far hold, each view counted: many views
        # of one storage are a bomb, however small the file.
        self.view_bytes, self.file_bytes = 0, os.path.getsize(path)

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self.rebuild_tensor
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _Storage(name)
        raise ZooError(
            f"Refusing {self.path!r}: its pickle asks for {module}.{name}, which a "
            "state_dict of tensors never needs. Expected torch.save(model.state_dict())"
        )

    def rebuild_tensor(self, storage, offset, size, stride, *unused):
        _check_view(storage, offset, size, stride)
        self.view_bytes += math.prod(size) * storage.dtype.itemsize
        if self.view_bytes > safety.MAX_UNCOMPRESSED_BYTES or safety.is_bomb(
            self.view_bytes, self.file_bytes
        ):
            raise ZooError(
                f"Refusing {self.path!r}: its tensors hold at least {self.view_bytes} bytes "
                f"from a file of {self.file_bytes}; expected at most {safety.MAX_EXPANSION} "
                f"times the file (past {safety.BOMB_FLOOR_BYTES} bytes) and "
                f"{safety.MAX_UNCOMPRESSED_BYTES} in all"
            )
        strides = [s * storage.dtype.itemsize for s in stride]
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides)
        return view.copy()

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _Storage)
        ):
            raise ZooError(
                f"Refusing {self.path!r}: expected a persistent id ('storage', storage type, "
                f"key, location, elements). Received: {pid!r:.200}"
            )
        _, storage, key, _, numel = pid
        name = f"{self.prefix}data/{key}"
        if name not in self.storages:
            try:
                self.storages[name] = self.archive.read(name)
            except KeyError:
                raise ZooError(
                    f"Refusing {self.path!r}: it has no storage record {name!r}"
                ) from None
        data = self.storages[name]
        if not (isinstance(numel, int) and 0 <= numel * storage.dtype.itemsize <= len(data)):
            raise ZooError(
                f"Refusing {self.path!r}: expected a storage of {numel!r:.50} "
                f"{storage.dtype.name} elements in {name!r}. Received: {len(data)} bytes"
            )
        return np.frombuffer(data, dtype=storage.dtype, count=numel)


def load_state_dict(path) -> dict[str, np.ndarray]:
    """Reads a PyTorch state_dict as NumPy arrays, without torch.

    Args:
        path: a `torch.save(model.state_dict(), path)` file, or a `.safetensors`
            file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ZooError(f"No weights file at {path!r}")
    if os.path.getsize(path) > saving.MAX_FILE_BYTES:
        raise ZooError(f"Refusing {path!r}: it holds more than {saving.MAX_FILE_BYTES} bytes")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            return _checked_state(load_file(path), path)
        except ZooError:
            raise
        except Exception as exc:  # safetensors' errors for a damaged file
            raise ZooError(
                f"Refusing {path!r}, which is not a readable .safetensors file: "
                f"{safety.first_line(exc)}"
            ) from exc
    if not zipfile.is_zipfile(path):
        raise ZooError(
            "Expected a torch.save zip file or a .safetensors file. "
            f"Received: {path!r}, which is neither"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ZooError(f"Expected one data.pkl in a torch.save file. Received: {path!r}")
            safety.check_unpacked_sizes(archive.infolist(), path)
            prefix = pickles[0][: -len("data.pkl")]
            state = _StateDictUnpickler(archive, prefix, path).load()
    except ZooError:
        raise
    except Exception as exc:  # a truncated or crafted file fails in many ways, all of them here
        raise ZooError(
            f"Refusing {path!r}, which is not a readable torch.save file: {safety.first_line(exc)}"
        ) from exc
    return _checked_state(state, path)


def _checked_state(state, path) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise ZooError(f"Expected a state_dict in {path!r}. Received: {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str):
            raise ZooError(
                f"Expected a state_dict of names to tensors in {path!r}. "
                f"Received: a key of type {type(key).__name__}"
            )
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise ZooError(
                f"Expected a state_dict of names to numeric tensors in {path!r}. "
                f"Received: {key!r:.100} holds a {kind}"
            )
    return dict(state)


def _torch_name(model, layer):
    return layer.name[len(model.name) + 1 :].replace("_", ".")


def _torch_weights(layer, key):
    """torch's names for one Keras layer's weights, in the order of
    `layer.weights`, each with the axes that take it to Keras' layout."""
    if isinstance(layer, keras.layers.Conv2D):
        # torch: (out, in, h, w); Keras, in either data format: (h, w, in, out).
        weights = [(f"{key}.weight", (2, 3, 1, 0))]
        return weights + ([(f"{key}.bias", None)] if layer.use_bias else [])
    if isinstance(layer, keras.layers.Dense):
        return [(f"{key}.weight", (1, 0)), (f"{key}.bias", None)]
    if isinstance(layer, keras.layers.BatchNormalization):
        return [(f"{key}.{n}", None) for n in ("weight", "bias", "running_mean", "running_var")]
    raise ZooError(f"No torchvision mapping for layer {layer.name!r} ({type(layer).__name__})")


def from_torchvision(model, path) -> keras.Model:
    """Loads torchvision ResNet weights into a zoo ResNet, in place.

    Keras layer `{model.name}_layer1_0_conv1` takes torchvision's
    `layer1.0.conv1`; convolution kernels are transposed to Keras' layout and
    BatchNorm statistics carried over. Every array is checked before any is
    assigned, so on an error the model is unchanged.

    Args:
        model: a zoo ResNet (`zoo.create_model("resnet50", ...)`); headless
            models ignore the `fc` weights.
        path: a torchvision state_dict saved with `torch.save`, or `.safetensors`.

    Returns:
        `model`, for chaining.

    Example:

    >>> model = zoo.convert.from_torchvision(zoo.create_model("resnet50"), "resnet50.pth")
    """
    path = os.fspath(path)
    state = load_state_dict(path)
    layers = [layer for layer in model.layers if layer.weights]
    used, assignments = set(), []
    for layer in layers:
        key = _torch_name(model, layer)
        for variable, (name, axes) in zip(layer.weights, _torch_weights(layer, key), strict=True):
            if name not in state:
                raise ZooError(
                    f"{path!r} has no {name!r}, which {model.name} needs. "
                    "Expected a torchvision state_dict of the same architecture"
                )
            shape = tuple(variable.shape)
            if axes:  # the shape in torch's layout
                shape = tuple(shape[axes.index(axis)] for axis in range(len(axes)))
            if state[name].shape != shape:
                raise ZooError(
                    f"{name}: {model.name} expects shape {shape} (torch layout). "
                    f"Received: {state[name].shape} from {path!r}"
                )
            array = state[name].transpose(axes) if axes else state[name]
            assignments.append((variable, array))
        used |= {k for k in state if k.startswith(f"{key}.")}
    headless = not any(_torch_name(model, layer) == "fc" for layer in layers)
    unused = sorted(
        k
        for k in set(state) - used
        if not k.endswith("num_batches_tracked") and not (headless and k.startswith("fc."))
    )
    if unused:
        raise ZooError(
            f"{path!r} holds weights {model.name} has no place for: "
            f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}. "
            "Expected a torchvision state_dict of the same architecture"
        )
    for variable, array in assignments:
        variable.assign(array.astype(variable.dtype))
    return model
