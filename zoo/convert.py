"""Weights in and out of PyTorch's model zoos, without importing torch.

`from_torchvision` and `from_timm` load a torchvision (ResNet, MobileNetV2) or
timm (ViT) state_dict into the zoo model built like it; `to_torchvision` and
`to_timm` write one that the peer's model loads with `strict=True`. The zoo's
layer names are the peer's module names with `_` for `.`, so the mapping is
by name; what differs is layout (kernels transposed, timm's fused `qkv`
split), done by one `_Tensor` per state_dict entry, both ways.

Reading a file is security-critical. `torch.save` writes a zip of raw tensor
bytes and a pickle describing them. A pickle can name any Python callable, so
the reader here is an unpickler that admits only what a state_dict of tensors
needs (an `OrderedDict`, torch's tensor rebuild function and its storage
types) and refuses anything else, as `torch.load(..., weights_only=True)`
does. `.safetensors` files hold no code. Every tensor copied is counted, so
that many views of one storage are refused as a bomb (`safety.is_bomb`)
before they are copied, and a file that is not a state_dict of numeric
arrays, or whose arrays do not fit the model, is a one-line `ZooError` that
leaves the model unchanged.
"""

import collections
import math
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np

from zoo import safety, saving
from zoo.errors import ZooError
from zoo.models import vit

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


def save_state_dict(state, path) -> None:
    """Writes `{name: array}` as a peer reads it, atomically, without torch.

    Args:
        state: names to NumPy arrays, in the peer's layout.
        path: a `.safetensors` file, or a `.pth` (`.pt`, `.bin`) file laid
            out as `torch.save` writes one, which `torch.load(...,
            weights_only=True)` reads.
    """
    path = os.fspath(path)
    _check_output_path(path)
    # C order, as both formats need (np.ascontiguousarray would make scalars 1-d).
    state = {key: np.asarray(array, order="C") for key, array in state.items()}
    with saving.atomic_path(path) as tmp:
        if path.endswith(".safetensors"):
            from safetensors.numpy import save_file

            # "format": "pt" is what Hugging Face's and timm's writers record.
            save_file(state, tmp, metadata={"format": "pt"})
        else:
            _torch_save(state, tmp)


_TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def _check_output_path(path):
    if not path.endswith((".safetensors", *_TORCH_SUFFIXES)):
        raise ZooError(
            f"Expected a path ending in .safetensors, or {', '.join(_TORCH_SUFFIXES)} for "
            f"torch.save's format. Received: path={path!r}"
        )


_STORAGE_NAMES = {np.dtype(dtype): name for name, dtype in _STORAGE_DTYPES.items()}


def _torch_save(state, path):
    """Writes what `torch.save(state_dict)` writes (format version 3): a zip
    of one little-endian record per tensor and a protocol-2 pickle of an
    `OrderedDict` of `torch._utils._rebuild_tensor_v2(storage, 0, size,
    stride, False, OrderedDict())`, each storage a persistent id `("storage",
    torch.<Type>Storage, key, "cpu", elements)`: exactly what the reader above
    admits, and no more."""

    def text(value):
        data = value.encode()
        return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data

    def integer(value):
        data = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
        return pickle.LONG1 + bytes([len(data)]) + data

    def ints(values):
        return pickle.MARK + b"".join(map(integer, values)) + pickle.TUPLE

    def name(module, attribute):
        return pickle.GLOBAL + f"{module}\n{attribute}\n".encode()

    ordered_dict = name("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    pickled = [pickle.PROTO + b"\x02", ordered_dict, pickle.MARK]
    records = {}
    for index, (key, array) in enumerate(state.items()):
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        if dtype not in _STORAGE_NAMES:
            raise ZooError(f"Expected numeric arrays. Received: {key!r} of dtype {array.dtype}")
        records[str(index)] = array.astype(dtype).tobytes()
        storage = pickle.MARK + text("storage") + name("torch", _STORAGE_NAMES[dtype])
        storage += text(str(index)) + text("cpu") + integer(array.size) + pickle.TUPLE
        strides = [s // array.itemsize for s in array.strides]
        pickled += [text(key), name("torch._utils", "_rebuild_tensor_v2"), pickle.MARK]
        pickled += [storage, pickle.BINPERSID, integer(0), ints(array.shape), ints(strides)]
        pickled += [pickle.NEWFALSE, ordered_dict, pickle.TUPLE, pickle.REDUCE]
    pickled += [pickle.SETITEMS, pickle.STOP]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", b"".join(pickled))
        archive.writestr("archive/byteorder", "little")
        for key, data in records.items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")


# === How each peer names and lays out a zoo layer's weights ===


class _Tensor(NamedTuple):
    """One tensor of a peer's state_dict and the Keras variables it holds."""

    key: str
    shape: tuple  # in the peer's layout
    variables: tuple  # Keras variables, in `layer.weights` order
    to_keras: Callable  # the peer's array -> one array per variable
    to_peer: Callable  # one array per variable -> the peer's array
    optional: bool = False  # a buffer the zoo does not keep (BatchNorm's batch count)


def _one(key, variable, axes=None) -> _Tensor:
    """A tensor holding one variable; `axes` transposes the peer's layout to
    Keras' (`np.transpose(peer, axes)`)."""
    shape = tuple(variable.shape)
    if axes is None:
        return _Tensor(key, shape, (variable,), lambda a: [a], lambda arrays: arrays[0])
    back = tuple(int(axis) for axis in np.argsort(axes))
    return _Tensor(
        key,
        tuple(shape[back[axis]] for axis in range(len(axes))),
        (variable,),
        lambda a: [a.transpose(axes)],
        lambda arrays: arrays[0].transpose(back),
    )


def _convolution(layer, key):
    # torch: (out, in, h, w); Keras, in either data format: (h, w, in, out).
    tensors = [_one(f"{key}.weight", layer.kernel, (2, 3, 1, 0))]
    return tensors + ([_one(f"{key}.bias", layer.bias)] if layer.use_bias else [])


def _depthwise(layer, key):
    # torch (groups=channels): (channels * multiplier, 1, h, w), output channel
    # c * multiplier + j; Keras: (h, w, channels, multiplier).
    h, w, channels, multiplier = layer.kernel.shape
    tensors = [
        _Tensor(
            f"{key}.weight",
            (channels * multiplier, 1, h, w),
            (layer.kernel,),
            lambda a: [a.transpose(2, 3, 0, 1).reshape(h, w, channels, multiplier)],
            lambda arrays: arrays[0].reshape(h, w, channels * multiplier, 1).transpose(2, 3, 0, 1),
        )
    ]
    return tensors + ([_one(f"{key}.bias", layer.bias)] if layer.use_bias else [])


def _dense(layer, key):
    tensors = [_one(f"{key}.weight", layer.kernel, (1, 0))]
    return tensors + ([_one(f"{key}.bias", layer.bias)] if layer.use_bias else [])


def _batch_norm(layer, key):
    variables = (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
    names = ("weight", "bias", "running_mean", "running_var")
    count = _Tensor(
        f"{key}.num_batches_tracked",
        (),
        (),
        lambda a: [],
        lambda arrays: np.array(0, np.int64),
        optional=True,
    )
    return [_one(f"{key}.{n}", v) for n, v in zip(names, variables, strict=True)] + [count]


def _layer_norm(layer, key):
    return [_one(f"{key}.weight", layer.gamma), _one(f"{key}.bias", layer.beta)]


def _attention(layer, key):
    """timm's `Attention`: one fused `qkv` Linear, rows `[q | k | v]` with the
    heads in order within each, and the output projection `proj`."""
    if len(layer.weights) != 8:
        raise ZooError(
            f"No timm mapping for layer {layer.name!r}: expected a MultiHeadAttention with "
            f"biases (8 weights). Received: {len(layer.weights)} weights"
        )
    q_kernel, q_bias, k_kernel, k_bias, v_kernel, v_bias, o_kernel, o_bias = layer.weights
    dim, heads, head_dim = q_kernel.shape
    width = heads * head_dim
    out = o_kernel.shape[-1]

    def split(a, shape, transpose):
        parts = (a[i * width : (i + 1) * width] for i in range(3))
        return [(p.T if transpose else p).reshape(shape) for p in parts]

    return [
        _Tensor(
            f"{key}.qkv.weight",
            (3 * width, dim),
            (q_kernel, k_kernel, v_kernel),
            lambda a: split(a, (dim, heads, head_dim), transpose=True),
            lambda arrays: np.concatenate([k.reshape(dim, width).T for k in arrays]),
        ),
        _Tensor(
            f"{key}.qkv.bias",
            (3 * width,),
            (q_bias, k_bias, v_bias),
            lambda a: split(a, (heads, head_dim), transpose=False),
            lambda arrays: np.concatenate([b.reshape(width) for b in arrays]),
        ),
        _Tensor(
            f"{key}.proj.weight",
            (out, width),
            (o_kernel,),
            lambda a: [a.T.reshape(heads, head_dim, out)],
            lambda arrays: arrays[0].reshape(width, out).T,
        ),
        _one(f"{key}.proj.bias", o_bias),
    ]


def _parameter(layer, key):
    """A layer holding one bare `nn.Parameter` (timm's `cls_token`, `pos_embed`)."""
    (variable,) = layer.weights
    return [_one(key, variable)]


def _dotted(suffix):
    return suffix.replace("_", ".")


# timm's module and parameter names that hold an underscore.
_TIMM_NAMES = ("patch_embed", "cls_token", "pos_embed", "fc_norm")


def _timm_key(suffix):
    key = _dotted(suffix)
    for name in _TIMM_NAMES:
        key = re.sub(rf"(^|\.){re.escape(_dotted(name))}(?=\.|$)", rf"\g<1>{name}", key)
    return key


class _Convention(NamedTuple):
    name: str
    key: Callable  # a layer's name without the model's prefix -> the peer's module name
    layers: tuple  # (Keras layer class, mapping), the first match wins
    converts: str  # what the peer's files hold, for errors


_TORCHVISION = _Convention(
    "torchvision",
    _dotted,
    (
        (keras.layers.DepthwiseConv2D, _depthwise),
        (keras.layers.Conv2D, _convolution),
        (keras.layers.Dense, _dense),
        (keras.layers.BatchNormalization, _batch_norm),
    ),
    "torchvision's resnet18, resnet34, resnet50 and mobilenet_v2 (from_timm reads timm's ViT)",
)
_TIMM = _Convention(
    "timm",
    _timm_key,
    (
        (keras.layers.Conv2D, _convolution),
        (keras.layers.Dense, _dense),
        (keras.layers.BatchNormalization, _batch_norm),
        (keras.layers.LayerNormalization, _layer_norm),
        (keras.layers.MultiHeadAttention, _attention),
        (vit.ClassToken, _parameter),
        (vit.PositionEmbedding, _parameter),
    ),
    "timm's vit_tiny_patch16_224 and ResNets (from_torchvision reads torchvision's MobileNetV2)",
)
# Classifier modules, whose weights a headless model (include_top=False) skips.
_HEADS = ("fc", "classifier", "head")


def _tensors(model, convention) -> list[_Tensor]:
    """Every tensor of the peer's state_dict for `model`, in layer order."""
    tensors = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if not layer.name.startswith(f"{model.name}_"):
            raise ZooError(
                f"Expected every layer name of {model.name} to start with {model.name + '_'!r}, "
                f"as zoo models name them. Received: {layer.name!r}"
            )
        key = convention.key(layer.name[len(model.name) + 1 :])
        mapping = next((m for kind, m in convention.layers if isinstance(layer, kind)), None)
        if mapping is None:
            raise ZooError(
                f"No {convention.name} mapping for layer {layer.name!r} "
                f"({type(layer).__name__}). Expected a model of {convention.converts}"
            )
        tensors += mapping(layer, key)
    return tensors


def _load(model, path, convention) -> keras.Model:
    path = os.fspath(path)
    tensors = _tensors(model, convention)
    state = load_state_dict(path)
    assignments = []
    for tensor in tensors:
        if tensor.key not in state:
            if tensor.optional:
                continue
            raise ZooError(
                f"{path!r} has no {tensor.key!r}, which {model.name} needs. "
                f"Expected a {convention.name} state_dict of the same architecture"
            )
        array = state[tensor.key]
        if array.shape != tensor.shape:
            raise ZooError(
                f"{tensor.key}: {model.name} expects shape {tensor.shape} (torch layout). "
                f"Received: {array.shape} from {path!r}"
            )
        assignments += zip(tensor.variables, tensor.to_keras(array), strict=True)
    known = {tensor.key for tensor in tensors}
    # A headless model skips the classifier its file may hold.
    skipped = set(_HEADS) - {key.split(".")[0] for key in known}
    unused = sorted(key for key in set(state) - known if key.split(".")[0] not in skipped)
    if unused:
        raise ZooError(
            f"{path!r} holds weights {model.name} has no place for: "
            f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}. "
            f"Expected a {convention.name} state_dict of the same architecture"
        )
    # Every array was checked above: on an error the model is unchanged.
    for variable, array in assignments:
        variable.assign(array.astype(variable.dtype))
    return model


def _save(model, path, convention) -> None:
    path = os.fspath(path)
    _check_output_path(path)
    state = {}
    for tensor in _tensors(model, convention):
        arrays = [keras.ops.convert_to_numpy(v) for v in tensor.variables]
        state[tensor.key] = tensor.to_peer(arrays)
    save_state_dict(state, path)


def from_torchvision(model, path) -> keras.Model:
    """Loads torchvision weights into a zoo ResNet or MobileNetV2, in place.

    Keras layer `{model.name}_layer1_0_conv1` takes torchvision's
    `layer1.0.conv1`; convolution kernels (depthwise ones included) are
    transposed to Keras' layout, in either data format, and BatchNorm
    statistics carried over. Every array is checked before any is assigned,
    so on an error (a missing key, a key with no place in the model, a wrong
    shape, each named in one line) the model is unchanged.

    Args:
        model: a zoo `resnet18`, `resnet34`, `resnet50` or `mobilenet_v2`;
            headless models (`include_top=False`) skip the classifier.
        path: a torchvision state_dict saved with `torch.save`, or `.safetensors`.

    Returns:
        `model`, for chaining.

    Example:

    >>> model = zoo.convert.from_torchvision(zoo.create_model("resnet50"), "resnet50.pth")
    """
    return _load(model, path, _TORCHVISION)


def from_timm(model, path) -> keras.Model:
    """Loads timm weights into a zoo ViT (or ResNet), in place.

    timm's names are the zoo's layer names with `.` for `_` (`patch_embed`,
    `cls_token`, `pos_embed` and `fc_norm` keep theirs); each block's fused
    `attn.qkv` is split into the query, key and value projections of its
    `MultiHeadAttention` and `attn.proj` is its output projection. Checked
    as `from_torchvision` checks, leaving the model unchanged on an error.

    Args:
        model: a zoo `vit_tiny` built as the checkpoint was (patch size,
            width, depth, heads, input size); headless models skip `head`.
        path: a timm state_dict saved with `torch.save`, or `.safetensors`
            (timm's files on the Hugging Face hub are `model.safetensors`).

    Returns:
        `model`, for chaining.

    Example:

    >>> model = zoo.convert.from_timm(zoo.create_model("vit_tiny"), "model.safetensors")
    """
    return _load(model, path, _TIMM)


def to_torchvision(model, path) -> None:
    """Writes a zoo ResNet's or MobileNetV2's weights as a torchvision state_dict.

    torchvision's own model takes the file with `load_state_dict(...,
    strict=True)` and computes the same logits; BatchNorm's
    `num_batches_tracked`, which Keras does not count, is written as 0. A
    headless model's file has no classifier, as torchvision's model with
    `fc` (or `classifier`) replaced by `nn.Identity()`.

    Args:
        model: a zoo `resnet18`, `resnet34`, `resnet50` or `mobilenet_v2`.
        path: a `.safetensors` file, or a `.pth` (`.pt`, `.bin`) file in
            `torch.save`'s format; neither needs torch.

    Example:

    >>> zoo.convert.to_torchvision(model, "resnet50.safetensors")
    """
    _save(model, path, _TORCHVISION)


def to_timm(model, path) -> None:
    """Writes a zoo ViT's weights as a timm state_dict, `qkv` fused.

    timm's `vit_tiny_patch16_224` (built with the same patch size, width,
    depth, heads, input size and classes) takes the file with
    `load_state_dict(..., strict=True)` and computes the same logits; a
    headless model's file is timm's `num_classes=0` model.

    Args:
        model: a zoo `vit_tiny`.
        path: a `.safetensors` file, or a `.pth` (`.pt`, `.bin`) file in
            `torch.save`'s format; neither needs torch.

    Example:

    >>> zoo.convert.to_timm(model, "vit_tiny.safetensors")
    """
    _save(model, path, _TIMM)
