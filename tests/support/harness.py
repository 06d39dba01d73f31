"""The shared model test, in the keras-hub style: tiny init kwargs in, every
property a user relies on checked."""

import os

import keras
import numpy as np

import zoo
from training.loop import compile_for_task

BATCH = 5


def sample_batch(model, task, seed=0):
    """A fixed random batch `(x, y)` that fits `model` and its task."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(BATCH, *model.input_shape[1:])).astype("float32")
    if task == "classification":
        y = rng.integers(0, model.output_shape[-1], size=BATCH).astype("int32")
    elif task == "binary_classification":
        y = np.array([0, 1, 0, 1, 1], dtype="int32")
    else:
        y = rng.normal(size=(BATCH, 1)).astype("float32")
    return x, y


def run_model_test(name, init_kwargs, tmp_path):
    """Checks build, output shape, config round-trip, predict, a training step
    and `.keras` save/load for one registered model."""
    task = zoo.model_task(name)
    model = zoo.create_model(name, **init_kwargs)
    assert model.built
    assert model.name == init_kwargs.get("name", name)

    # Output shape: as declared by the model and as its task requires.
    x, y = sample_batch(model, task)
    expected_units = init_kwargs["num_classes"] if task == "classification" else 1
    assert model.output_shape == (None, expected_units)
    spec = model.compute_output_spec(keras.KerasTensor(x.shape))
    predictions = model.predict(x, verbose=0)
    assert predictions.shape == tuple(spec.shape) == (BATCH, expected_units)
    assert np.isfinite(predictions).all()
    if task == "binary_classification":
        assert ((predictions >= 0) & (predictions <= 1)).all()

    # Every layer is named from the model's name, so weights map one to one.
    assert all(layer.name.startswith(f"{model.name}_") for layer in model.layers)

    # Config round-trip: the same architecture, the same function.
    clone = model.__class__.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.predict(x, verbose=0), predictions, atol=1e-6)

    # One training step lowers the loss on its batch.
    compile_for_task(model, task, keras.optimizers.SGD(learning_rate=0.01))
    before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.train_on_batch(x, y)
    after = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(after) and after < before, (before, after)

    # .keras save and load: same weights, same predictions, still compiled.
    path = os.path.join(tmp_path, f"{name}.keras")
    model.save(path)
    loaded = zoo.load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    for saved, restored in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, restored)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert loaded.compiled
