"""The shared model test, in the keras-hub style: tiny init kwargs in, every
property a user relies on checked."""

import os

import keras
import numpy as np
from keras import ops

import zoo
from training.loop import compile_for_task
from zoo.steps import OptimizerGroup

BATCH = 5

# Trainable weights whose gradient is exactly zero by design, and why.
ZERO_GRADIENT = {
    "wgan_gp_discriminator_score/bias": "the Wasserstein loss does not change when every "
    "critic score shifts by the same constant, and the gradient penalty depends on input "
    "gradients only",
}


def sample_batch(input_shape, task, num_classes=None, vocab_size=None, seed=0):
    """A fixed random batch `(x, y)` for a model's input shape and task; `y` is
    `None` for tasks without targets. With a `vocab_size`, `x` holds tokens."""
    rng = np.random.default_rng(seed)
    if vocab_size:
        x = rng.integers(0, vocab_size, size=(BATCH, *input_shape)).astype("int32")
    else:
        x = rng.uniform(0, 1, size=(BATCH, *input_shape)).astype("float32")
    if task == "language_modeling":
        y = rng.integers(0, vocab_size, size=(BATCH, *input_shape)).astype("int32")
    elif task == "segmentation":
        channels_last = keras.config.image_data_format() == "channels_last"
        pixels = input_shape[:2] if channels_last else input_shape[1:]
        y = rng.integers(0, num_classes, size=(BATCH, *pixels)).astype("int32")
    elif task == "binary_classification":
        y = np.array([0, 1, 0, 1, 1], dtype="float32").reshape(-1, 1)
    elif task == "regression":
        y = rng.normal(size=(BATCH, 1)).astype("float32")
    elif num_classes:
        y = rng.integers(0, num_classes, size=BATCH).astype("int32")
    else:
        y = None
    return x, y


def layer_names(model):
    """Every layer's name inside `model`, sub-models' layers included."""
    names = []
    for layer in getattr(model, "layers", []):
        names += [layer.name, *layer_names(layer)]
    # Subclassed models hold their sub-models as attributes, not `layers`.
    for key, attr in vars(model).items():
        if not key.startswith("_") and isinstance(attr, keras.Model) and attr.name not in names:
            names += [attr.name, *layer_names(attr)]
    return names


def run_model_test(name, init_kwargs, tmp_path):
    """Checks build, output shape, a `mixed_bfloat16` forward pass, config
    round-trip, predict, a gradient for every trainable weight, training steps
    and `.keras` save/load for one registered model."""
    task = zoo.model_task(name)
    # Seeded: tests run in any order, on any xdist worker, and a model's
    # initial weights must not depend on what ran before it.
    keras.utils.set_random_seed(0)
    model = zoo.create_model(name, **init_kwargs)
    assert model.built
    assert model.name == init_kwargs.get("name", name)
    x, y = sample_batch(
        init_kwargs["input_shape"],
        task,
        init_kwargs.get("num_classes"),
        init_kwargs.get("vocab_size"),
    )

    # Output shape: as the model declares it and, for predictors, as the task needs.
    spec = model.compute_output_spec(keras.KerasTensor(x.shape, dtype=x.dtype))
    predictions = model.predict(x, verbose=0)
    assert predictions.shape == tuple(spec.shape)
    assert np.isfinite(predictions).all()
    if task in ("classification", "distillation", "self_supervised"):
        assert predictions.shape == (BATCH, init_kwargs["num_classes"])
    elif task in ("binary_classification", "regression"):
        assert predictions.shape == (BATCH, 1)
    elif task == "language_modeling":
        assert predictions.shape == (*x.shape, init_kwargs["vocab_size"])
    elif task == "segmentation":
        assert predictions.shape == (*y.shape, init_kwargs["num_classes"]) or (
            keras.config.image_data_format() == "channels_first"
            and predictions.shape == (BATCH, init_kwargs["num_classes"], *y.shape[1:])
        )
    if task == "binary_classification":
        assert ((predictions >= 0) & (predictions <= 1)).all()

    assert_mixed_bfloat16_forward(name, init_kwargs, x)

    # Every layer is named from the model's name, so weights map one to one.
    names = layer_names(model)
    assert names and all(n.startswith(f"{model.name}_") for n in names), names

    # Config round-trip: the same architecture, the same function.
    clone = model.__class__.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.predict(x, verbose=0), predictions, atol=1e-6)

    # One training step, compiled as `fit` runs it: every trainable weight
    # gets a gradient (timm's test_model_backward), as the model's own step
    # computes it (Keras' trainer, or a custom step's value_and_grad).
    compile_for_task(model, task, GradientProbe(learning_rate=1e-2))
    first = model.train_on_batch(x, y, return_dict=True)
    gradients = probed_gradients(model)
    for variable in model.trainable_variables:
        if variable.path not in ZERO_GRADIENT:
            assert id(variable) in gradients, f"{variable.path} gets no gradient"
            assert np.any(gradients[id(variable)]), f"{variable.path}'s gradient is zero"

    # Ten training steps lower the loss on their batch, measured in training
    # mode (inference-mode BatchNorm would also see its moving statistics
    # move). Not one tiny step: BatchNorm over a few near-equal values (tiny
    # inputs reach 1x1 maps) is noisier in float32 than such a step's gain.
    # Custom-step models have their own tests of which way each loss moves.
    if task not in ("generative", "distillation", "self_supervised"):
        before = float(first["loss"])
        for _ in range(9):
            model.train_on_batch(x, y)
        model.reset_metrics()  # the loss below is that of the 11th batch alone
        after = float(model.train_on_batch(x, y, return_dict=True)["loss"])
        assert np.isfinite(after) and after < before, (before, after)
    # Saved with a Keras optimizer: safe loading refuses the test's own class.
    compile_for_task(model, task, keras.optimizers.SGD(learning_rate=1e-2))

    # .keras save and load: same weights, same predictions, still compiled.
    path = os.path.join(tmp_path, f"{name}.keras")
    model.save(path)
    loaded = zoo.load_model(path)
    assert layer_names(loaded) == layer_names(model)
    for saved, restored in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, restored)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert loaded.compiled


class GradientProbe(keras.optimizers.SGD):
    """SGD that keeps the absolute value of the last gradient it applied to
    each variable, so that a test reads the gradients of the model's own
    compiled training step on any backend (inside `jax.jit` as well)."""

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # Ids, not the variables: an optimizer tracks the variables it holds as its own.
        self.probed = [id(variable) for variable in variables]
        self.gradients = [self.add_variable_from_reference(v, name="gradient") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        slot = self.gradients[self._get_variable_index(variable)]
        slot.assign(ops.stop_gradient(ops.abs(ops.convert_to_tensor(gradient))))
        super().update_step(gradient, variable, learning_rate)


def probed_gradients(model):
    """`{id(variable): |gradient|}` from the `GradientProbe`s of a model
    compiled with one (one per optimizer group of a custom-step model)."""
    optimizer = model.optimizer
    probes = optimizer.members.values() if isinstance(optimizer, OptimizerGroup) else [optimizer]
    return {
        key: ops.convert_to_numpy(slot)
        for probe in probes
        for key, slot in zip(probe.probed, probe.gradients, strict=True)
    }


def assert_mixed_bfloat16_forward(name, init_kwargs, x):
    """keras-hub's precision test: built under `mixed_bfloat16`, the model
    keeps float32 variables, computes in bfloat16, and its outputs are finite."""
    with zoo.saving.dtype_policy("mixed_bfloat16"):
        model = zoo.create_model(name, **init_kwargs)
    floats = {v.path: v.dtype for v in model.variables if "float" in v.dtype}
    assert floats and set(floats.values()) == {"float32"}, floats
    # predict compiles the whole forward pass once, where JAX would compile a
    # kernel per operation for a direct call; it keeps the outputs' dtype.
    outputs = model.predict(x, verbose=0)
    assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
    assert np.isfinite(outputs.astype("float32")).all()
