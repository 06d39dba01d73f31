"""`zoo.load_model` and `zoo.load_weights` refuse files that could run code or
are broken: before Keras reads them, with one line, and with no side effect.

Payloads that would run create `$ZOO_SENTINEL`; every refusal checks that it
was not created, that Keras' loaders were never called, that nothing under the
test's tmp dir's parent changed, and that an audit hook saw no write outside
the tmp dir, socket connection, process or import (`audit.py`). Where stock
Keras (`safe_mode=True`) would run a payload, a positive control shows that it
does; `python -m training evaluate|predict` refuses every hostile file in one
line with exit code 2, all in one fresh process.
"""

import contextlib
import io
import json
import os
import pathlib
import stat
import subprocess
import sys
import warnings
import zipfile

import h5py
import keras
import numpy as np
import pytest
from audit import audited
from keras.src import api_export
from keras.src.legacy.saving import legacy_h5_format
from keras.src.saving import saving_lib, serialization_lib

import zoo
from zoo import allowlist, safety, saving

# Runs when Keras builds the layer: writes the sentinel named in the environment.
PAYLOAD = lambda t: (open(__import__("os").environ["ZOO_SENTINEL"], "w").close(), t)[1]  # noqa: E731


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """The test's tmp dir, as the working directory, with the payload's sentinel."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_SENTINEL", str(tmp_path / "sentinel"))
    return tmp_path


def tree(root):
    """Every path under `root` with its size and modification time."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            entries[os.path.relpath(path, root)] = (info.st_size, info.st_mtime_ns)
    return entries


@pytest.fixture
def refused(sandbox, monkeypatch):
    """`with refused(match):` expects a one-line ZooError from checks that ran
    before Keras saw the file, and no side effect."""
    handed = []

    def record(name):
        def loader(*args, **kwargs):
            handed.append(name)
            raise AssertionError(f"Keras was handed the file by {name}")

        return loader

    for module, name in [
        (saving_lib, "load_model"),
        (saving_lib, "load_weights_only"),
        (legacy_h5_format, "load_model_from_hdf5"),
    ]:
        monkeypatch.setattr(module, name, record(name))

    @contextlib.contextmanager
    def check(match):
        before = tree(sandbox.parent)
        with audited(sandbox) as events, pytest.raises(zoo.ZooError, match=match) as info:
            yield
        assert "\n" not in str(info.value)
        assert not handed
        assert not events
        assert not list(sandbox.glob("sentinel*"))
        assert tree(sandbox.parent) == before
        assert serialization_lib.in_safe_mode() is not False

    return check


def mlp(hidden_units=(8, 8)):
    return zoo.create_model(
        "mlp", input_shape=(6, 6, 1), num_classes=4, hidden_units=hidden_units, name="mlp"
    )


def load_with(loader):
    """`zoo.load_model`, or `zoo.load_weights` into an mlp built now: outside
    `refused`, whose audit would count the imports that building does."""
    if loader == "load_model":
        return zoo.load_model
    model = mlp()
    return lambda path: zoo.load_weights(model, path)


def saved_mlp(path, hidden_units=(8, 8)):
    mlp(hidden_units).save(path)
    return path


def rewrite(src, dst, *, config=None, members=(), drop=(), compression=zipfile.ZIP_STORED):
    """Copies a `.keras` archive, editing its config, dropping and adding
    `(name or ZipInfo, data)` members."""
    with zipfile.ZipFile(src) as source, zipfile.ZipFile(dst, "w", compression) as target:
        for info in source.infolist():
            if info.filename in drop:
                continue
            data = source.read(info)
            if info.filename == "config.json" and config is not None:
                edited = json.loads(data)
                config(edited)
                data = json.dumps(edited)
            target.writestr(info.filename, data)
        for name, data in members:
            target.writestr(name, data)
    return dst


def replace_member(src, dst, name, data):
    return rewrite(src, dst, drop=(name,), members=[(name, data)])


def lambda_archive(sandbox):
    """A `.keras` file whose Lambda layer writes the sentinel when built."""
    inputs = keras.Input((2,))
    outputs = keras.layers.Lambda(PAYLOAD, name="payload")(inputs)
    keras.Model(inputs, outputs).save(sandbox / "lambda.keras")
    os.remove(sandbox / "sentinel")  # building it ran the payload once
    return sandbox / "lambda.keras"


def test_the_lambda_payload_runs_when_keras_loads_it_unsafely(sandbox):
    path = lambda_archive(sandbox)
    keras.saving.load_model(path, safe_mode=False)
    assert (sandbox / "sentinel").exists()


@pytest.mark.parametrize("loader", ["load_model", "load_weights"])
def test_refuses_a_lambda_layer(sandbox, refused, loader):
    path, load = lambda_archive(sandbox), load_with(loader)
    with refused("Lambda layer, which runs code"):
        load(path)


def function(module, name):
    return {"module": module, "class_name": "function", "config": name, "registered_name": None}


def first_dense(config):
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")


def set_activation(value):
    return lambda config: first_dense(config)["config"].update(activation=value)


def replace_dense(value):
    def edit(config):
        layers = config["config"]["layers"]
        layers[layers.index(first_dense(config))] = value

    return edit


def unsafe_then_lambda(config):
    config["config"]["layers"].insert(1, function("keras.config", "enable_unsafe_deserialization"))
    set_activation(keras.saving.serialize_keras_object(PAYLOAD))(config)


def call_operation(class_name, *args):
    """Adds Keras' control-flow Operation `class_name` to a Functional config:
    Keras calls it with `args` as it rebuilds the graph. An argument
    "ZOO_SENTINEL" becomes the sandbox's sentinel path."""

    def edit(config):
        stored = [os.environ["ZOO_SENTINEL"] if arg == "ZOO_SENTINEL" else arg for arg in args]
        operation = {"module": "keras.src.ops.core", "class_name": class_name, "config": {}}
        node = {"args": stored, "kwargs": {}}
        operation.update(registered_name=None, name="op", inbound_nodes=[node])
        config["config"]["layers"].insert(1, operation)

    return edit


def compiled_with_loss(loss):
    return lambda config: config.update(compile_config={"optimizer": "adam", "loss": loss})


def array(dtype):
    """A `__numpy__` value of one element of `dtype`, as Keras serializes arrays."""
    return {"class_name": "__numpy__", "config": {"value": 0, "dtype": dtype}}


IMAGES = {"class_name": "__numpy__", "config": {"value": [[[[0.5] * 3]]], "dtype": "float32"}}
GALLERY = function("keras.visualization", "plot_image_gallery")
# plot_image_gallery(images, y_true, y_pred, label_map, rows, cols, value_range, scale, path)
GALLERY_ARGS = (IMAGES, None, None, None, 1, 1, [0, 255], 2, "ZOO_SENTINEL")
NO_LOGGING = function("keras.config", "disable_interactive_logging")
SET_DATA_FORMAT = function("keras.config", "set_image_data_format")
DOWNLOAD = function("keras.datasets.mnist", "load_data")

CRAFTED_CONFIGS = {
    "os_system": (set_activation(function("os", "system")), "function 'os.system'"),
    "builtins_eval": (set_activation(function("builtins", "eval")), "function 'builtins.eval'"),
    "exec_as_loss": (compiled_with_loss(function("os", "exec")), "function 'os.exec'"),
    "class_from_os": (
        replace_dense({"module": "os", "class_name": "system", "config": {"command": "id"}}),
        "class 'os.system'",
    ),
    "subprocess": (
        replace_dense(
            {
                "module": "subprocess",
                "class_name": "Popen",
                "config": {"args": ["touch", "sentinel"]},
                "registered_name": "subprocess>Popen",
            }
        ),
        "class 'subprocess.Popen'",
    ),
    "newline_in_module": (
        replace_dense({"module": "os\nerror: forged", "class_name": "system", "config": {}}),
        r"class 'os\\nerror: forged.system'",
    ),
    "foreign_registered_name": (
        lambda c: first_dense(c).update(registered_name="evil>Dense"),
        "'evil>Dense', which no Keras or zoo class registers",
    ),
    "enable_unsafe_deserialization": (
        set_activation(function("keras.config", "enable_unsafe_deserialization")),
        "enable_unsafe_deserialization",
    ),
    "get_file": (set_activation(function("keras.utils", "get_file")), "get_file"),
    "unsafe_then_lambda": (unsafe_then_lambda, "enable_unsafe_deserialization|lambda"),
    "lambda_as_activation": (
        set_activation(keras.saving.serialize_keras_object(PAYLOAD)),
        "Python lambda",
    ),
    "tfsm_layer": (
        replace_dense(
            {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"filepath": "x"}}
        ),
        "TFSMLayer",
    ),
    "vocabulary_file": (
        replace_dense(
            {
                "module": "keras.layers",
                "class_name": "StringLookup",
                "config": {"vocabulary": "/etc/passwd"},
            }
        ),
        "reads a vocabulary file",
    ),
    # Operations that are not layers run any exported Keras function.
    "switch_writes_a_file": (
        call_operation("Switch", 0, [GALLERY], *GALLERY_ARGS),
        r"'keras\.src\.ops\.core\.Switch', an Operation that is not a Layer",
    ),
    "switch_sets_a_config": (
        call_operation("Switch", 0, [SET_DATA_FORMAT], "channels_first"),
        "Switch', an Operation that is not a Layer",
    ),
    "cond_turns_logging_off": (
        call_operation("Cond", True, NO_LOGGING, NO_LOGGING),
        "Cond', an Operation that is not a Layer",
    ),
    "cond_downloads_a_dataset": (
        call_operation("Cond", True, DOWNLOAD, DOWNLOAD),
        "Cond', an Operation that is not a Layer",
    ),
    "keras_test_module": (
        lambda c: first_dense(c).update(module="keras.src.ops.node_test", class_name="DummyLayer"),
        # Once imported (the control below imports it), a class outside the allow-list.
        "'keras.src.ops.node_test.DummyLayer', (which Keras would have to import|a class out)",
    ),
    "function_as_a_class": (
        lambda c: first_dense(c).update(module="keras.config", class_name="set_floatx"),
        "'keras.config.set_floatx', a function where a class is expected",
    ),
    "function_in_a_call": (
        lambda c: first_dense(c)["inbound_nodes"][0]["kwargs"].update(mask=NO_LOGGING),
        "inbound_nodes pass a 'function' to a layer call",
    ),
    # Arrays of 256 MiB from a few bytes of JSON.
    "bytes_array": (compiled_with_loss(array("S268435456")), "dtype 'S268435456'"),
    "unicode_array": (compiled_with_loss(array("U67108864")), "dtype 'U67108864'"),
    "subarray": (compiled_with_loss(array("(8192,8192)f4")), r"dtype '\(8192,8192\)f4'"),
    "deep_config": (set_activation(json.loads("[" * 99 + "]" * 99)), "nests deeper than 64"),
}


def saved_functional(path):
    """A plain Keras Functional model for the digits data set."""
    inputs = keras.Input((8, 8, 1), name="image")
    flat = keras.layers.Flatten(name="flat")(inputs)
    keras.Model(inputs, keras.layers.Dense(10, name="logits")(flat), name="plain").save(path)
    return path


def plain_archive(sandbox):
    """The plain model's archive in the sandbox, saved once."""
    path = sandbox / "plain.keras"
    return path if path.exists() else saved_functional(path)


def crafted(sandbox, case):
    """The plain model's archive with `CRAFTED_CONFIGS[case]`'s edit."""
    return rewrite(
        plain_archive(sandbox), sandbox / f"{case}.keras", config=CRAFTED_CONFIGS[case][0]
    )


@pytest.mark.parametrize("case", sorted(CRAFTED_CONFIGS))
def test_refuses_a_config_naming_code(sandbox, refused, case):
    path = crafted(sandbox, case)
    with refused(CRAFTED_CONFIGS[case][1]):
        zoo.load_model(path)


def keras_resolves(entry):
    """What Keras' own lookup returns for an object entry, or `[]` where it fails."""
    function = entry["class_name"] == "function"
    name = entry["config"] if function else entry["class_name"]
    registered = entry.get("registered_name", entry["class_name"])
    kind = "function" if function else "class"
    try:
        return [
            serialization_lib._retrieve_class_or_fn(
                name, registered, entry["module"], obj_type=kind, full_config=entry
            )
        ]
    except (TypeError, ValueError):
        return []


def as_keras_writes(value):
    """The entries Keras writes for an allowed class or function."""
    if isinstance(value, type):
        entry = serialization_lib.serialize_with_public_class(value)
        return [entry or {"module": value.__module__, "class_name": value.__name__}]
    name = api_export.get_name_from_symbol(value).split(".")[-1]
    builtin = {"module": "builtins", "class_name": "function", "config": value.__name__}
    return [serialization_lib.serialize_with_public_fn(value, name), builtin]


def test_the_allow_list_resolves_entries_as_keras_does():
    """Every allowed class and function, written as Keras writes it, resolves
    to what Keras' lookup returns: a Keras release that looks up otherwise
    fails here."""
    for value in allowlist._KERAS_CLASSES | allowlist._FUNCTIONS:
        for entry in as_keras_writes(value):
            ours, theirs = allowlist._resolve(entry), keras_resolves(entry)
            assert set(theirs) <= set(ours) and bool(ours) == bool(theirs), entry


# What each payload does when stock Keras loads it with safe_mode=True, seen in
# the sandbox, Keras' settings or the audit hook's events.
STOCK_KERAS_RUNS = {
    "switch_writes_a_file": lambda sandbox, events: list(sandbox.glob("sentinel*")),
    "switch_sets_a_config": lambda sandbox, events: (
        keras.config.image_data_format() == "channels_first"
    ),
    "cond_turns_logging_off": lambda sandbox, events: (
        not keras.config.is_interactive_logging_enabled()
    ),
    "keras_test_module": lambda sandbox, events: "new module keras.src.ops.node_test" in events,
}


@pytest.mark.parametrize("case", sorted(STOCK_KERAS_RUNS))
def test_stock_keras_runs_the_payload_in_safe_mode(sandbox, case):
    path = crafted(sandbox, case)
    data_format = keras.config.image_data_format()
    try:
        with audited(sandbox) as events, contextlib.suppress(Exception):
            keras.saving.load_model(path, safe_mode=True)  # fails after the payload ran
        assert STOCK_KERAS_RUNS[case](sandbox, events)
    finally:
        keras.config.set_image_data_format(data_format)
        keras.config.enable_interactive_logging()


@pytest.mark.parametrize("dtype", ["S1048576", "U262144", "(512,512)f4"])
def test_stock_keras_allocates_what_an_array_value_declares(dtype):
    assert len(json.dumps(array(dtype))) < 100
    assert serialization_lib.deserialize_keras_object(array(dtype)).nbytes == 1 << 20


def test_a_name_in_a_string_is_data(sandbox):
    """Keras looks strings up only in its own namespaces: one naming another
    function fails in Keras' lookup, without running anything."""
    path = rewrite(
        saved_functional(sandbox / "plain.keras"),
        sandbox / "named.keras",
        config=set_activation("keras.utils.get_file"),
    )
    with audited(sandbox) as events, pytest.raises(zoo.ZooError, match="Could not load the model"):
        zoo.load_model(path)
    assert not events and not list(sandbox.glob("sentinel*"))


def test_a_plain_keras_model_with_builtin_function_losses_loads(sandbox):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation=keras.activations.gelu)(inputs))
    model.compile(loss=keras.losses.mean_squared_error, metrics=[keras.metrics.mean_absolute_error])
    model.save(sandbox / "plain.keras")
    assert zoo.load_model(sandbox / "plain.keras").compiled


def legacy_lambda_h5(sandbox):
    inputs = keras.Input((2,))
    keras.Model(inputs, keras.layers.Lambda(PAYLOAD)(inputs)).save(sandbox / "lambda.h5")
    os.remove(sandbox / "sentinel")
    return sandbox / "lambda.h5"


def test_the_legacy_h5_payload_runs_when_keras_loads_it_unsafely(sandbox):
    keras.saving.load_model(legacy_lambda_h5(sandbox), safe_mode=False)
    assert (sandbox / "sentinel").exists()


@pytest.mark.parametrize(
    "name, loader, match",
    [
        ("lambda.h5", "load_model", "Expected a path to a .keras file"),
        ("lambda.keras", "load_model", "not a zip file"),
        ("lambda.h5", "load_weights", "Expected a path to a .weights.h5 or .keras file"),
        ("lambda.weights.h5", "load_weights", "legacy whole-model HDF5"),
    ],
)
def test_refuses_legacy_h5_models(sandbox, refused, name, loader, match):
    legacy = legacy_lambda_h5(sandbox)
    if name != legacy.name:
        legacy.rename(sandbox / name)
    load = load_with(loader)
    with refused(match):
        load(sandbox / name)


def first_dataset(h5):
    names = []
    h5.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names[0]


def _external_link(h5, name, secret):
    h5[name] = h5py.ExternalLink(str(secret), "/data")


def _soft_link(h5, name, secret):
    h5[name] = h5py.SoftLink("/vars")


def _virtual_dataset(h5, name, secret):
    layout = h5py.VirtualLayout(shape=(36, 8), dtype="f4")
    layout[:] = h5py.VirtualSource(str(secret), "data", shape=(36, 8))
    h5.create_virtual_dataset(name, layout)


def _external_storage(h5, name, secret):
    h5.create_dataset(name, shape=(36, 8), dtype="f4", external=[(str(secret), 0, 36 * 8 * 4)])


def _shape_bomb(h5, name, secret):
    h5.create_dataset(name, shape=(1 << 16, 1 << 16), dtype="f4", chunks=(1, 1024))


def _strings(h5, name, secret):
    h5.create_dataset(name, data=["a", "b"], dtype=h5py.string_dtype())


def _legacy_model(h5, name, secret):
    h5.attrs["model_config"] = "{}"


H5_ATTACKS = {
    "external_link": (_external_link, "links to another file"),
    "soft_link": (_soft_link, "SoftLink"),
    "virtual_dataset": (_virtual_dataset, "virtual dataset"),
    "external_storage": (_external_storage, "stores its data in another file"),
    "shape_bomb": (_shape_bomb, r"declares shape \(65536, 65536\) but stores 0 bytes"),
    "strings": (_strings, "expected numbers"),
    "legacy_model": (_legacy_model, "legacy whole-model"),
}


@pytest.mark.parametrize("container", ["weights.h5", "keras"])
@pytest.mark.parametrize("attack", sorted(H5_ATTACKS))
def test_refuses_hdf5_weights_that_reach_outside_or_bomb(sandbox, refused, attack, container):
    make, match = H5_ATTACKS[attack]
    secret = sandbox / "secret.h5"
    with h5py.File(secret, "w") as h5:
        h5["data"] = np.ones((36, 8), "f4")
    path = sandbox / "crafted.weights.h5"
    mlp().save_weights(path)
    with h5py.File(path, "a") as h5:
        name = first_dataset(h5)
        del h5[name]
        make(h5, name, secret)
    if container == "keras":
        archive = sandbox / "crafted.keras"
        replace_member(
            saved_mlp(sandbox / "mlp.keras"), archive, "model.weights.h5", path.read_bytes()
        )
        with refused(match):
            zoo.load_model(archive)
    else:
        load = load_with("load_weights")
        with refused(match):
            load(path)


def symlink(name, target):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


# Extra members, each a reason to refuse the archive; built from the tmp dir.
CRAFTED_MEMBERS = {
    "parent_traversal": (lambda root: [("../evil.txt", b"x")], "leaves its folder"),
    "nested_traversal": (lambda root: [("assets/../../evil.txt", b"x")], "leaves its folder"),
    "absolute": (lambda root: [(str(root.parent / "evil.txt"), b"x")], "absolute"),
    "backslash": (lambda root: [("..\\evil.txt", b"x")], "absolute or non-portable"),
    "symlink": (lambda root: [symlink("assets/link", "../../sentinel")], "symbolic link"),
    "unexpected": (lambda root: [("payload.py", b"import os")], "unexpected archive member"),
    "duplicate_config": (lambda root: [("config.json", b"{}")], "duplicate"),
    "zip_bomb": (lambda root: [("assets/zeros.bin", bytes(32 << 20))], "decompression bomb"),
    # 128 MiB from 130 KB, each member at the per-member floor.
    "multi_member_bomb": (
        lambda root: [(f"assets/zeros{i}.bin", bytes(safety.BOMB_FLOOR_BYTES)) for i in range(8)],
        r"its 11 members unpack 134\d+ bytes from \d+, a decompression bomb",
    ),
}


def crafted_members(sandbox, case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate
        return rewrite(
            plain_archive(sandbox),
            sandbox / f"{case}.keras",
            members=CRAFTED_MEMBERS[case][0](sandbox),
            compression=zipfile.ZIP_DEFLATED,
        )


@pytest.mark.parametrize("case", sorted(CRAFTED_MEMBERS))
def test_refuses_archive_members_outside_the_layout(sandbox, refused, case):
    path = crafted_members(sandbox, case)
    if case == "multi_member_bomb":  # it would unpack, as a stock ZipFile does
        with zipfile.ZipFile(path) as archive:
            assert sum(info.file_size for info in archive.infolist()) > 128 << 20
        assert path.stat().st_size < 200_000
    with refused(CRAFTED_MEMBERS[case][1]):
        zoo.load_model(path)


def _link_to(make):
    def link(path):
        make(f"{path}.target")
        os.symlink(f"{path}.target", path)

    return link


# A `NAME.sha256` beside a model that is not a file: reading it would fail,
# block (a FIFO) or never end (a device).
SIDECARS = {
    "directory": (os.mkdir, "is a directory"),
    "fifo": (os.mkfifo, "is a FIFO"),
    "device": (lambda path: os.symlink("/dev/zero", path), "is a link to a device"),
    "link_to_directory": (_link_to(os.mkdir), "is a link to a directory"),
    "link_to_fifo": (_link_to(os.mkfifo), "is a link to a FIFO"),
}


def with_sidecar(sandbox, kind):
    """A model file in a folder of its own, with a sidecar of `kind`."""
    (sandbox / kind).mkdir()
    path = saved_mlp(sandbox / kind / "model.keras")
    SIDECARS[kind][0](f"{path}.sha256")
    return path


@pytest.mark.parametrize("loader", ["load_model", "load_weights"])
@pytest.mark.parametrize("kind", sorted(SIDECARS))
def test_refuses_a_sidecar_that_is_not_a_file(sandbox, refused, kind, loader):
    path, load = with_sidecar(sandbox, kind), load_with(loader)
    sidecar = f"{path}.sha256"
    assert os.path.exists(sidecar) and not os.path.isfile(sidecar)  # it would be opened
    with refused(f"{sidecar!r} {SIDECARS[kind][1]}; expected a regular file"):
        load(path)


@pytest.mark.parametrize("missing", ["config.json", "model.weights.h5"])
def test_refuses_an_archive_missing_a_member(sandbox, refused, missing):
    path = rewrite(saved_mlp(sandbox / "mlp.keras"), sandbox / "partial.keras", drop=(missing,))
    with refused(f"no {missing} in the archive"):
        zoo.load_model(path)


def test_refuses_an_encrypted_member(sandbox, refused):
    data = bytearray((saved_mlp(sandbox / "mlp.keras")).read_bytes())
    central = data.index(b"PK\x01\x02")  # the first member's central directory entry
    data[central + 8] |= 0x1
    (sandbox / "encrypted.keras").write_bytes(data)
    with refused("is encrypted"):
        zoo.load_model(sandbox / "encrypted.keras")


def test_refuses_archives_and_files_over_the_size_limits(sandbox, refused, monkeypatch):
    path = saved_mlp(sandbox / "mlp.keras")
    monkeypatch.setattr(safety, "MAX_UNCOMPRESSED_BYTES", 1000)
    with refused("members unpack to"):
        zoo.load_model(path)
    monkeypatch.setattr(saving, "MAX_FILE_BYTES", 100)
    with refused("more than 100"):
        zoo.load_model(path)


def member_offset(path, name):
    """Where a member's stored bytes start and how many there are."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(f.read(4), "<u2")
    return info.header_offset + 30 + int(name_length) + int(extra_length), info.compress_size


def hdf5_bytes():
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5["data"] = np.ones(3)
    return buffer.getvalue()


BROKEN = {
    "empty": (lambda data: b"", "not a zip file"),
    "text": (lambda data: b"just some text\n", "not a zip file"),
    "truncated_half": (lambda data: data[: len(data) // 2], "not a zip file"),
    "truncated_end": (lambda data: data[:-1], "not a zip file"),
    "hdf5": (lambda data: hdf5_bytes(), "not a zip file"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_refuses_empty_truncated_and_non_zip_files(sandbox, refused, case):
    damage, match = BROKEN[case]
    path = saved_mlp(sandbox / "mlp.keras")
    path.write_bytes(damage(path.read_bytes()))
    with refused(match):
        zoo.load_model(path)


@pytest.mark.parametrize("member", ["config.json", "metadata.json", "model.weights.h5"])
def test_refuses_a_bit_flip_in_any_member(sandbox, refused, member):
    path = saved_mlp(sandbox / "mlp.keras")
    start, size = member_offset(path, member)
    data = bytearray(path.read_bytes())
    data[start + size // 2] ^= 0x10
    path.write_bytes(data)
    with refused(f"{member!r} fails its CRC check"):
        zoo.load_model(path)


@pytest.mark.parametrize(
    "config, match",
    [
        (b"{not json", "config.json is not valid JSON"),
        (b"[1, 2]", "config.json holds a list"),
        (b"[" * 100_000 + b"]" * 100_000, "config.json is not valid JSON"),
    ],
)
def test_refuses_a_config_that_is_not_a_json_object(sandbox, refused, config, match):
    path = replace_member(
        saved_mlp(sandbox / "mlp.keras"), sandbox / "bad.keras", "config.json", config
    )
    with refused(match):
        zoo.load_model(path)


def variables(model):
    return [keras.ops.convert_to_numpy(v) for v in model.variables]


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
@pytest.mark.parametrize("hidden_units", [(8, 16), (8, 8, 8)])
def test_weights_of_another_architecture_leave_the_model_unchanged(sandbox, suffix, hidden_units):
    other = mlp(hidden_units)
    path = sandbox / f"other{suffix}"
    other.save(path) if suffix == ".keras" else other.save_weights(path)
    model = mlp()
    before = variables(model)
    with pytest.raises(zoo.ZooError, match="its weights are unchanged") as info:
        zoo.load_weights(model, path)
    assert "\n" not in str(info.value)
    for saved, now in zip(before, variables(model), strict=True):
        np.testing.assert_array_equal(saved, now)


def normalized(data, units):
    """A model with a `Normalization` adapted to `data`."""
    normalization = keras.layers.Normalization(name="normalization")
    normalization.adapt(data)
    inputs = keras.Input(data.shape[1:])
    outputs = keras.layers.Dense(units, name="head")(normalization(inputs))
    return keras.Model(inputs, outputs, name="normalized")


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_a_refused_load_leaves_the_model_computing_what_it_did(sandbox, suffix):
    """Keras loads the hostile mean into `Normalization` and caches it
    (`finalize_state`) before it fails on the head; the model computes what it
    did, not only holds the same variables."""
    x = np.linspace(0, 1, 12, dtype="float32").reshape(4, 3)
    hostile = normalized(x * 1000 + 5000, units=3)  # another head: loading fails
    path = sandbox / f"hostile{suffix}"
    hostile.save(path) if suffix == ".keras" else hostile.save_weights(path)
    model, stock = normalized(x, units=2), normalized(x, units=2)
    stock.set_weights(model.get_weights())
    before = keras.ops.convert_to_numpy(model(x))
    with pytest.raises(ValueError):
        stock.load_weights(path)
    assert not np.allclose(keras.ops.convert_to_numpy(stock(x)), before)  # stock Keras
    with pytest.raises(zoo.ZooError, match="its weights are unchanged"):
        zoo.load_weights(model, path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), before)


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_matching_weights_load(sandbox, suffix):
    source = mlp()
    path = sandbox / f"mlp{suffix}"
    source.save(path) if suffix == ".keras" else source.save_weights(path)
    model = zoo.load_weights(mlp(), path)
    for expected, loaded in zip(variables(source), variables(model), strict=True):
        np.testing.assert_array_equal(expected, loaded)


def test_a_mixed_float16_model_loads_with_its_loss_scale_optimizer_and_its_state(sandbox):
    """Keras rebuilds a Sequential or functional model under the global dtype
    policy, which would compile a `mixed_float16` model's optimizer without its
    LossScaleOptimizer and skip loading the saved one's state (its loss scale
    and step count, and the inner optimizer's)."""
    with saving.dtype_policy("mixed_float16"):
        source = mlp()
    source.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    source.fit(np.ones((8, 6, 6, 1)), np.zeros(8), epochs=1, verbose=0)
    zoo.save_model(source, sandbox / "mixed.keras")
    model = zoo.load_model(sandbox / "mixed.keras")
    assert keras.config.dtype_policy().name == "float32"  # put back after loading
    assert model.dtype_policy.name == "mixed_float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    for expected, loaded in zip(source.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded), expected)


def test_load_model_loads_the_bytes_it_checked(sandbox, monkeypatch):
    path = saved_mlp(sandbox / "mlp.keras")
    malicious = lambda_archive(sandbox)
    check = safety.check_keras_archive

    def check_then_swap(data, name):
        config = check(data, name)
        os.replace(malicious, path)  # someone swaps the file after the checks
        return config

    monkeypatch.setattr(safety, "check_keras_archive", check_then_swap)
    assert zoo.load_model(path).name == "mlp"
    assert not (sandbox / "sentinel").exists()


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_load_weights_loads_the_bytes_it_checked(sandbox, monkeypatch, suffix):
    source, swapped = mlp(), mlp()
    for variable in swapped.variables:
        variable.assign(np.ones(variable.shape, variable.dtype))
    path, other = sandbox / f"mlp{suffix}", sandbox / f"other{suffix}"
    for model, name in [(source, path), (swapped, other)]:
        model.save(name) if suffix == ".keras" else model.save_weights(name)
    check = safety.check_keras_archive if suffix == ".keras" else safety.check_weights_h5

    def check_then_swap(data, name):
        check(data, name)
        os.replace(other, path)  # someone swaps the file after the checks

    check_name = "check_keras_archive" if suffix == ".keras" else "check_weights_h5"
    monkeypatch.setattr(safety, check_name, check_then_swap)
    model = zoo.load_weights(mlp(), path)
    for expected, loaded in zip(variables(source), variables(model), strict=True):
        np.testing.assert_array_equal(expected, loaded)


# Run in one fresh process: `evaluate` and `predict` on each file, in turn.
CLI = """
import contextlib, io, json, sys
from training import cli
results = []
for path in sys.argv[1:]:
    for command in (["evaluate"], ["predict", "--dataset", "digits"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main([command[0], "--model-path", path, *command[1:]])
            except SystemExit as exc:
                code = exc.code
        results.append((command[0], path, code, err.getvalue()))
print(json.dumps(results))
"""


def test_the_cli_refuses_every_hostile_file_in_one_line(sandbox):
    paths = [
        *(crafted(sandbox, case) for case in CRAFTED_CONFIGS),
        *(crafted_members(sandbox, case) for case in CRAFTED_MEMBERS),
        *(with_sidecar(sandbox, kind) for kind in SIDECARS),
    ]
    before = tree(sandbox)
    result = subprocess.run(
        [sys.executable, "-c", CLI, *map(str, paths)],
        cwd=pathlib.Path(__file__).parents[2],  # imports this checkout's packages
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.splitlines()[-1])
    assert len(results) == 2 * len(paths)
    for command, path, code, err in results:
        assert code == 2 and err.startswith(f"error: Refusing {path!r}"), (command, err)
        assert err.count("\n") == 1, (command, err)
    assert tree(sandbox) == before
