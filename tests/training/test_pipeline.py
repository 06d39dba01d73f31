"""`training.pipeline`: the batches `fit` reads, in each epoch's order, and a
user's own data: image folders read a batch at a time, and pipelines that
`model.fit` takes as they are."""

import importlib.util
import json

import keras
import numpy as np
import pytest
from images import image_folder
from runs import interrupt

import training
from training import files, pipeline
from training.data import Dataset, load_dataset
from zoo import ZooError

BACKEND = keras.backend.backend()
RUN = dict(epochs=2, verbose=0, model_kwargs={"hidden_units": (16,), "num_classes": 10})


def _batches(x):
    if isinstance(x, keras.utils.PyDataset):
        return [x[i] for i in range(len(x))]
    return [(bx.numpy(), by.numpy()) for bx, by in x]  # a tf.data.Dataset


def test_each_epoch_takes_the_samples_in_its_seed_and_epoch_order():
    x = np.arange(10 * 3, dtype="float32").reshape(10, 3)
    y = np.arange(10, dtype="int32")
    data = Dataset("toy", x, y, x[:2], y[:2], x[:2], y[:2], 10)
    inputs = pipeline.training_inputs(data, 4, seed=7, epoch=3)
    assert inputs.steps == 3 and inputs.arguments["shuffle"] is False
    (follow,) = inputs.callbacks
    for epoch in (3, 4):
        follow.on_epoch_begin(epoch)
        batches = _batches(inputs.arguments["x"])
        assert [len(bx) for bx, _ in batches] == [4, 4, 2]
        order = pipeline.epoch_order(7, epoch, 10)
        np.testing.assert_array_equal(np.concatenate([bx for bx, _ in batches]), x[order])
        np.testing.assert_array_equal(np.concatenate([by for _, by in batches]), y[order])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's tf.data batches")
def test_tensorflow_batches_are_not_autotuned():
    # Dropping an autotuned iterator waits for its tuning thread to wake, and
    # Keras drops one at every epoch's start: up to seconds of nothing.
    x, y = np.zeros((10, 3), "float32"), np.zeros(10, "int32")
    data = Dataset("toy", x, y, x[:2], y[:2], x[:2], y[:2], 10)
    options = pipeline.training_inputs(data, 4, seed=7).arguments["x"].options()
    assert options.autotune.enabled is False
    assert options.experimental_optimization.inject_prefetch is False


def test_a_folder_larger_than_the_bound_trains_a_batch_at_a_time(tmp_path, monkeypatch):
    folder = image_folder(tmp_path / "photos", per_class=20, size=8)
    monkeypatch.setattr(files, "MAX_IN_MEMORY_BYTES", 60 * 8 * 8 * 3 * 4 - 1)  # all 60 images
    decoded = []
    decode = files.ImageFiles.decode
    monkeypatch.setattr(
        files.ImageFiles, "decode", lambda self: decoded.append(len(self)) or decode(self)
    )
    run = dict(epochs=2, batch_size=8, output_dir=str(tmp_path / "run"), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        training.fit("mlp", str(folder), keras_callbacks=[interrupt(at=1)], **run)
    assert decoded and max(decoded) <= 8  # never the whole folder

    (folder / "owl" / "1.png").rename(folder / "owl" / "renamed.png")
    with pytest.raises(ZooError, match="holds an interrupted run on .*photos.*changed since"):
        training.fit("mlp", str(folder), **run)
    (folder / "owl" / "renamed.png").rename(folder / "owl" / "1.png")
    result = training.fit("mlp", str(folder), **run)
    assert len(result.history["loss"]) == 2 and result.metrics["test_accuracy"] >= 0
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert data["path"] == str(folder) and data["fingerprint"].startswith("60 files")


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


def _pipelines(kind):
    """Training and validation pipelines of `kind` over digits, and its test split."""
    data = load_dataset("digits")
    train, validation = (data.x_train, data.y_train), (data.x_val, data.y_val)
    if kind == "PyDataset":
        return _Batches(*train, 32), _Batches(*validation, 32), (data.x_test, data.y_test)
    if kind == "tf.data":
        import tensorflow as tf

        return (
            tf.data.Dataset.from_tensor_slices(train).batch(32),
            tf.data.Dataset.from_tensor_slices(validation).batch(32),
            tf.data.Dataset.from_tensor_slices((data.x_test, data.y_test)).batch(32),
        )
    import torch

    def loader(arrays, shuffle):
        tensors = torch.utils.data.TensorDataset(*map(torch.from_numpy, arrays))
        return torch.utils.data.DataLoader(tensors, batch_size=32, shuffle=shuffle)

    return loader(train, True), loader(validation, False), (data.x_test, data.y_test)


# What each backend reads, with whether a resumed run is exact: Keras shuffles
# a PyDataset's batches with Python's `random`, seeded per epoch; a shuffling
# DataLoader draws from torch's global generator, which a checkpoint carries on
# torch.
KINDS = [("PyDataset", True)] + {
    "tensorflow": [("tf.data", True)],
    "torch": [("DataLoader", True)],
    "jax": [],
}[BACKEND]


@pytest.mark.parametrize("kind, exact", KINDS, ids=[kind for kind, _ in KINDS])
def test_a_pipeline_trains_as_it_is_and_resumes(kind, exact, tmp_path):
    train, validation, test = _pipelines(kind)
    run = dict(validation_data=validation, test_data=test, **RUN)
    straight = training.fit("mlp", train, output_dir=str(tmp_path / "straight"), **run)
    assert set(straight.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert straight.metrics["test_accuracy"] > 0.5

    output_dir = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        training.fit("mlp", train, output_dir=output_dir, keras_callbacks=[interrupt(at=1)], **run)
    counter = interrupt()
    resumed = training.fit("mlp", train, output_dir=output_dir, keras_callbacks=[counter], **run)
    assert counter.epochs == 1 and len(resumed.history["loss"]) == 2
    if exact:
        np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"], rtol=1e-6)
        for want, got in zip(
            straight.model.get_weights(), resumed.model.get_weights(), strict=True
        ):
            np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("grain") is None, reason="grain is not installed")
def test_a_grain_loader_trains_as_it_is():
    import grain

    data = load_dataset("digits")
    train = grain.MapDataset.source(list(zip(data.x_train, data.y_train, strict=True))).batch(32)
    result = training.fit("mlp", train, **RUN)
    assert len(result.history["loss"]) == 2 and result.metrics == {}


def test_a_zoo_model_needs_its_classes_for_a_pipeline():
    train, _, _ = _pipelines("PyDataset")
    with pytest.raises(ZooError, match="Expected model_kwargs .* to give num_classes for 'mlp'"):
        training.fit("mlp", train, epochs=1)
