"""zoo.convert's reader and mapping, without torch (the logits parity against a
real torch ResNet is in test_cross_backend.py)."""

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


def torch_style_zip(path, payload):
    """A file laid out as torch.save writes it, holding an arbitrary pickle."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
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
