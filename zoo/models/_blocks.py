"""Blocks and constants that several families share, so that no family imports
another: torchvision's BatchNorm settings, its symmetric padding of strided
convolutions, the `pooling` of a headless backbone, and timm's drop path."""

import keras

from zoo import layout

BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default
BN_MOMENTUM = 0.9  # torch's momentum=0.1, as Keras counts it
POOLINGS = (None, "avg", "max")


def batch_norm(name, *, momentum=BN_MOMENTUM):
    """A BatchNormalization over the channel axis with torch's epsilon.

    Args:
        name: the layer's name.
        momentum: of the moving statistics, as Keras counts it. Defaults to
            torch's, `BN_MOMENTUM`.
    """
    return keras.layers.BatchNormalization(
        axis=layout.channel_axis(), epsilon=BN_EPSILON, momentum=momentum, name=name
    )


def apply_padded_conv(x, filters, kernel_size, *, strides, name, depthwise=False):
    """A bias-free convolution padded as torch pads it.

    Keras' `"same"` pads a strided convolution more on one side; torch pads
    `kernel_size // 2` on every side, so a strided convolution gets an
    explicit `ZeroPadding2D`, `{name}_pad`, and `"valid"` padding.

    Args:
        x: the input feature map.
        filters: output channels; ignored when `depthwise`.
        kernel_size: side of the square kernel.
        strides: the convolution's stride.
        name: the convolution's name.
        depthwise: a depthwise convolution (`groups=channels` in torch).
            Defaults to `False`.
    """
    if kernel_size > 1 and strides > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if depthwise:
        conv = keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding=padding, use_bias=False, name=name
        )
    else:
        conv = keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding, use_bias=False, name=name
        )
    return conv(x)


def apply_pooling(x, pooling, *, avg_name, max_name):
    """A headless backbone's `pooling` of its last feature map: `None` keeps
    the map, `"avg"` and `"max"` pool it to one vector per image."""
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=avg_name)(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=max_name)(x)
    return x


def apply_drop_path(x, rate, *, name):
    """timm's `DropPath` (stochastic depth) on a residual branch `x`: in
    training each sample's whole branch is dropped with probability `rate`
    and kept ones are scaled by `1 / (1 - rate)`; at inference it is the
    identity.

    A `Dropout` whose noise is one value per sample does exactly that and has
    no weights, so a model's weights map to torchvision's and timm's with or
    without it. A rate of 0 adds no layer, as timm's `nn.Identity`.

    Args:
        x: the branch's output, batch first.
        rate: the probability of dropping a sample's branch.
        name: the layer's name.
    """
    if not rate:
        return x
    noise_shape = (None,) + (1,) * (len(x.shape) - 1)
    return keras.layers.Dropout(rate, noise_shape=noise_shape, name=name)(x)
