"""Counting a model's FLOPs from its layers and the shapes they are called on.

FLOPs here are twice the multiply-adds of the layers that do nearly all the
arithmetic: convolutions (grouped, depthwise, separable, transposed), dense and
einsum-dense layers, attention (its projections and both matrix products) and
recurrent cells. Normalisation, activations, pooling, additions and softmax
are not counted, as in torchvision's and timm's tables (which list the
multiply-adds themselves: half the FLOPs here) and in `torch.utils.flop_counter`.
"""

import math

import keras
from keras.src.models.functional import Functional  # no public alias in Keras 3

_CONVS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)
_TRANSPOSED_CONVS = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


def count_flops(model) -> int | None:
    """FLOPs of one forward pass of one sample through `model`.

    Args:
        model: a Functional or Sequential model with a fixed input shape.

    Returns:
        The count, or `None` for a subclassed model (its graph is not known
        before it runs) or one whose layers see shapes of unknown size (such
        as sequences of any length).

    Example:

    >>> count_flops(zoo.create_model("resnet50")) / 1e9  # 4.1 G multiply-adds
    8.18...
    """
    if not isinstance(model, (Functional, keras.Sequential)):
        return None
    total = 0
    for layer in model.layers:
        for node in layer._inbound_nodes:
            shapes = [t.shape[1:] for t in (*node.arguments.keras_tensors, *node.outputs)]
            if any(None in shape for shape in shapes):
                return None
            flops = (
                count_flops(layer)
                if isinstance(layer, keras.Model)
                else 2 * _multiply_adds(layer, node)
            )
            if flops is None:
                return None
            total += flops
    return total


def _multiply_adds(layer, node):
    output = node.outputs[0].shape[1:]
    if isinstance(layer, _CONVS):
        # Every output position applies every kernel once.
        channels = output[-1 if layer.data_format == "channels_last" else 0]
        separable = isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D))
        kernels = (layer.depthwise_kernel, layer.pointwise_kernel) if separable else (layer.kernel,)
        return math.prod(output) // channels * sum(_size(k) for k in kernels)
    if isinstance(layer, _TRANSPOSED_CONVS):
        # Every input position scatters the whole kernel.
        inputs = node.arguments.keras_tensors[0].shape[1:]
        channels = inputs[-1 if layer.data_format == "channels_last" else 0]
        return math.prod(inputs) // channels * _size(layer.kernel)
    if isinstance(layer, keras.layers.Dense):
        return math.prod(output[:-1]) * _size(layer.kernel)
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_multiply_adds(layer, output)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return _attention_multiply_adds(layer, node)
    if isinstance(layer, keras.layers.RNN):
        steps = node.arguments.keras_tensors[0].shape[1]
        return steps * sum(_size(w) for w in layer.weights if len(w.shape) == 2)
    return 0


def _einsum_multiply_adds(layer, output):
    """Each output element sums over the kernel axes it does not keep."""
    _, kernel_axes, output_axes = layer.equation.replace("->", ",").split(",")
    contracted = math.prod(
        size
        for axis, size in zip(kernel_axes, layer.kernel.shape, strict=True)
        if axis not in output_axes
    )
    return math.prod(output) * contracted


def _attention_multiply_adds(layer, node):
    """Query, key, value and output projections, plus the two products:
    scores (query · key) and the weighted sum of values."""
    query, value = (t.shape[1:] for t in node.arguments.keras_tensors[:2])
    targets, sources = math.prod(query[:-1]), math.prod(value[:-1])
    heads, key_dim = layer.num_heads, layer.key_dim
    value_dim = layer.value_dim or key_dim
    projections = (
        targets * _size(layer.query_dense.kernel)
        + sources * _size(layer.key_dense.kernel)
        + sources * _size(layer.value_dense.kernel)
        + targets * _size(layer.output_dense.kernel)
    )
    return projections + targets * sources * heads * (key_dim + value_dim)


def _size(weight):
    return math.prod(weight.shape)
