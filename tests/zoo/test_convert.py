"""zoo.convert's reader and mapping, without torch (the logits parity against a
real torch ResNet is in test_cross_backend.py); one test reads a real torch.save
file where torch is installed. Hostile and damaged files are refused in one
line, with nothing written, imported or changed (`audit.py`)."""

import io
import os
import pickle
import zipfile

import keras
import numpy as np
import pytest
from audit import audited
from safetensors.numpy import save_file
from tiny import TINY_KWARGS

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


def tensor_pickle(offset, size, stride, source=None, key="w"):
    """The pickle of `{key: tensor}`, the tensor a view of `source`."""
    tensor = REBUILD + opcodes((source or storage(), offset, size, stride)) + b"R"
    return b"}" + opcodes(key) + tensor + b"s."


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
    "value_not_a_tensor": (pickle.dumps({"w": 5}, protocol=2), {}, "Received: 'w' holds a int$"),
    "key_not_a_string": (
        tensor_pickle(0, (4,), (1,), key=1),
        {"0": RECORD},
        "Received: a key of type int$",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_torch_file_is_refused_in_one_line(tmp_path, case):
    payload, records, match = MALFORMED[case]
    path = tmp_path / "w.pth"
    torch_style_zip(path, payload, records)
    if case == "record_fails_its_crc":
        path.write_bytes(path.read_bytes().replace(RECORD, b"\xff" * len(RECORD)))
    with audited(tmp_path) as events, pytest.raises(zoo.ZooError, match=match) as info:
        load_state_dict(path)
    assert "\n" not in str(info.value) and not events
    assert repr(str(path)) in str(info.value)


def views_pickle(count, numel):
    """`{"w0": t, "w1": t, ...}`: `count` views of all of one float32 storage."""
    view = REBUILD + opcodes((storage(numel=numel), 0, (numel,), (1,))) + b"R"
    return b"}(" + b"".join(opcodes(f"w{i}") + view for i in range(count)) + b"u."


@pytest.mark.parametrize("views", [8, 256])
def test_many_views_of_one_storage_count_as_many_tensors(tmp_path, views):
    path = tmp_path / "views.pth"
    numel = 1 << 18  # 1 MiB of float32 zeros, deflated to about 1 KB
    record = {"0": bytes(4 * numel)}
    torch_style_zip(path, views_pickle(views, numel), record, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 20_000
    if views == 8:  # each view is copied, as torch.load copies it: 8 MiB from a few KB
        assert sum(array.nbytes for array in load_state_dict(path).values()) == 8 << 20
        return
    # 256 MiB declared; refused at the first view past 16 MiB.
    match = r"its tensors hold at least 17825792 bytes from a file of \d+; expected at most 100"
    with audited(tmp_path) as events, pytest.raises(zoo.ZooError, match=match) as info:
        load_state_dict(path)
    assert "\n" not in str(info.value) and not events


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


@pytest.fixture(scope="module")
def resnet18_and_weights():
    """One headless ResNet-18 and its weights, for the tests that must leave it
    unchanged."""
    model = headless_resnet18()
    return model, [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def assert_unchanged(model, before):
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))


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
            r"conv1.weight: resnet18 expects shape \(64, 3, 7, 7\) \(torch layout\). "
            r"Received: \(64, 1, 7, 7\)",
        ),
        (
            (),
            {"conv1.weight": np.zeros((64, 3, 7), "float32")},
            r"conv1.weight: resnet18 expects shape \(64, 3, 7, 7\) .*Received: \(64, 3, 7\)",
        ),
        (
            (),
            {"conv1.weight": np.zeros((64, 3, 7, 7), "complex64")},
            "'conv1.weight' holds a complex64",
        ),
    ],
    ids=["missing", "unexpected", "wrong_shape", "wrong_rank", "complex"],
)
def test_a_mismatched_state_dict_fails_and_changes_nothing(
    tmp_path, resnet18_and_weights, drop, add, message
):
    model, before = resnet18_and_weights
    save_file(state_dict_of(model, drop, add), str(tmp_path / "w.safetensors"))
    with pytest.raises(zoo.ZooError, match=message):
        from_torchvision(model, tmp_path / "w.safetensors")
    assert_unchanged(model, before)


def test_a_storage_record_that_is_a_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.pth"
    numel = 32 << 18  # 32 MiB of float32 zeros, which deflate packs about 1000-fold
    records = {"0": bytes(numel * 4)}
    pickle = tensor_pickle(0, (numel,), (1,), storage(numel=numel))
    torch_style_zip(path, pickle, records, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(zoo.ZooError, match="'archive/data/0' unpacks 33554432 bytes from"):
        load_state_dict(path)


def _truncated(data):
    return data[: len(data) // 2]


def _garbled(data):
    return data[:8] + b"\xff" * 16 + data[24:]


def _huge_header(data):
    return (1 << 62).to_bytes(8, "little") + data[8:]


@pytest.mark.parametrize("damage", [_truncated, _garbled, _huge_header])
def test_a_damaged_safetensors_file_is_one_line_and_changes_nothing(
    tmp_path, resnet18_and_weights, damage
):
    model, before = resnet18_and_weights
    path = tmp_path / "w.safetensors"
    save_file(state_dict_of(model), str(path))
    path.write_bytes(damage(path.read_bytes()))
    match = "which is not a readable .safetensors file"
    with audited(tmp_path) as events, pytest.raises(zoo.ZooError, match=match) as info:
        from_torchvision(model, path)
    assert "\n" not in str(info.value) and not events
    assert_unchanged(model, before)


# === Every family, both ways: torchvision's MobileNetV2 and timm's ViT ===

# Each family the converters port, with its peer; built as the other tests build
# it (tests/support/tiny.py), so that JAX compiles its initialisers once.
PORTS = {"mobilenet_v2": "torchvision", "vit_tiny": "timm"}
READERS = {"torchvision": zoo.convert.from_torchvision, "timm": zoo.convert.from_timm}
WRITERS = {"torchvision": zoo.convert.to_torchvision, "timm": zoo.convert.to_timm}


def build(name, seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    return zoo.create_model(name, **{**TINY_KWARGS[name], **overrides})


def numpy_weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each family's tiny model and the peer file `to_<peer>` wrote from it."""
    folder = tmp_path_factory.mktemp("exported")
    models = {}
    for name, peer in PORTS.items():
        model = build(name)
        WRITERS[peer](model, folder / f"{name}.safetensors")
        models[name] = (model, folder / f"{name}.safetensors")
    return models


@pytest.mark.parametrize("name", sorted(PORTS))
def test_zoo_to_peer_to_zoo_is_exact(exported, tmp_path, name):
    model, path = exported[name]
    peer = PORTS[name]
    other = READERS[peer](build(name, seed=1), path)
    for before, after in zip(numpy_weights(model), numpy_weights(other), strict=True):
        np.testing.assert_array_equal(before, after)
    WRITERS[peer](other, tmp_path / "again.safetensors")
    again, first = load_state_dict(tmp_path / "again.safetensors"), load_state_dict(path)
    assert sorted(again) == sorted(first)
    for key, array in first.items():
        np.testing.assert_array_equal(again[key], array)


def test_timm_names_and_layouts(exported):
    """timm's names (`patch_embed`, `cls_token`, `pos_embed` keep their
    underscores), one fused `qkv` per block, and torch's layouts."""
    state = load_state_dict(exported["vit_tiny"][1])
    block = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
    modules = ["patch_embed.proj", "norm", "head"]
    modules += [f"blocks.{i}.{m}" for i in range(2) for m in block]
    expected = {f"{m}.{p}" for m in modules for p in ("weight", "bias")}
    assert sorted(state) == sorted(expected | {"cls_token", "pos_embed"})
    assert state["blocks.0.attn.qkv.weight"].shape == (48, 16)  # [q | k | v] rows, (out, in)
    assert state["patch_embed.proj.weight"].shape == (16, 3, 4, 4)
    assert state["pos_embed"].shape == (1, 17, 16)


def test_mobilenet_depthwise_kernels_in_torch_layout(exported):
    model, path = exported["mobilenet_v2"]
    state = load_state_dict(path)
    kernel = keras.ops.convert_to_numpy(model.get_layer("mobilenet_v2_features_1_conv_0_0").kernel)
    assert kernel.shape == (3, 3, 16, 1)
    np.testing.assert_array_equal(state["features.1.conv.0.0.weight"], kernel.transpose(2, 3, 0, 1))
    assert state["features.0.1.num_batches_tracked"].shape == ()  # torch's BatchNorm buffer


@pytest.mark.parametrize("name", sorted(PORTS))
def test_headless_models_skip_the_head(exported, name):
    model, path = exported[name]
    headless = READERS[PORTS[name]](build(name, seed=1, include_top=False), path)
    for layer in headless.layers:
        for new, old in zip(layer.weights, model.get_layer(layer.name).weights, strict=True):
            np.testing.assert_array_equal(*map(keras.ops.convert_to_numpy, (new, old)))


KEY_ERRORS = [
    ("vit_tiny", "drop", "blocks.0.attn.qkv.weight", "has no 'blocks.0.attn.qkv.weight'"),
    ("vit_tiny", "add", "blocks.2.norm1.weight", "no place for: blocks.2.norm1.weight"),
    ("vit_tiny", "reshape", "pos_embed", r"pos_embed: vit_tiny expects shape \(1, 17, 16\)"),
    ("vit_tiny", "reshape", "blocks.0.attn.qkv.bias", r"qkv.bias: vit_tiny expects shape \(48,\)"),
    ("mobilenet_v2", "drop", "features.1.conv.0.1.running_var", "has no 'features.1.conv.0.1"),
    ("mobilenet_v2", "add", "features.19.0.weight", "no place for: features.19.0.weight"),
    (
        "mobilenet_v2",
        "reshape",
        "features.1.conv.0.0.weight",
        r"features.1.conv.0.0.weight: mobilenet_v2 expects shape \(16, 1, 3, 3\)",
    ),
]


@pytest.mark.parametrize(
    "name, change, key, message", KEY_ERRORS, ids=[f"{n}-{c}-{k}" for n, c, k, _ in KEY_ERRORS]
)
def test_a_key_that_does_not_fit_is_one_line_naming_it(
    exported, tmp_path, name, change, key, message
):
    model, path = exported[name]
    state = load_state_dict(path)
    if change == "drop":
        del state[key]
    elif change == "add":
        state[key] = np.zeros(3, "float32")
    else:
        state[key] = np.zeros((*state[key].shape, 2), "float32")
    save_file(state, str(tmp_path / "w.safetensors"))
    before = numpy_weights(model)
    with pytest.raises(zoo.ZooError, match=message) as info:
        READERS[PORTS[name]](model, tmp_path / "w.safetensors")
    assert "\n" not in str(info.value)
    assert_unchanged(model, before)


def test_a_model_of_the_other_peer_is_one_line(exported, tmp_path):
    vit, path = exported["vit_tiny"]
    match = r"No torchvision mapping for layer 'vit_tiny_cls_token' \(ClassToken\)"
    with pytest.raises(zoo.ZooError, match=match):
        from_torchvision(vit, path)
    mobilenet, path = exported["mobilenet_v2"]
    match = r"No timm mapping for layer 'mobilenet_v2_features_1_conv_0_0' \(DepthwiseConv2D\)"
    with pytest.raises(zoo.ZooError, match=match):
        zoo.convert.from_timm(mobilenet, path)
    with pytest.raises(zoo.ZooError, match="Expected a path ending in .safetensors"):
        zoo.convert.to_timm(vit, tmp_path / "w.h5")
    assert not list(tmp_path.iterdir())


def test_pth_files_are_written_without_torch(exported, tmp_path):
    """As torch.save lays them out (torch.load reads them: see below), on
    every backend, scalars and integer buffers included."""
    model, path = exported["mobilenet_v2"]
    zoo.convert.to_torchvision(model, tmp_path / "w.pth")
    written, expected = load_state_dict(tmp_path / "w.pth"), load_state_dict(path)
    assert sorted(written) == sorted(expected)
    for key, array in expected.items():
        assert written[key].dtype == array.dtype and written[key].shape == array.shape
        np.testing.assert_array_equal(written[key], array)


# === Against the peers' own code, in torch.nn (tests/support) ===


def reference(name, **overrides):
    """A factory of the peer's model built as `TINY_KWARGS[name]` (from
    tests/support), and one such model randomised."""
    pytest.importorskip("torch")
    kwargs = TINY_KWARGS[name]
    if name == "mobilenet_v2":
        from torch_mobilenet import MobileNetV2, randomised

        args = (kwargs["num_classes"], kwargs["alpha"])
        return lambda: MobileNetV2(*args).eval(), randomised(*args)
    from torch_vit import VisionTransformer, randomised

    vit_kwargs = dict(
        img_size=kwargs["input_shape"][0],
        patch_size=kwargs["patch_size"],
        num_classes=kwargs["num_classes"],
        embed_dim=kwargs["embed_dim"],
        depth=kwargs["depth"],
        num_heads=kwargs["num_heads"],
        mlp_ratio=kwargs["mlp_dim"] / kwargs["embed_dim"],
        **overrides,
    )
    return lambda: VisionTransformer(**vit_kwargs).eval(), randomised(**vit_kwargs)


@pytest.mark.parametrize(
    "name, pooling", [("mobilenet_v2", None), ("vit_tiny", "token"), ("vit_tiny", "avg")]
)
def test_peer_weights_in_and_out_compute_the_peers_logits(tmp_path, name, pooling):
    """The peer's state_dict (torch.save and .safetensors) gives its logits in
    the zoo model; the zoo's export loads with strict=True into a fresh peer
    model, which then computes them too."""
    torch = pytest.importorskip("torch")

    overrides = {"global_pool": pooling} if pooling else {}
    fresh, peer = reference(name, **overrides)
    torch.save(peer.state_dict(), tmp_path / "peer.pth")
    state = {k: v.numpy() for k, v in peer.state_dict().items()}
    save_file(state, str(tmp_path / "peer.safetensors"))
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype("float32")
    with torch.no_grad():
        expected = peer(torch.from_numpy(x)).numpy()
    reader, writer = READERS[PORTS[name]], WRITERS[PORTS[name]]
    model = build(name, **({"pooling": pooling} if pooling else {}))
    tolerance = {"rtol": 1e-4, "atol": 1e-4 * float(np.abs(expected).max())}
    for suffix in ("pth", "safetensors"):
        reader(model, tmp_path / f"peer.{suffix}")
        logits = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=False))
        np.testing.assert_allclose(logits, expected, **tolerance, err_msg=suffix)
    writer(model, tmp_path / "zoo.pth")
    writer(model, tmp_path / "zoo.safetensors")
    for state in (
        torch.load(tmp_path / "zoo.pth", weights_only=True),
        {k: torch.from_numpy(v) for k, v in load_state_dict(tmp_path / "zoo.safetensors").items()},
    ):
        exported = fresh()
        exported.load_state_dict(state, strict=True)
        with torch.no_grad():
            np.testing.assert_allclose(exported(torch.from_numpy(x)).numpy(), expected, **tolerance)
