"""`training.predict` on torch: the model's forward pass traced once per input
signature with `torch.jit.trace`, run under `torch.inference_mode()`.

Keras' `predict` spends most of a small model's batch in Python: its data
adapter, callbacks and tree maps, and `Layer.__call__` for every layer
(argument binding, converting each variable, autocasting). A trace records the
torch ops that one call ran, and replays them without that Python. Its weights
are arguments, not constants, so a trace stays right when they change. A trace
holds one input shape: each batch shape is traced once, per model, on its first
batch, whose outputs the tracing computes (the trace costs a few milliseconds
more than that batch for `mlp`).

A trace would replay a random op with the seed it drew while tracing, where
Keras draws a new one each call: a model whose forward pass draws random
numbers (a trace holding a nondeterministic op) is left to Keras' `predict`.

Keras' channels-last convolution transposes its kernel to torch's `(out, in,
*spatial)` order and copies it into channels-last memory on every call. The
trace gets each `Conv2D` and `Conv3D` kernel as a view of a copy already in
that layout, made once per change of the weights, which the convolution takes
as it is: `resnet18` at batch 1 ran 58 -> 18 ms a call (torch's own eager
module: 18 ms), at batch 128 6% faster (one thread).
"""

import warnings
import weakref

import keras
import numpy as np
import torch

from training import torch_kernels

# Model -> {(input shape, dtype, variables): traced forward pass}.
_TRACES = weakref.WeakKeyDictionary()
# Model -> {id(kernel variable): _KernelCopy}.
_KERNELS = weakref.WeakKeyDictionary()


def predict(net, x, *, batch_size) -> np.ndarray | None:
    """`net.predict(x, batch_size=batch_size)`'s outputs, or `None` where the
    forward pass cannot be traced faithfully."""
    groups = net.trainable_variables, net.non_trainable_variables
    kernels = _conv_kernels(net)
    trainable, non_trainable = (
        tuple(kernels[id(v)].of(v.value) if id(v) in kernels else v.value for v in group)
        for group in groups
    )
    # Which variables the trace takes, trainable or not: freezing a layer
    # moves its weights from one argument to the other.
    variables = tuple(tuple(map(id, group)) for group in groups)
    traces = _TRACES.setdefault(net, {})
    # Where the weights are: `keras.ops.convert_to_tensor` finds the same
    # device, at 17 us a call against 2 (a tenth of a single-sample `mlp` call).
    device = next((w.device for w in trainable + non_trainable), None)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = torch.as_tensor(x[start : start + batch_size], device=device)
            key = (tuple(batch.shape), batch.dtype, variables)
            if key not in traces:
                traces[key], first = _trace(weakref.ref(net), batch, trainable, non_trainable)
                if traces[key] is not None:
                    outputs.append(first)
                    continue
            if traces[key] is None:
                return None
            outputs.append(traces[key](batch, trainable, non_trainable))
        return keras.ops.convert_to_numpy(outputs[0] if len(outputs) == 1 else torch.cat(outputs))


def _trace(net, batch, trainable, non_trainable):
    """The traced forward pass, or `None`, and the outputs for `batch` that
    tracing computed."""
    outputs = []

    # `net` is a weak reference: the cache must not keep its model alive.
    def forward(x, trainable, non_trainable):
        y, _ = net().stateless_call(list(trainable), list(non_trainable), x, training=False)
        outputs.append(y)
        return y

    with warnings.catch_warnings():
        # The tracer warns wherever Keras reads a shape into Python: a trace
        # per input shape is what is meant.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(forward, (batch, trainable, non_trainable), check_trace=False)
    if any(node.isNondeterministic() for node in traced.graph.nodes()):
        return None, None
    return traced, outputs[0]


def _conv_kernels(net):
    """A `_KernelCopy` per kernel of the model's `Conv2D` and `Conv3D` layers
    (not subclasses, which may convolve otherwise), by the variable's id."""
    if net not in _KERNELS:
        supported = torch_kernels.KERNELS.supported()  # Keras' `conv` as written for
        _KERNELS[net] = {
            id(layer.kernel): _KernelCopy(layer)
            for layer in net._flatten_layers()
            if supported and type(layer) in (keras.layers.Conv2D, keras.layers.Conv3D)
        }
    return _KERNELS[net]


class _KernelCopy:
    """A convolution kernel as a view of a copy in the memory format Keras'
    `conv` copies it to on every call, made again only when the value changes
    (an assignment bumps a tensor's version)."""

    def __init__(self, layer):
        if layer.data_format == "channels_first":
            self.memory_format = torch.contiguous_format
        elif len(layer.kernel.shape) == 4:
            self.memory_format = torch.channels_last
        else:
            self.memory_format = torch.channels_last_3d
        self.source = self.version = self.view = None

    def of(self, value):
        if self.source is not value or self.version != value._version:
            rank = value.ndim
            order = (rank - 1, rank - 2, *range(rank - 2))  # Keras' `_transpose_conv_kernel`
            with torch.no_grad():
                copy = value.permute(order).contiguous(memory_format=self.memory_format)
            self.view = copy.permute(*map(order.index, range(rank)))
            self.source, self.version = value, value._version
        return self.view
