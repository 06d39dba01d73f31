"""MobileNetV2 (Sandler et al., 2018), layer for layer as torchvision builds it.

Layer names follow torchvision's module names with `_` for `.`
(`features.2.conv.1.0`, the depthwise convolution of the second inverted
residual block, is `{name}_features_2_conv_1_0`), so weights map one to one.
Strided convolutions pad symmetrically, as torch does, through an explicit
`ZeroPadding2D`; BatchNorm uses torch's epsilon and momentum. Stochastic depth
is timm's (`drop_path_rate`), a weightless `{block}_drop_path` on each residual
branch.
"""

import keras

from zoo import checks, layout
from zoo.models._blocks import (
    POOLINGS,
    apply_drop_path,
    apply_padded_conv,
    apply_pooling,
    batch_norm,
)
from zoo.registry import register_model

# torchvision's inverted_residual_setting: expansion t, channels c, repeats n, stride s.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# The last `features` block at each output stride, as timm's `features_only`
# picks them (the final 1x1 convolution, `features.18`, is not a feature map).
FEATURE_BLOCKS = {"stride2": 1, "stride4": 3, "stride8": 6, "stride16": 13, "stride32": 17}


def make_divisible(value, divisor=8):
    """torchvision's `_make_divisible`: the nearest multiple of `divisor`, never
    less than `divisor` nor more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def apply_conv_bn_relu6(x, filters, kernel_size, *, strides, name, depthwise=False):
    """torchvision's `Conv2dNormActivation` with ReLU6: `{name}_0` is the
    bias-free convolution, `{name}_1` the BatchNorm, `{name}_2` the ReLU6.

    With `depthwise=True` the convolution is depthwise (`groups=channels` in
    torch) and `filters` is ignored.
    """
    x = apply_padded_conv(
        x, filters, kernel_size, strides=strides, name=f"{name}_0", depthwise=depthwise
    )
    x = batch_norm(f"{name}_1")(x)
    return keras.layers.ReLU(max_value=6.0, name=f"{name}_2")(x)


def apply_inverted_residual(x, filters, *, strides, expand_ratio, name, drop_path_rate=0.0):
    """torchvision's `InvertedResidual`: a 1x1 expansion (unless `expand_ratio`
    is 1), a 3x3 depthwise convolution, a linear 1x1 projection, and a residual
    connection when the shape is unchanged, its branch dropped at
    `drop_path_rate` as in timm."""
    in_channels = x.shape[layout.channel_axis()]
    y = x
    index = 0
    if expand_ratio != 1:
        hidden = int(round(in_channels * expand_ratio))
        y = apply_conv_bn_relu6(y, hidden, 1, strides=1, name=f"{name}_conv_0")
        index = 1
    y = apply_conv_bn_relu6(
        y, None, 3, strides=strides, name=f"{name}_conv_{index}", depthwise=True
    )
    y = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv_{index + 1}")(y)
    y = batch_norm(f"{name}_conv_{index + 2}")(y)
    if strides == 1 and in_channels == filters:
        y = apply_drop_path(y, drop_path_rate, name=f"{name}_drop_path")
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def build_mobilenet_v2(
    *, input_shape, num_classes, include_top, pooling, alpha, dropout, drop_path_rate, name
):
    """Builds a MobileNetV2 as a Functional model.

    Args:
        input_shape: image shape in `keras.config.image_data_format()`.
        num_classes: logits of the classifier head.
        include_top: whether to end with pooling and the classifier.
        pooling: `None`, `"avg"` or `"max"` pooling of the last feature map
            when `include_top=False`.
        alpha: width multiplier (torchvision's `width_mult`); channels are
            rounded to multiples of 8.
        dropout: dropout rate before the classifier's `Linear`.
        drop_path_rate: stochastic depth, rising linearly over the inverted
            residual blocks as timm's builder does: block `i` of `n` drops
            its branch at `drop_path_rate * i / n`.
        name: model name, the prefix of every layer name.
    """
    checks.model_name(name)
    checks.flag(include_top, name="include_top", model=name)
    checks.one_of(pooling, POOLINGS, name="pooling", model=name)
    alpha = checks.positive_number(alpha, name="alpha", model=name)
    input_shape, _ = checks.image_shape(input_shape, model=name)
    checks.positive_int(num_classes, name="num_classes", model=name)
    dropout = checks.fraction(dropout, name="dropout", model=name)
    drop_path_rate = checks.fraction(drop_path_rate, name="drop_path_rate", model=name)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = apply_conv_bn_relu6(
        inputs, make_divisible(32 * alpha), 3, strides=2, name=f"{name}_features_0"
    )
    index = 1
    blocks = sum(repeats for _, _, repeats, _ in INVERTED_RESIDUAL_SETTING)
    for expand_ratio, channels, repeats, stride in INVERTED_RESIDUAL_SETTING:
        for repeat in range(repeats):
            x = apply_inverted_residual(
                x,
                make_divisible(channels * alpha),
                strides=stride if repeat == 0 else 1,
                expand_ratio=expand_ratio,
                name=f"{name}_features_{index}",
                drop_path_rate=drop_path_rate * (index - 1) / blocks,
            )
            index += 1
    last_channels = make_divisible(1280 * max(1.0, alpha))
    x = apply_conv_bn_relu6(x, last_channels, 1, strides=1, name=f"{name}_features_{index}")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
        x = keras.layers.Dropout(dropout, name=f"{name}_classifier_0")(x)
        x = keras.layers.Dense(num_classes, name=f"{name}_classifier_1")(x)
    else:
        x = apply_pooling(x, pooling, avg_name=f"{name}_avgpool", max_name=f"{name}_maxpool")
    return keras.Model(inputs, x, name=name)


def feature_maps(model):
    """The feature maps of a zoo MobileNetV2 at output strides 2 to 32, as one
    Functional model for feature extraction (dense prediction, FPNs).

    The outputs are a dict keyed `"stride2"`, `"stride4"`, `"stride8"`,
    `"stride16"` and `"stride32"`: the outputs of torchvision's `features.1`,
    `features.3`, `features.6`, `features.13` and `features.17`, the same maps
    (16, 24, 32, 96 and 320 channels at `alpha=1`) that timm's
    `features_only=True` returns, in that order.

    Example:

    >>> backbone = zoo.create_model("mobilenet_v2", include_top=False)
    >>> features = feature_maps(backbone)(images)  # features["stride8"]: (b, 28, 28, 32)
    """
    outputs = {}
    for key, block in FEATURE_BLOCKS.items():
        prefix = f"{model.name}_features_{block}_"
        outputs[key] = [layer for layer in model.layers if layer.name.startswith(prefix)][-1].output
    return keras.Model(model.inputs, outputs, name=f"{model.name}_features")


_PAPER = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018"
_SOURCE = "https://github.com/pytorch/vision/blob/main/torchvision/models/mobilenetv2.py"


@register_model(task="classification", source=_SOURCE, paper=_PAPER)
def mobilenet_v2(
    *,
    input_shape=(224, 224, 3),
    num_classes=1000,
    include_top=True,
    pooling=None,
    alpha=1.0,
    dropout=0.2,
    drop_path_rate=0.0,
    name="mobilenet_v2",
):
    """MobileNetV2: inverted residual blocks with linear bottlenecks.

    Args:
        input_shape: image shape in `keras.config.image_data_format()`.
            Defaults to `(224, 224, 3)`.
        num_classes: classifier logits. Defaults to `1000`.
        include_top: end with pooling, dropout and the classifier. Defaults to `True`.
        pooling: without the top, `None`, `"avg"` or `"max"`. Defaults to `None`.
        alpha: width multiplier (torchvision's `width_mult`), channels rounded
            to multiples of 8. Defaults to `1.0`.
        dropout: dropout rate before the classifier. Defaults to `0.2`.
        drop_path_rate: stochastic depth, rising linearly over the blocks to
            this rate as in timm. Defaults to `0.0`.
        name: model name, the prefix of every layer name. Defaults to `"mobilenet_v2"`.

    Example:

    >>> model = zoo.create_model("mobilenet_v2", input_shape=(96, 96, 3), alpha=0.5)
    """
    return build_mobilenet_v2(
        input_shape=input_shape,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        alpha=alpha,
        dropout=dropout,
        drop_path_rate=drop_path_rate,
        name=name,
    )
