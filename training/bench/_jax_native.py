"""The benchmark models as pure JAX functions over parameter pytrees, trained
by a `jax.jit`-compiled step with a hand-written SGD update.

NHWC images and `jax.lax` convolutions, as a JAX user would write them without
a framework; the step donates its parameters and state, so XLA updates them in
place. Batches are NumPy slices, handed to the step as they are: on CPU that is
faster than slicing device arrays, which dispatches an operation per slice.
For `mixed_bfloat16`, the parameters stay float32 and are cast to bfloat16 in
the forward pass, with the inputs; batch normalisation computes in float32 and
the loss takes float32 logits, as in Keras.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

VARIANTS = ("jit",)
_BN_EPSILON, _BN_MOMENTUM = 1e-5, 0.9


class _Init:
    """He-uniform kernels and zero biases, as nested dicts."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def weight(self, shape, fan_in):
        limit = math.sqrt(6 / fan_in)
        return jnp.asarray(self.rng.uniform(-limit, limit, shape).astype("float32"))

    def dense(self, units_in, units_out):
        return {"w": self.weight((units_in, units_out), units_in), "b": jnp.zeros(units_out)}

    def conv(self, size, channels_in, channels_out):
        return self.weight((size, size, channels_in, channels_out), size * size * channels_in)

    @staticmethod
    def batch_norm(channels):
        params = {"gamma": jnp.ones(channels), "beta": jnp.zeros(channels)}
        return params, {"mean": jnp.zeros(channels), "variance": jnp.ones(channels)}


def _dense(params, x):
    return x @ params["w"] + params["b"]


def _conv(x, kernel, stride, padding):
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _batch_norm(x, params, state, training):
    dtype, x = x.dtype, x.astype(jnp.float32)
    params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    if training:
        mean, variance = jnp.mean(x, axis=(0, 1, 2)), jnp.var(x, axis=(0, 1, 2))
        state = {
            "mean": state["mean"] * _BN_MOMENTUM + mean * (1 - _BN_MOMENTUM),
            "variance": state["variance"] * _BN_MOMENTUM + variance * (1 - _BN_MOMENTUM),
        }
    else:
        mean, variance = state["mean"], state["variance"]
    scale = params["gamma"] * jax.lax.rsqrt(variance + _BN_EPSILON)
    return ((x - mean) * scale + params["beta"]).astype(dtype), state


def _in_precision(apply, dtype):
    """`apply` computing in `dtype` on float32 parameters, to float32 logits."""

    def mixed(params, state, x, training):
        params = jax.tree.map(lambda p: p.astype(dtype), params)
        logits, state = apply(params, state, x.astype(dtype), training)
        return logits.astype(jnp.float32), state

    return mixed


def _mlp(input_shape, num_classes, hidden_units=(128,), seed=0):
    init = _Init(seed)
    widths = [math.prod(input_shape), *hidden_units, num_classes]
    params = [init.dense(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]

    def apply(params, state, x, training):
        x = x.reshape(len(x), -1)
        for layer in params[:-1]:
            x = jax.nn.relu(_dense(layer, x))
        return _dense(params[-1], x), state

    return apply, params, {}


def _simple_cnn(input_shape, num_classes, seed=0):
    init = _Init(seed)
    height, width, channels = input_shape
    params = {
        "conv": {"w": init.conv(3, channels, 32), "b": jnp.zeros(32)},
        "hidden": init.dense(32 * ((height - 2) // 2) * ((width - 2) // 2), 64),
        "logits": init.dense(64, num_classes),
    }

    def apply(params, state, x, training):
        x = jax.nn.relu(_conv(x, params["conv"]["w"], 1, "VALID") + params["conv"]["b"])
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        x = jax.nn.relu(_dense(params["hidden"], x.reshape(len(x), -1)))
        return _dense(params["logits"], x), state

    return apply, params, {}


def _resnet18(input_shape, num_classes, stem="small", seed=0):
    """ResNet-18 with the 3x3 stride-1 stem and no max pool, for 32x32 images."""
    if stem != "small":
        raise ValueError(f"Expected stem='small' for the native ResNet-18. Received: {stem!r}")
    init = _Init(seed)
    params, state = {"stem": init.conv(3, input_shape[-1], 64)}, {}
    params["stem_bn"], state["stem_bn"] = init.batch_norm(64)
    strides, width = [], 64
    for stage in range(4):
        filters = 64 * 2**stage
        for index in range(2):
            name, stride = f"block{stage}_{index}", 2 if stage and not index else 1
            block, block_state = (
                {
                    "conv1": init.conv(3, width, filters),
                    "conv2": init.conv(3, filters, filters),
                },
                {},
            )
            block["bn1"], block_state["bn1"] = init.batch_norm(filters)
            block["bn2"], block_state["bn2"] = init.batch_norm(filters)
            if stride != 1 or width != filters:
                block["down"] = init.conv(1, width, filters)
                block["down_bn"], block_state["down_bn"] = init.batch_norm(filters)
            params[name], state[name] = block, block_state
            strides.append((name, stride))
            width = filters
    params["fc"] = init.dense(width, num_classes)

    def conv_bn(x, kernel, stride, bn, bn_state, training):
        pad = kernel.shape[0] // 2
        y, bn_state = _batch_norm(
            _conv(x, kernel, stride, [(pad, pad)] * 2), bn, bn_state, training
        )
        return y, bn_state

    def apply(params, state, x, training):
        new_state = {}
        x, new_state["stem_bn"] = conv_bn(
            x, params["stem"], 1, params["stem_bn"], state["stem_bn"], training
        )
        x = jax.nn.relu(x)
        for name, stride in strides:
            p, s, n = params[name], state[name], {}
            y, n["bn1"] = conv_bn(x, p["conv1"], stride, p["bn1"], s["bn1"], training)
            y, n["bn2"] = conv_bn(jax.nn.relu(y), p["conv2"], 1, p["bn2"], s["bn2"], training)
            if "down" in p:
                x, n["down_bn"] = conv_bn(
                    x, p["down"], stride, p["down_bn"], s["down_bn"], training
                )
            x, new_state[name] = jax.nn.relu(y + x), n
        return _dense(params["fc"], jnp.mean(x, axis=(1, 2))), new_state

    return apply, params, state


BUILDERS = {"mlp": _mlp, "simple_cnn": _simple_cnn, "resnet18": _resnet18}


class Native:
    """One model, its data as device arrays and SGD; arguments as in `_torch_native`."""

    def __init__(self, model, model_kwargs, x, y, loop):
        apply, self.params, self.state = BUILDERS[model](**model_kwargs, seed=loop.seed)
        if loop.precision == "mixed_bfloat16":
            apply = _in_precision(apply, jnp.bfloat16)
        self.x, self.y = x, y.astype("int32")
        self.batch_size = loop.batch_size
        self.rng = np.random.default_rng(loop.seed)

        def loss_fn(params, state, x, y):
            logits, state = apply(params, state, x, training=True)
            log_probs = jax.nn.log_softmax(logits)
            return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1)), state

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def train_step(params, state, x, y):
            (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
            params = jax.tree.map(lambda p, g: p - loop.learning_rate * g, params, grads)
            return params, state, loss

        self.train_step = train_step
        self.predict_step = jax.jit(lambda params, state, x: apply(params, state, x, False)[0])

    def weight_sizes(self):
        def sizes(tree):
            return sorted(int(leaf.size) for leaf in jax.tree.leaves(tree))

        return sizes(self.params), sizes(self.state)

    def train_epoch(self):
        order = self.rng.permutation(len(self.x))
        x, y = self.x[order], self.y[order]
        for start in range(0, len(x), self.batch_size):
            end = start + self.batch_size
            self.params, self.state, loss = self.train_step(
                self.params, self.state, x[start:end], y[start:end]
            )
        loss.block_until_ready()

    def predict_epoch(self):
        outputs = [
            self.predict_step(self.params, self.state, self.x[start : start + self.batch_size])
            for start in range(0, len(self.x), self.batch_size)
        ]
        return np.asarray(jnp.concatenate(outputs))

    def predict_calls(self, calls):
        """Predicts the first `calls` samples one call each."""
        for i in range(calls):
            np.asarray(self.predict_step(self.params, self.state, self.x[i : i + 1]))
