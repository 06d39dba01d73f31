"""The benchmark models as `tf.Module`s, trained with `GradientTape` under
`tf.function`, with XLA (variant `"xla"`) and without (`"graph"`).

NHWC images, `tf.nn` ops and a hand-written SGD update, as a TensorFlow user
would write them without Keras. For `mixed_bfloat16`, weights stay float32 and
are cast to bfloat16 where they are used, with the inputs; batch normalisation
computes in float32 and the loss takes float32 logits, as in Keras.
"""

import math

import numpy as np
import tensorflow as tf

VARIANTS = ("graph", "xla")
_BN_EPSILON, _BN_MOMENTUM = 1e-5, 0.9


class _Layers(tf.Module):
    """Creates variables with He-uniform kernels and zero biases."""

    def __init__(self, seed, compute_dtype=tf.float32):
        super().__init__()
        self._rng = np.random.default_rng(seed)
        self.trainable, self.state = [], []
        self.compute_dtype = compute_dtype

    def read(self, variable):
        """A weight in the compute dtype."""
        return tf.cast(variable, self.compute_dtype)

    def weight(self, shape, fan_in):
        limit = math.sqrt(6 / fan_in)
        value = self._rng.uniform(-limit, limit, shape).astype("float32")
        self.trainable.append(tf.Variable(value))
        return self.trainable[-1]

    def zeros(self, shape, trainable=True):
        variable = tf.Variable(tf.zeros(shape), trainable=trainable)
        (self.trainable if trainable else self.state).append(variable)
        return variable

    def dense(self, units_in, units_out):
        return self.weight((units_in, units_out), units_in), self.zeros((units_out,))

    def conv(self, size, channels_in, channels_out):
        return self.weight((size, size, channels_in, channels_out), size * size * channels_in)

    def batch_norm(self, channels):
        gamma = tf.Variable(tf.ones((channels,)))
        self.trainable.append(gamma)
        beta = self.zeros((channels,))
        mean = self.zeros((channels,), trainable=False)
        variance = tf.Variable(tf.ones((channels,)), trainable=False)
        self.state.append(variance)
        return gamma, beta, mean, variance


def _batch_norm(x, params, training):
    dtype, x = x.dtype, tf.cast(x, tf.float32)
    gamma, beta, moving_mean, moving_variance = params
    if training:
        mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
        moving_mean.assign(moving_mean * _BN_MOMENTUM + mean * (1 - _BN_MOMENTUM))
        moving_variance.assign(moving_variance * _BN_MOMENTUM + variance * (1 - _BN_MOMENTUM))
    else:
        mean, variance = moving_mean, moving_variance
    return tf.cast(tf.nn.batch_normalization(x, mean, variance, beta, gamma, _BN_EPSILON), dtype)


def _conv(x, kernel, stride):
    if stride > 1 and kernel.shape[0] > 1:  # torch-style symmetric padding
        pad = kernel.shape[0] // 2
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        return tf.nn.conv2d(x, kernel, stride, "VALID")
    return tf.nn.conv2d(x, kernel, stride, "SAME")


class _MLP(_Layers):
    def __init__(self, input_shape, num_classes, hidden_units=(128,), seed=0, **kwargs):
        super().__init__(seed, **kwargs)
        widths = [math.prod(input_shape), *hidden_units, num_classes]
        self.layers = [self.dense(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]

    def __call__(self, x, training):
        x = tf.reshape(tf.cast(x, self.compute_dtype), (tf.shape(x)[0], -1))
        for kernel, bias in self.layers[:-1]:
            x = tf.nn.relu(x @ self.read(kernel) + self.read(bias))
        kernel, bias = self.layers[-1]
        return tf.cast(x @ self.read(kernel) + self.read(bias), tf.float32)


class _SimpleCNN(_Layers):
    def __init__(self, input_shape, num_classes, seed=0, **kwargs):
        super().__init__(seed, **kwargs)
        height, width, channels = input_shape
        self.conv_kernel, self.conv_bias = self.conv(3, channels, 32), self.zeros((32,))
        self.hidden = self.dense(32 * ((height - 2) // 2) * ((width - 2) // 2), 64)
        self.logits = self.dense(64, num_classes)

    def __call__(self, x, training):
        x = tf.cast(x, self.compute_dtype)
        x = tf.nn.conv2d(x, self.read(self.conv_kernel), 1, "VALID")
        x = tf.nn.max_pool2d(tf.nn.relu(x + self.read(self.conv_bias)), 2, 2, "VALID")
        x = tf.reshape(x, (tf.shape(x)[0], -1))
        x = tf.nn.relu(x @ self.read(self.hidden[0]) + self.read(self.hidden[1]))
        return tf.cast(x @ self.read(self.logits[0]) + self.read(self.logits[1]), tf.float32)


class _ResNet18Small(_Layers):
    """ResNet-18 with the 3x3 stride-1 stem and no max pool, for 32x32 images."""

    def __init__(self, input_shape, num_classes, stem="small", seed=0, **kwargs):
        super().__init__(seed, **kwargs)
        if stem != "small":
            raise ValueError(f"Expected stem='small' for the native ResNet-18. Received: {stem!r}")
        self.stem = (self.conv(3, input_shape[-1], 64), self.batch_norm(64))
        self.blocks, width = [], 64
        for stage in range(4):
            filters = 64 * 2**stage
            for index in range(2):
                stride = 2 if stage and not index else 1
                block = {
                    "stride": stride,
                    "conv1": self.conv(3, width, filters),
                    "bn1": self.batch_norm(filters),
                    "conv2": self.conv(3, filters, filters),
                    "bn2": self.batch_norm(filters),
                }
                if stride != 1 or width != filters:
                    block["down"] = (self.conv(1, width, filters), self.batch_norm(filters))
                self.blocks.append(block)
                width = filters
        self.fc = self.dense(width, num_classes)

    def __call__(self, x, training):
        kernel, bn = self.stem
        x = tf.cast(x, self.compute_dtype)
        x = tf.nn.relu(_batch_norm(_conv(x, self.read(kernel), 1), bn, training))
        for block in self.blocks:
            y = _conv(x, self.read(block["conv1"]), block["stride"])
            y = tf.nn.relu(_batch_norm(y, block["bn1"], training))
            y = _batch_norm(_conv(y, self.read(block["conv2"]), 1), block["bn2"], training)
            if "down" in block:
                kernel, bn = block["down"]
                x = _batch_norm(_conv(x, self.read(kernel), block["stride"]), bn, training)
            x = tf.nn.relu(y + x)
        x = tf.reduce_mean(x, axis=[1, 2])
        return tf.cast(x @ self.read(self.fc[0]) + self.read(self.fc[1]), tf.float32)


BUILDERS = {"mlp": _MLP, "simple_cnn": _SimpleCNN, "resnet18": _ResNet18Small}


class Native:
    """One model, its data as tensors and SGD; arguments as in `_torch_native`."""

    def __init__(self, model, model_kwargs, x, y, loop):
        dtype = tf.bfloat16 if loop.precision == "mixed_bfloat16" else tf.float32
        self.module = BUILDERS[model](**model_kwargs, seed=loop.seed, compute_dtype=dtype)
        self.x, self.y = tf.constant(x), tf.constant(y.astype("int32"))
        self.batch_size = loop.batch_size
        self.rng = np.random.default_rng(loop.seed)
        jit = loop.variant == "xla"
        variables = self.module.trainable

        @tf.function(jit_compile=jit)
        def train_step(x, y):
            with tf.GradientTape() as tape:
                logits = self.module(x, training=True)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
                )
            for variable, grad in zip(variables, tape.gradient(loss, variables), strict=True):
                variable.assign_sub(loop.learning_rate * grad)
            return loss

        self.train_step = train_step
        self.predict_step = tf.function(lambda x: self.module(x, training=False), jit_compile=jit)

    def weight_sizes(self):
        def sizes(variables):
            return sorted(int(np.prod(v.shape)) for v in variables)

        return sizes(self.module.trainable), sizes(self.module.state)

    def train_epoch(self):
        order = tf.constant(self.rng.permutation(len(self.x)))
        x, y = tf.gather(self.x, order), tf.gather(self.y, order)
        for start in range(0, len(x), self.batch_size):
            loss = self.train_step(
                x[start : start + self.batch_size], y[start : start + self.batch_size]
            )
        loss.numpy()  # waits for the last step

    def predict_epoch(self):
        outputs = [
            self.predict_step(self.x[start : start + self.batch_size])
            for start in range(0, len(self.x), self.batch_size)
        ]
        return tf.concat(outputs, axis=0).numpy()

    def predict_calls(self, calls):
        """Predicts the first `calls` samples one call each."""
        for i in range(calls):
            self.predict_step(self.x[i : i + 1]).numpy()
