"""`performance.kernels()` (`training.torch_kernels`, `training.tf_kernels`)
computes what Keras' own paths compute: outputs, gradients and BatchNorm
statistics, for every registered image model, in training and in inference,
channels_last and channels_first.

Both are float32 paths that round differently, so each is held to the same
computation in float64: the torch kernels' relative error (L2) must stay within
twice Keras' own, or within `TOLERANCE`. Where a ReLU input lies within
rounding of zero, either path's rounding can flip that unit's gradient; with
the tiny models' BatchNorms over a few samples, that moves a gradient by up to
0.3% here (Keras' own path: up to 5% for mobilenet_v2). A kernel computing a
different function is off by orders of magnitude more."""

import keras
import numpy as np
import pytest
from tests.support.data_format import image_data_format, randomize_batch_norm
from tests.support.harness import sample_batch
from tests.support.tiny import TINY_KWARGS

import zoo
from training import performance

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(
    BACKEND == "jax", reason="JAX runs Keras' own paths: training has no kernels for it"
)

# TensorFlow's CPU convolutions take channels_last only.
DATA_FORMATS = ["channels_last", "channels_first"] if BACKEND == "torch" else ["channels_last"]

# The floor of the allowed relative error, per part of a step.
TOLERANCE = {"outputs": 1e-6, "gradients": 1e-2, "statistics": 1e-7}

IMAGE_MODELS = [
    name
    for name in zoo.list_models()
    if zoo.model_task(name) in ("classification", "segmentation")
    and len(TINY_KWARGS[name]["input_shape"]) == 3
]


def _run(net, x, y, training):
    """Outputs, the gradient of a loss on them per trainable weight, and the
    non-trainable weights after the step (BatchNorm's moving statistics, which
    move in training), flattened into one float64 array each."""
    outputs, grads = _outputs_and_gradients(net, x, y, training)
    parts = {
        "outputs": [keras.ops.convert_to_numpy(outputs)],
        "gradients": [keras.ops.convert_to_numpy(g) for g in grads],
        "statistics": [w.numpy() for w in net.non_trainable_weights],
    }
    return {
        part: np.concatenate([a.ravel() for a in arrays]).astype("float64")
        for part, arrays in parts.items()
        if arrays
    }


def _outputs_and_gradients(net, x, y, training):
    if BACKEND == "torch":
        import torch

        net.zero_grad()
        outputs = net(x, training=training)
        torch.mean((outputs - y) ** 2).backward()
        return outputs, [w.value.grad for w in net.trainable_weights]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        outputs = net(x, training=training)
        loss = tf.reduce_mean((outputs - y) ** 2)
    return outputs, tape.gradient(loss, net.trainable_variables)


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_as_accurate_as_keras(name, training, data_format):
    kwargs = dict(TINY_KWARGS[name])
    height, width, channels = kwargs["input_shape"]
    with image_data_format(data_format):
        if data_format == "channels_first":
            kwargs["input_shape"] = (channels, height, width)
        keras.utils.set_random_seed(0)
        net = zoo.create_model(name, **kwargs)
        randomize_batch_norm(net)
        rng = np.random.default_rng(2)
        for weight in net.weights:  # biases start at zero, where a lost one would not show
            if weight.path.endswith("bias"):
                weight.assign(rng.normal(0, 0.1, weight.shape).astype("float32"))
        start = [w.numpy() for w in net.weights]
        x = sample_batch(kwargs["input_shape"], "classification", 3)[0]
        y = np.random.default_rng(1).normal(size=net.compute_output_shape(x.shape))
        with zoo.saving.dtype_policy("float64"):
            exact_net = zoo.create_model(name, **kwargs)
            for weight, value in zip(exact_net.weights, start, strict=True):
                weight.assign(value.astype("float64"))
            exact = _run(exact_net, x.astype("float64"), keras.ops.convert_to_tensor(y), training)
        y = keras.ops.convert_to_tensor(y.astype("float32"))
        keras_run = _run(net, x, y, training)
        for weight, value in zip(net.weights, start, strict=True):
            weight.assign(value)
        with performance.kernels():
            ours = _run(net, x, y, training)

    for part, exact_part in exact.items():
        scale = np.linalg.norm(exact_part)
        keras_error = np.linalg.norm(keras_run[part] - exact_part) / scale
        our_error = np.linalg.norm(ours[part] - exact_part) / scale
        assert our_error <= max(2 * keras_error, TOLERANCE[part]), (part, our_error, keras_error)


def _keras_paths():
    if BACKEND == "torch":
        from keras.src.backend.torch import nn as torch_nn
        from keras.src.layers.normalization.batch_normalization import BatchNormalization

        return torch_nn._transpose_spatial_inputs, BatchNormalization.call
    from keras.src.layers.convolutional.base_conv import BaseConv

    return (BaseConv.call,)


def test_keras_paths_are_back_after_the_outermost_block():
    keras_paths = _keras_paths()
    with performance.kernels():
        with performance.kernels():
            pass
        assert _keras_paths() != keras_paths
    assert _keras_paths() == keras_paths
