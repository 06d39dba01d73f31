"""Building a model in channels_first and checking it computes what the
channels_last model does."""

import contextlib

import keras
import numpy as np

import zoo


@contextlib.contextmanager
def image_data_format(data_format):
    """Sets `keras.config.image_data_format()` inside the block, then restores it."""
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        yield
    finally:
        keras.config.set_image_data_format(previous)


def randomize_batch_norm(model, seed=0):
    """Gives every BatchNorm non-trivial statistics and affine weights, so that
    a BatchNorm on the wrong axis shows in the outputs."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        last = variable.path.rsplit("/", 1)[-1]
        if last == "moving_variance":
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype("float32"))
        elif last in ("moving_mean", "beta"):
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))
        elif last == "gamma":
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))


def assert_channels_first_matches(name, **kwargs):
    """Builds `name` in channels_last (`kwargs["input_shape"]` is HWC) and in
    channels_first, gives the latter the former's weights (Keras kernels do not
    depend on the data format) and checks both give the same outputs.

    Returns:
        The channels_first model.
    """
    model = zoo.create_model(name, **kwargs)
    randomize_batch_norm(model)
    height, width, channels = kwargs["input_shape"]
    x = np.random.default_rng(1).uniform(0, 1, (2, height, width, channels)).astype("float32")
    expected = model.predict(x, verbose=0)
    with image_data_format("channels_first"):
        transposed = zoo.create_model(name, **{**kwargs, "input_shape": (channels, height, width)})
        transposed.set_weights(model.get_weights())
        outputs = transposed.predict(x.transpose(0, 3, 1, 2), verbose=0)
    if outputs.ndim == 4:  # feature maps and segmentation logits: channels first
        outputs = outputs.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(outputs, expected, atol=1e-4)
    return transposed
