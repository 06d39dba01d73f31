"""Files the zoo writes for sharing are written atomically with a sha256
sidecar, and loading refuses a file that does not match it."""

import hashlib
import os
import re
import shutil
import subprocess

import h5py
import keras
import numpy as np
import pytest

import zoo
from training import outputs


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return zoo.create_model("mlp", input_shape=(6, 6, 1), num_classes=4, hidden_units=(8,))


def variables(model):
    return [keras.ops.convert_to_numpy(v) for v in model.variables]


def assert_same(a, b):
    for x, y in zip(variables(a), variables(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_save_weights_writes_a_sha256sum_sidecar_and_load_weights_checks_it(tmp_path):
    source = mlp(seed=1)
    path = tmp_path / "mlp.weights.h5"
    zoo.save_weights(source, path)
    sidecar = (tmp_path / "mlp.weights.h5.sha256").read_text()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sidecar == f"{digest}  mlp.weights.h5\n"
    assert sorted(os.listdir(tmp_path)) == ["mlp.weights.h5", "mlp.weights.h5.sha256"]
    assert_same(zoo.load_weights(mlp(seed=2), path), source)


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils' sha256sum")
def test_the_sidecar_checks_with_sha256sum(tmp_path):
    zoo.save_weights(mlp(), tmp_path / "mlp.weights.h5")
    result = subprocess.run(
        ["sha256sum", "-c", "mlp.weights.h5.sha256"], cwd=tmp_path, capture_output=True
    )
    assert result.returncode == 0, result.stdout


def tamper_weights(path):
    """Changes one weight; the file stays a valid weights file."""
    with h5py.File(path, "a") as h5:
        names = []
        h5.visititems(lambda n, item: names.append(n) if isinstance(item, h5py.Dataset) else None)
        h5[names[0]][...] += 1.0


@pytest.mark.parametrize("save", ["save_weights", "save_model"])
def test_a_file_changed_after_saving_is_refused(tmp_path, save):
    source = mlp(seed=1)
    if save == "save_weights":
        path = tmp_path / "mlp.weights.h5"
        zoo.save_weights(source, path)
        tamper_weights(path)
    else:
        path = tmp_path / "mlp.keras"
        zoo.save_model(source, path)
        data = bytearray(path.read_bytes())
        data[-30] ^= 0x01  # in the zip's central directory
        path.write_bytes(data)
    model = mlp(seed=2)
    before = variables(model)
    with pytest.raises(zoo.ZooError, match=r"its sha256 does not match .*\.sha256'") as info:
        zoo.load_weights(model, path)
    assert "\n" not in str(info.value)
    for x, y in zip(before, variables(model), strict=True):
        np.testing.assert_array_equal(x, y)
    if save == "save_model":
        with pytest.raises(zoo.ZooError, match="its sha256 does not match"):
            zoo.load_model(path)


@pytest.mark.parametrize("sidecar", ["", "not a digest\n", "abc  mlp.weights.h5\n"])
def test_a_malformed_sidecar_is_refused(tmp_path, sidecar):
    path = tmp_path / "mlp.weights.h5"
    zoo.save_weights(mlp(), path)
    (tmp_path / "mlp.weights.h5.sha256").write_text(sidecar)
    with pytest.raises(zoo.ZooError, match="is not a sha256sum line"):
        zoo.load_weights(mlp(), path)


def test_a_sidecar_of_another_file_is_refused(tmp_path):
    zoo.save_weights(mlp(seed=1), tmp_path / "a.weights.h5")
    zoo.save_weights(mlp(seed=2), tmp_path / "b.weights.h5")
    os.replace(tmp_path / "b.weights.h5.sha256", tmp_path / "a.weights.h5.sha256")
    with pytest.raises(zoo.ZooError, match="its sha256 does not match"):
        zoo.load_weights(mlp(), tmp_path / "a.weights.h5")


def test_files_without_a_sidecar_still_load(tmp_path):
    source = mlp(seed=1)
    source.save(tmp_path / "plain.keras")
    source.save_weights(tmp_path / "plain.weights.h5")
    assert_same(zoo.load_model(tmp_path / "plain.keras"), source)
    assert_same(zoo.load_weights(mlp(seed=2), tmp_path / "plain.weights.h5"), source)


def failing_midway(save):
    """A save that writes half a file, then fails."""

    def broken(path):
        save(path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise OSError("disk full")

    return broken


@pytest.mark.parametrize("kind", ["weights", "model"])
def test_a_save_that_fails_midway_leaves_nothing_under_the_final_name(tmp_path, kind):
    model = mlp()
    name = "mlp.weights.h5" if kind == "weights" else "mlp.keras"
    if kind == "weights":
        model.save_weights = failing_midway(model.save_weights)
    else:
        model.save = failing_midway(model.save)
    with pytest.raises(OSError, match="disk full"):
        (zoo.save_weights if kind == "weights" else zoo.save_model)(model, tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_a_failed_overwrite_keeps_the_previous_file_and_sidecar(tmp_path):
    path = tmp_path / "mlp.weights.h5"
    first = mlp(seed=1)
    zoo.save_weights(first, path)
    saved = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    second = mlp(seed=2)
    second.save_weights = failing_midway(second.save_weights)
    with pytest.raises(OSError, match="disk full"):
        zoo.save_weights(second, path)
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == saved
    assert_same(zoo.load_weights(mlp(seed=3), path), first)


@pytest.mark.parametrize("crash_at, survivor", [(1, "first"), (2, "second")])
def test_an_overwrite_that_crashes_between_its_moves_leaves_a_file_that_loads(
    tmp_path, monkeypatch, crash_at, survivor
):
    path = tmp_path / "mlp.weights.h5"
    saved = {"first": mlp(seed=1), "second": mlp(seed=2)}
    zoo.save_weights(saved["first"], path)
    replace, moves = os.replace, []

    def crashing_replace(src, dst):
        if os.path.dirname(os.fspath(dst)) == str(tmp_path):
            moves.append(dst)
            if len(moves) == crash_at:
                raise OSError("power cut")  # nothing after this move runs
        replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="power cut"):
        zoo.save_weights(saved["second"], path)
    monkeypatch.undo()
    assert_same(zoo.load_weights(mlp(seed=3), path), saved[survivor])


@pytest.mark.parametrize(
    "save, name", [(zoo.save_weights, "mlp.h5"), (zoo.save_model, "mlp.weights.h5")]
)
def test_save_needs_the_right_suffix(tmp_path, save, name):
    with pytest.raises(zoo.ZooError, match="Expected a path ending in"):
        save(mlp(), tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_training_outputs_write_a_model_with_a_sidecar(tmp_path):
    path = tmp_path / "model.keras"
    outputs.save_model(mlp(), path)
    line = (tmp_path / "model.keras.sha256").read_text()
    assert re.fullmatch(r"[0-9a-f]{64}  model\.keras\n", line)
    assert line.split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    zoo.load_model(path)
