"""zoo.convert's reader and mapping, without torch (the logits parity against a
real torch ResNet is in test_cross_backend.py); one test reads a real torch.save
file where torch is installed."""

import io
import os
import pickle
import zipfile

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import zoo
from zoo.convert import from_torchvision, load_state_dict


def torch_style_zip(path, payload, records=None, compression=zipfile.ZIP_STORED):
    """A file laid out as torch.save writes it, holding an arbitrary pickle and
    `{key: bytes}` storage records."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("archive/data.pkl", payload)
        for key, data in (records or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")


class _RunsACommand:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_a_pickle_naming_any_other_callable_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch_style_zip(path, pickle.dumps({"w": _RunsACommand(sentinel)}, protocol=2))
    with pytest.raises(zoo.ZooError, match=r"asks for (posix|os)\.system"):
        load_state_dict(path)
    assert not sentinel.exists()


def test_files_that_are_not_weights_are_refused(tmp_path):
    (tmp_path / "notes.pth").write_text("not a zip")
    with pytest.raises(zoo.ZooError, match="Expected a torch.save zip file or a .safetensors file"):
        load_state_dict(tmp_path / "notes.pth")
    with pytest.raises(zoo.ZooError, match="No weights file"):
        load_state_dict(tmp_path / "missing.pth")
    buffer = io.BytesIO()
    pickle.dump([1, 2], buffer, protocol=2)
    torch_style_zip(tmp_path / "list.pth", buffer.getvalue())
    with pytest.raises(zoo.ZooError, match="Expected a state_dict"):
        load_state_dict(tmp_path / "list.pth")


# Pickles as torch.save writes them, made by hand so that no test needs torch:
# each field of a tensor's view can be set to what a crafted file would hold.
REBUILD = b"ctorch._utils\n_rebuild_tensor_v2\n"
FLOAT_STORAGE = b"ctorch\nFloatStorage\n"
RECORD = np.arange(4, dtype="<f4").tobytes()  # storage "0": 4 float32 elements


def opcodes(value):
    """Pickle opcodes that push `value`: an int, a str, a tuple, or opcodes (bytes)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, tuple):
        return b"(" + b"".join(opcodes(v) for v in value) + b"t"
    if isinstance(value, str):
        return b"V" + value.encode("raw_unicode_escape") + b"\n"
    return b"I%d\n" % value


def storage(key="0", numel=4):
    """A float32 storage, as torch.save refers to it: by persistent id."""
    return opcodes(("storage", FLOAT_STORAGE, key, "cpu", numel)) + b"Q"


def tensor_pickle(offset, size, stride, source=None):
    """The pickle of `{"w": tensor}`, the tensor a view of `source`."""
    tensor = REBUILD + opcodes((source or storage(), offset, size, stride)) + b"R"
    return b"}" + opcodes("w") + tensor + b"s."


@pytest.mark.parametrize(
    "offset, size, stride, expected",
    [
        (0, (2, 2), (2, 1), [[0, 1], [2, 3]]),
        (0, (2, 2), (1, 2), [[0, 2], [1, 3]]),
        (1, (3,), (0,), [1, 1, 1]),
        (3, (), (), 3),
        (9, (0, 2), (2, 1), np.zeros((0, 2))),
    ],
    ids=["contiguous", "transposed", "broadcast", "scalar", "empty"],
)
def test_tensor_views_inside_their_storage_load(tmp_path, offset, size, stride, expected):
    path = tmp_path / "w.pth"
    torch_style_zip(path, tensor_pickle(offset, size, stride), {"0": RECORD})
    array = load_state_dict(path)["w"]
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, expected)
    assert np.shape(array) == size


@pytest.mark.parametrize(
    "offset, size, stride",
    [
        (4, (1,), (1,)),
        (0, (5,), (1,)),
        (0, (2, 2), (3, 1)),
        (4, (), ()),
        (0, (2,), (1 << 40,)),
        (0, (1 << 33,), (0,)),
        (3, (4,), (-1,)),
        (-1, (1,), (1,)),
        (0, (-1,), (1,)),
        (0, (2, 2), (1,)),
        ("0", (1,), (1,)),
    ],
    ids=[
        "offset_past_the_end",
        "size_past_the_end",
        "stride_past_the_end",
        "scalar_past_the_end",
        "stride_far_outside",
        "broadcast_beyond_the_storage",
        "negative_stride",
        "negative_offset",
        "negative_size",
        "fewer_strides_than_sizes",
        "offset_not_an_int",
    ],
)
def test_a_tensor_view_outside_its_storage_is_refused(tmp_path, offset, size, stride):
    path = tmp_path / "w.pth"
    torch_style_zip(path, tensor_pickle(offset, size, stride), {"0": RECORD})
    with pytest.raises(
        zoo.ZooError, match="Expected a tensor view inside its storage of 4"
    ) as info:
        load_state_dict(path)
    assert "\n" not in str(info.value)
    assert f"Received: offset={offset!r}, size={size!r}, stride={stride!r}" in str(info.value)


MALFORMED = {
    "truncated": (tensor_pickle(0, (4,), (1,))[:60], {"0": RECORD}, "truncated|Ran out"),
    "bad_opcode": (b"\x80\x02}\xff", {}, "invalid load key"),
    "missing_storage_record": (
        tensor_pickle(0, (4,), (1,), storage(key="1")),
        {"0": RECORD},
        "no storage record 'archive/data/1'",
    ),
    "record_shorter_than_its_storage": (
        tensor_pickle(0, (4,), (1,), storage(numel=5)),
        {"0": RECORD},
        "expected a storage of 5 float32 elements",
    ),
    "unexpected_persistent_id": (
        tensor_pickle(0, (4,), (1,), opcodes(("storage", FLOAT_STORAGE)) + b"Q"),
        {"0": RECORD},
        r"expected a persistent id \('storage', .*Received: \('storage', <zoo",
    ),
    "persistent_id_not_a_tuple": (
        tensor_pickle(0, (4,), (1,), opcodes("storage") + b"Q"),
        {"0": RECORD},
        "expected a persistent id .*Received: 'storage'$",
    ),
    "tensor_of_no_storage": (
        tensor_pickle(0, (4,), (1,), opcodes("not a storage")),
        {"0": RECORD},
        "Expected a storage as a tensor's first argument. Received: str",
    ),
    "record_fails_its_crc": (
        tensor_pickle(0, (4,), (1,)),
        {"0": RECORD},
        "Bad CRC-32",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_torch_file_is_refused_in_one_line(tmp_path, case):
    payload, records, match = MALFORMED[case]
    path = tmp_path / "w.pth"
    torch_style_zip(path, payload, records)
    if case == "record_fails_its_crc":
        path.write_bytes(path.read_bytes().replace(RECORD, b"\xff" * len(RECORD)))
    with pytest.raises(zoo.ZooError, match=match) as info:
        load_state_dict(path)
    assert "\n" not in str(info.value)
    assert repr(str(path)) in str(info.value)


def test_a_real_torch_file_with_views_loads(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(12.0).reshape(3, 4)
    state = {
        "transposed": base.t(),
        "strided": base[1:, ::2],
        "scalar": torch.tensor(7),
        "empty": torch.zeros(0, 3),
        "half": base.half()[2],
    }
    torch.save(state, tmp_path / "w.pth")
    loaded = load_state_dict(tmp_path / "w.pth")
    assert sorted(loaded) == sorted(state)
    for key, tensor in state.items():
        np.testing.assert_array_equal(loaded[key], tensor.numpy())
        assert np.shape(loaded[key]) == tuple(tensor.shape)


def headless_resnet18():
    return zoo.create_model("resnet18", input_shape=(32, 32, 3), include_top=False)


def state_dict_of(model, drop=(), add=None):
    """A torchvision-layout state_dict with the shapes `model` expects."""
    state = {}
    for layer in model.layers:
        key = layer.name[len(model.name) + 1 :].replace("_", ".")
        if isinstance(layer, keras.layers.Conv2D):
            h, w, i, o = layer.kernel.shape
            state[f"{key}.weight"] = np.full((o, i, h, w), 0.01, "float32")
        elif isinstance(layer, keras.layers.BatchNormalization):
            for name in ("weight", "bias", "running_mean", "running_var"):
                state[f"{key}.{name}"] = np.full(layer.gamma.shape, 0.5, "float32")
            state[f"{key}.num_batches_tracked"] = np.array(7, "int64")
    for key in drop:
        del state[key]
    state.update(add or {})
    return state


def test_weights_load_and_kernels_are_transposed(tmp_path):
    model = headless_resnet18()
    state = state_dict_of(model)
    state["conv1.weight"] = np.arange(64 * 3 * 7 * 7, dtype="float32").reshape(64, 3, 7, 7)
    state["fc.weight"] = np.zeros((10, 512), "float32")  # a headless model ignores fc
    save_file(state, str(tmp_path / "w.safetensors"))
    from_torchvision(model, tmp_path / "w.safetensors")
    kernel = keras.ops.convert_to_numpy(model.get_layer("resnet18_conv1").kernel)
    np.testing.assert_array_equal(kernel, state["conv1.weight"].transpose(2, 3, 1, 0))
    bn = model.get_layer("resnet18_bn1")
    assert float(keras.ops.convert_to_numpy(bn.moving_variance)[0]) == 0.5


@pytest.mark.parametrize(
    "drop, add, message",
    [
        (("layer4.1.bn2.running_var",), None, "has no 'layer4.1.bn2.running_var'"),
        (
            (),
            {"layer5.0.conv1.weight": np.zeros((1,), "float32")},
            "no place for: layer5.0.conv1.weight",
        ),
        (
            (),
            {"conv1.weight": np.zeros((64, 1, 7, 7), "float32")},
            r"conv1: resnet18 expects shape \(7, 7, 3, 64\) \(Keras layout\). "
            r"Received: \(7, 7, 1, 64\)",
        ),
    ],
)
def test_a_mismatched_state_dict_fails_and_changes_nothing(tmp_path, drop, add, message):
    model = headless_resnet18()
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    save_file(state_dict_of(model, drop, add), str(tmp_path / "w.safetensors"))
    with pytest.raises(zoo.ZooError, match=message):
        from_torchvision(model, tmp_path / "w.safetensors")
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))


def test_a_storage_record_that_is_a_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.pth"
    numel = 32 << 18  # 32 MiB of float32 zeros, which deflate packs about 1000-fold
    records = {"0": bytes(numel * 4)}
    pickle = tensor_pickle(0, (numel,), (1,), storage(numel=numel))
    torch_style_zip(path, pickle, records, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(zoo.ZooError, match="'archive/data/0' unpacks 33554432 bytes from"):
        load_state_dict(path)
